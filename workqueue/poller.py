"""The work poller of the seed: poll → ack → hand the item out → stop it when the consumer is done.

`WorkPoller` is an async iterator of `ClaimedWork`, on top of `workqueue.client.WorkAPIClient`. It follows the
official SDK's poller helper (work-api.md §2.5):

- each poll carries the worker id (`Anthropic-Worker-ID`), authenticated with the environment key;
- a delivered item is acked with its own sessions token (from the decoded `secret`), else the environment key;
- transient failures (408/409/429, 5xx, connection, timeout) back off `min(cap, scale·2^attempt) + U(0, jitter)`
  seconds and try again; poll and ack keep separate attempt counters, each reset by its own success;
- a fatal 4xx on poll raises out of the loop; a fatal 4xx on ack force-stops the item quietly and polls again;
- an empty poll sleeps `U(1, 3)` seconds, or ends the iteration when `drain=True`;
- after the consumer is done with an item it is stopped gracefully; a 409 ("already stopped") is ignored and any
  other failure is logged, never raised.

Usage::

    async with WorkPoller(client, environment_id, environment_key) as poller:
        async for claim in poller:
            await serve(claim.item, claim.secret)

The item is stopped when the loop body is done: when the loop asks for the next item, or — on `break`, an
exception or cancellation — when `async with` closes the poller. A consumer that wants the stop at a precise point
can use `async with claim:` inside the loop, or call `await claim.stop(force=...)` itself; a consumer that hands the
item to someone else calls `claim.release()` and the poller leaves it alone. Each item is stopped automatically at
most once.

Nothing here logs a credential or the `secret`: log lines carry ids, error kinds, statuses and request ids.
Heartbeating is the consumer's business (see `workqueue.fleet`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

from workqueue.client import WorkAPIClient
from workqueue.errors import (
    AuthenticationFailed,
    BadRequest,
    InvalidID,
    NotFound,
    PermissionDenied,
    WorkAPIError,
)
from workqueue.records import WorkItem, WorkSecret, decode_secret

__all__ = [
    "Backoff",
    "ClaimedWork",
    "PollerCounters",
    "WorkPoller",
    "default_worker_id",
    "is_fatal",
]

log = logging.getLogger(__name__)

# 4xx answers that retrying can fix: the core client's retry policy and the SDK helpers agree on these three.
_RETRYABLE_4XX = frozenset({408, 409, 429})
_REFUSED_BEFORE_SENDING = (InvalidID, AuthenticationFailed, PermissionDenied, BadRequest, NotFound)


def default_worker_id() -> str:
    """`<hostname>-<12 hex>`: readable, and distinct for several workers on one host (as the SDK does)."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"


def is_fatal(exc: WorkAPIError) -> bool:
    """True for a failure that trying again will not fix: a 4xx other than 408/409/429.

    Without a status the call was refused before it was sent (an invalid id, an unusable credential) — fatal — or
    never got an answer it could use (connection, timeout, malformed response) — transient.
    """
    if exc.status is not None:
        return 400 <= exc.status < 500 and exc.status not in _RETRYABLE_4XX
    return isinstance(exc, _REFUSED_BEFORE_SENDING)


@dataclass(frozen=True)
class Backoff:
    """Delay before retry `attempt` (1-based): `min(cap, scale * 2**attempt) + U(0, jitter)` seconds.

    The defaults are the SDK helper's (`min(60, 2^attempt) + U(0, 1)`); tests shrink `scale`, `cap` and `jitter`.
    """

    scale: float = 1.0
    cap: float = 60.0
    jitter: float = 1.0

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.scale * 2.0**attempt) + random.uniform(0.0, self.jitter)


