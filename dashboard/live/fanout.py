"""Delivery of the feed's messages to this process's sockets: one channel-layer subscription per process, fanned
out to the local sockets in the process.

Why. The feed renders a snapshot once, and the same text goes to every socket allowed to see it; delivery should
cost a socket write per viewer and nothing more. Giving each socket a channel of its own and letting the channel
layer do the fan-out costs far more: Channels' ``InMemoryChannelLayer`` scans every channel and group on each
receive, so one ``group_send`` to N sockets costs about N² work, and channels-redis stores, pops and decodes one
Redis message per socket (each socket also blocking in a Redis read of its own). So the layer only carries
messages between processes:

- each process has one ``Relay``: one channel on the layer, a member of every group a local socket needs (added
  when the first local socket needs the group, discarded when the last one leaves), and one task that receives each
  message once and hands the same message (the same text) to every local socket registered under its group;
- with several instances on Redis every instance's relay is in the group, so a snapshot costs one Redis message
  per instance, not per socket;
- messages say which group they were sent to (``group_send`` here adds it), which is how the relay finds the
  sockets; what a socket may see is still decided by the socket (``consumers``), as before;
- a socket gets messages through an in-process queue, read by its own consumer loop, so one slow client does not
  hold up the others; a socket that stops reading (its queue reaches ``INBOX_LIMIT``) is closed with 1013, so the
  browser reconnects and gets the latest snapshot at once, rather than memory growing.

Group membership expires on both layers (``group_expiry``, a day by default); the runtime's supervisor calls
``maintain``, which adds the relay to its groups again every ``GROUP_REFRESH_SECONDS`` and after a failed receive
(a Redis that restarted has forgotten them).

What does not live here: what is sent (``feed``), who may see it (``consumers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable
from typing import Any, Protocol

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

GROUP_REFRESH_SECONDS = 600.0
RETRY_SECONDS = 1.0
# Messages waiting for one socket: a snapshot is a few of them, so this is many intervals behind.
INBOX_LIMIT = 200


class Subscriber(Protocol):
    def deliver(self, message: dict[str, Any]) -> None:
        """Take ``message`` for the socket without waiting (the relay serves every socket from one task)."""


async def group_send(group: str, message: dict[str, Any]) -> None:
    """Send ``message`` to the sockets of every process subscribed to ``group`` (nothing without a layer)."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group, {**message, "group": group})


class Relay:
    """This process's one subscription to the channel layer, and the local sockets behind each group."""

    def __init__(self) -> None:
        self.layer: Any = get_channel_layer()
        self.channel: str | None = None
        self.members: dict[str, set[Subscriber]] = {}
        self._joined: set[str] = set()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._refreshed_at = time.monotonic()
        self.stopped = False

    async def join(self, subscriber: Subscriber, groups: Iterable[str]) -> None:
        """Deliver to ``subscriber`` what is sent to ``groups`` from now on (once this returns)."""
        groups = list(groups)
        for group in groups:
            self.members.setdefault(group, set()).add(subscriber)
        await self._sync(groups)

    async def leave(self, subscriber: Subscriber, groups: Iterable[str]) -> None:
        groups = list(groups)
        for group in groups:
            members = self.members.get(group)
            if members is not None:
                members.discard(subscriber)
                if not members:
                    del self.members[group]
        try:
            await self._sync(groups)
        except Exception:
            # Staying in a group only costs messages nobody here reads; the next join or refresh retries.
            logger.warning("Could not leave live groups on the channel layer", exc_info=True)

    async def _sync(self, groups: list[str]) -> None:
        """Make the relay's membership of ``groups`` match the local sockets (serialised, so that an add and a
        discard of one group cannot overtake each other)."""
        if self.layer is None or self.stopped:
            return
        async with self._lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel("live.relay")
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._receive(self.channel), name="live-relay")
            for group in groups:
                wanted, joined = group in self.members, group in self._joined
                if wanted and not joined:
                    await self.layer.group_add(group, self.channel)
                    self._joined.add(group)
                elif joined and not wanted:
                    self._joined.discard(group)
                    await self.layer.group_discard(group, self.channel)

    async def _receive(self, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("The live relay could not receive; trying again", exc_info=True)
                self._refreshed_at = -math.inf
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self.dispatch(message)

    def dispatch(self, message: dict[str, Any]) -> None:
        for subscriber in tuple(self.members.get(message.get("group", ""), ())):
            try:
                subscriber.deliver(message)
            except Exception:
                logger.exception("Could not hand a live message to a socket")

    async def maintain(self) -> None:
        """Add the relay to its groups again when due (membership expires; a restarted Redis forgot it)."""
        if (
            self.channel is None
            or self.stopped
            or time.monotonic() - self._refreshed_at < GROUP_REFRESH_SECONDS
        ):
            return
        self._refreshed_at = time.monotonic()
        async with self._lock:
            for group in sorted(self._joined):
                await self.layer.group_add(group, self.channel)

    async def stop(self) -> None:
        self.stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except Exception:
                logger.exception("The live relay failed while stopping")
        if self.channel is not None:
            for group in sorted(self._joined):
                with contextlib.suppress(Exception):
                    await self.layer.group_discard(group, self.channel)
        self._joined.clear()
