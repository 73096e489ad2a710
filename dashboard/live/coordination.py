"""What the instances of the dashboard share about the live feed: who holds which feed, who watches what, and
the latest snapshot of each environment.

Two implementations of one small interface:

- ``LocalCoordinator`` (no ``REDIS_URL``): process-local dictionaries. One process serves everything, so a lock
  is a dictionary entry with an expiry and the snapshot cache is a dictionary.
- ``RedisCoordinator`` (``REDIS_URL`` set): a lease per feed (``SET NX PX`` taken and renewed atomically by a
  small Lua script, released only by its holder), each instance's watched keys under a key that expires unless
  renewed, and the latest snapshots as plain keys. Redis expiry does the timing, so clocks need not agree.

What does not live here: deciding what to hold and when (``feed``), the channel layer (Channels does that).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from dashboard.live import conf


def new_instance_id() -> str:
    """Names this process in locks and presence; the pid lets an operator find the process holding a feed."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Coordinator(ABC):
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id

    @abstractmethod
    async def hold(self, name: str, ttl: float) -> bool:
        """Take the lease ``name`` for ``ttl`` seconds, or renew it if this instance holds it; False if another does."""

    @abstractmethod
    async def release(self, name: str) -> None:
        """Give the lease up now (only if this instance holds it), so another instance can take it at once."""

    @abstractmethod
    async def announce(self, keys: Iterable[str], ttl: float) -> None:
        """This instance's viewers watch ``keys``; forgotten after ``ttl`` seconds unless announced again."""

    @abstractmethod
    async def watched(self) -> set[str]:
        """Every key some live instance's viewers watch."""

    @abstractmethod
    async def put(self, key: str, value: str, ttl: float) -> None:
        """Cache ``value`` (a snapshot, the environments list) under ``key`` for ``ttl`` seconds."""

    @abstractmethod
    async def get_many(self, keys: list[str]) -> list[str | None]:
        """The cached values of ``keys`` (None where missing), in order."""

    async def get(self, key: str) -> str | None:
        return (await self.get_many([key]))[0]

    async def close(self) -> None:
        return None


# --- One process -------------------------------------------------------------------------------------------------
# Module-level on purpose: "process-local" means every runtime in this process (one per event loop, which in
# practice is one) shares the same locks and cache.
_local_locks: dict[str, tuple[str, float]] = {}
_local_presence: dict[str, tuple[frozenset[str], float]] = {}
_local_cache: dict[str, tuple[str, float]] = {}


class LocalCoordinator(Coordinator):
    async def hold(self, name: str, ttl: float) -> bool:
        now = time.monotonic()
        current = _local_locks.get(name)
        if current is not None and current[0] != self.instance_id and current[1] > now:
            return False
        _local_locks[name] = (self.instance_id, now + ttl)
        return True

    async def release(self, name: str) -> None:
        current = _local_locks.get(name)
        if current is not None and current[0] == self.instance_id:
            del _local_locks[name]

    async def announce(self, keys: Iterable[str], ttl: float) -> None:
        keys = frozenset(keys)
        if keys:
            _local_presence[self.instance_id] = (keys, time.monotonic() + ttl)
        else:
            _local_presence.pop(self.instance_id, None)

    async def watched(self) -> set[str]:
        now = time.monotonic()
        watched: set[str] = set()
        for instance, (keys, expires) in list(_local_presence.items()):
            if expires <= now:
                _local_presence.pop(instance, None)
            else:
                watched |= keys
        return watched

    async def put(self, key: str, value: str, ttl: float) -> None:
        _local_cache[key] = (value, time.monotonic() + ttl)

    async def get_many(self, keys: list[str]) -> list[str | None]:
        now = time.monotonic()
        values: list[str | None] = []
        for key in keys:
            entry = _local_cache.get(key)
            values.append(entry[0] if entry is not None and entry[1] > now else None)
        return values

    async def close(self) -> None:
        await self.announce((), 0)
        for name, (owner, _expires) in list(_local_locks.items()):
            if owner == self.instance_id:
                del _local_locks[name]


# --- Several instances -------------------------------------------------------------------------------------------
_HOLD = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisCoordinator(Coordinator):
    def __init__(self, instance_id: str, url: str, prefix: str) -> None:
        super().__init__(instance_id)
        import redis.asyncio as redis

        # Short timeouts: a Redis that hangs must not hang the supervisor; it retries on the next tick.
        self._redis: Any = redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._prefix = prefix
        self._hold = self._redis.register_script(_HOLD)
        self._release = self._redis.register_script(_RELEASE)
        self._held: set[str] = set()

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    async def hold(self, name: str, ttl: float) -> bool:
        held = bool(
            await self._hold(keys=[self._key("lock", name)], args=[self.instance_id, max(1, int(ttl * 1000))])
        )
        if held:
            self._held.add(name)
        else:
            self._held.discard(name)
        return held

    async def release(self, name: str) -> None:
        self._held.discard(name)
        await self._release(keys=[self._key("lock", name)], args=[self.instance_id])

    async def announce(self, keys: Iterable[str], ttl: float) -> None:
        keys = sorted(set(keys))
        presence = self._key("presence", self.instance_id)
        if keys:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(presence, json.dumps(keys), px=max(1, int(ttl * 1000)))
                pipe.sadd(self._key("instances"), self.instance_id)
                await pipe.execute()
        else:
            await self._redis.delete(presence)

    async def watched(self) -> set[str]:
        instances = sorted(member.decode() for member in await self._redis.smembers(self._key("instances")))
        if not instances:
            return set()
        values = await self._redis.mget([self._key("presence", instance) for instance in instances])
        watched: set[str] = set()
        gone = []
        for instance, value in zip(instances, values, strict=True):
            if value is None:
                gone.append(instance)
                continue
            try:
                watched.update(str(key) for key in json.loads(value))
            except ValueError:
                gone.append(instance)
        if gone:
            # An instance that stopped announcing (it died, or lost every viewer) leaves the roster.
            await self._redis.srem(self._key("instances"), *gone)
        return watched

    async def put(self, key: str, value: str, ttl: float) -> None:
        await self._redis.set(self._key("cache", key), value, px=max(1, int(ttl * 1000)))

    async def get_many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        values = await self._redis.mget([self._key("cache", key) for key in keys])
        return [value.decode() if value is not None else None for value in values]

    async def close(self) -> None:
        try:
            await self.announce((), 0)
            for name in list(self._held):
                await self.release(name)
        finally:
            await self._redis.aclose()


def coordinator_from_settings(instance_id: str) -> Coordinator:
    url = conf.redis_url()
    if url:
        return RedisCoordinator(instance_id, url, conf.redis_prefix())
    return LocalCoordinator(instance_id)