@dataclass
class PollerCounters:
    """What a poller has done, for benchmarks and summaries. Several pollers may share one instance."""

    polls: int = 0  # poll requests answered (with an item or empty)
    empty_polls: int = 0
    deliveries: int = 0  # polls that returned an item
    acks: int = 0
    stops: int = 0  # stop requests the upstream accepted
    errors: int = 0  # failed requests of any kind (poll, ack, stop, ...)
    backoffs: int = 0  # times a transient failure made the poller wait and retry

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _decode_secret(item: WorkItem) -> WorkSecret | None:
    if not item.secret:
        return None
    try:
        return decode_secret(item.secret)
    except ValueError:
        # The SDK falls back to the environment key in this case; the payload itself must never reach a log line.
        log.warning(
            "work item carried a secret that does not decode; using the environment key work_id=%s", item.id
        )
        return None


def _describe(exc: WorkAPIError) -> str:
    """A log-safe summary of a failure: the client's messages never carry a credential."""
    return f"kind={exc.kind} status={exc.status} request_id={exc.request_id} error={exc.message}"


class ClaimedWork:
    """One work item this worker has polled and acked, until it is stopped or released.

    `item` is the poll response (state `queued`, `secret` set); `secret` is its decoded payload or None.
    `credential` is the bearer for this item's heartbeat and stop calls: its sessions token, else the environment
    key. Never log it.
    """

    def __init__(
        self, poller: WorkPoller, item: WorkItem, secret: WorkSecret | None, credential: str
    ) -> None:
        self.item = item
        self.secret = secret
        self._poller = poller
        self._credential = credential
        self._done = False

    @property
    def id(self) -> str:
        return self.item.id

    @property
    def environment_id(self) -> str:
        return self.item.environment_id

    @property
    def credential(self) -> str:
        return self._credential

    @property
    def done(self) -> bool:
        """True once the item was stopped (or a stop was attempted) or released: the poller will not stop it."""
        return self._done

    def release(self) -> None:
        """Leave the item alone: someone else owns its stop (or it was abandoned on purpose)."""
        self._done = True

    async def stop(self, *, force: bool = False) -> bool:
        """Ask the upstream to stop the item; True if it accepted.

        A 409 means it had already stopped and is ignored; any other failure is logged and counted, not raised.
        """
        self._done = True
        return await self._poller._stop_quietly(self.item.id, force=force, credential=self._credential)

    async def __aenter__(self) -> ClaimedWork:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._done:
            await self.stop()

    def __repr__(self) -> str:
        return f"<ClaimedWork {self.item.id} of {self.item.environment_id}{' done' if self._done else ''}>"


class WorkPoller:
    """Claims work items from one environment: `async for claim in poller` (see the module docstring).

    `before_ack`, when given, is awaited with each delivered item before it is acked (the simulated fleet uses it
    to play a worker that is slow to ack). `counters` may be shared between pollers.
    """

    def __init__(
        self,
        client: WorkAPIClient,
        environment_id: str,
        environment_key: str,
        *,
        worker_id: str | None = None,
        block_ms: int | None = 900,
        reclaim_older_than_ms: int | None = None,
        drain: bool = False,
        backoff: Backoff | None = None,
        idle_sleep: tuple[float, float] = (1.0, 3.0),
        before_ack: Callable[[WorkItem], Awaitable[None]] | None = None,
        counters: PollerCounters | None = None,
    ) -> None:
        self.client = client
        self.environment_id = environment_id
        self._environment_key = environment_key
        self.worker_id = worker_id or default_worker_id()
        self.block_ms = block_ms
        self.reclaim_older_than_ms = reclaim_older_than_ms
        self.drain = drain
        self.backoff = backoff or Backoff()
        self.idle_sleep = idle_sleep
        self.before_ack = before_ack
        self.counters = counters if counters is not None else PollerCounters()
        self._poll_attempt = 0
        self._ack_attempt = 0
        self._current: ClaimedWork | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<WorkPoller {self.environment_id} worker={self.worker_id}>"

    # --- iteration ---------------------------------------------------------------------------------------------

    def __aiter__(self) -> WorkPoller:
        return self

    async def __anext__(self) -> ClaimedWork:
        await self._finish_current()
        if self._closed:
            raise StopAsyncIteration
        claim = await self._claim_next()
        if claim is None:
            self._closed = True
            raise StopAsyncIteration
        self._current = claim
        return claim

    async def aclose(self) -> None:
        """Stop the item still out (unless the consumer stopped or released it) and end the iteration."""
        self._closed = True
        await self._finish_current()

    async def __aenter__(self) -> WorkPoller:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _finish_current(self) -> None:
        claim, self._current = self._current, None
        if claim is not None and not claim.done:
            await claim.stop()

    # --- one claim ---------------------------------------------------------------------------------------------

    async def _claim_next(self) -> ClaimedWork | None:
        """Poll until an item is delivered and acked; None when draining and the queue is empty."""
        while True:
            try:
                item = await self.client.poll_work(
                    self.environment_id,
                    environment_key=self._environment_key,
                    block_ms=self.block_ms,
                    reclaim_older_than_ms=self.reclaim_older_than_ms,
                    worker_id=self.worker_id,
                )
            except WorkAPIError as exc:
                self.counters.errors += 1
                if is_fatal(exc):
                    log.error(
                        "poll failed permanently environment_id=%s %s", self.environment_id, _describe(exc)
                    )
                    raise
                self._poll_attempt += 1
                await self._back_off("poll", self._poll_attempt, exc)
                continue
            self.counters.polls += 1
            self._poll_attempt = 0
            if item is None:
                self.counters.empty_polls += 1
                if self.drain:
                    log.info("queue drained environment_id=%s", self.environment_id)
                    return None
                log.debug("poll returned no work environment_id=%s", self.environment_id)
                await asyncio.sleep(random.uniform(*self.idle_sleep))
                continue
            self.counters.deliveries += 1
            log.debug("claimed work work_id=%s work_type=%s", item.id, item.data.type)
            claim = await self._ack(item)
            if claim is not None:
                return claim

    async def _ack(self, item: WorkItem) -> ClaimedWork | None:
        secret = _decode_secret(item)
        credential = (
            secret.sessions_token if secret is not None and secret.sessions_token else self._environment_key
        )
        if self.before_ack is not None:
            await self.before_ack(item)
        try:
            await self.client.ack_work(self.environment_id, item.id, credential=credential)
        except WorkAPIError as exc:
            self.counters.errors += 1
            if is_fatal(exc):
                log.error("ack failed permanently; force-stopping work_id=%s %s", item.id, _describe(exc))
                # The ack's credential was just refused: the environment key is the poller's own standing.
                await self._stop_quietly(item.id, force=True, credential=self._environment_key)
                return None
            # A transiently failed ack drops the item here; the upstream redelivers it once the reclaim window
            # has passed.
            self._ack_attempt += 1
            await self._back_off("ack", self._ack_attempt, exc, work_id=item.id)
            return None
        self.counters.acks += 1
        self._ack_attempt = 0
        return ClaimedWork(self, item, secret, credential)

    async def _back_off(self, what: str, attempt: int, exc: WorkAPIError, work_id: str = "") -> None:
        wait = self.backoff.delay(attempt)
        self.counters.backoffs += 1
        log.warning(
            "%s failed, backing off environment_id=%s work_id=%s attempt=%d backoff=%.2fs %s",
            what,
            self.environment_id,
            work_id,
            attempt,
            wait,
            _describe(exc),
        )
        await asyncio.sleep(wait)

    async def _stop_quietly(self, work_id: str, *, force: bool, credential: str) -> bool:
        try:
            await self.client.stop_work(
                self.environment_id, work_id, force=True if force else None, credential=credential
            )
        except WorkAPIError as exc:
            if exc.status == 409:
                log.debug("work already stopped work_id=%s", work_id)
                return False
            self.counters.errors += 1
            log.warning("stop failed work_id=%s force=%s %s", work_id, force, _describe(exc))
            return False
        self.counters.stops += 1
        return True
