"""The dashboard's total budget of upstream requests: ``UPSTREAM_REQUESTS_PER_MINUTE`` across every environment and
every instance (counted in Redis when ``REDIS_URL`` is set, else in this process).

The organization's API key is shared with everything else the organization runs, so the dashboard as a whole asks
for at most so many requests a minute, whatever its number of environments, viewers and instances. Every request
to the Work API passes ``BudgetedTransport``, which takes one request from the current minute's budget or answers
at once, without sending anything, with ``BudgetExhausted`` (a ``WorkAPIError``, so every page shows it as it shows
an upstream failure; its message says that the dashboard's own budget is spent and when the next minute starts).

Who goes first when the budget runs low (``priority()``): people (pages, actions, the gateway) may use all of it;
feeds of environments someone watches up to 90 %; background work (the index of environments nobody watches) up to
70 %, and no single environment's background work more than its fair share of that (the 70 % divided by the
environments that asked for background requests this minute). So a large fill walk can never crowd out a viewer,
and a viewer's click is never refused while feeds are what spends the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx
from prometheus_client import Counter, Gauge

from workqueue.errors import RateLimited

logger = logging.getLogger(__name__)

Priority = Literal["interactive", "watched", "background"]
PRIORITIES: Final[tuple[Priority, ...]] = ("interactive", "watched", "background")
# The share of the minute's budget each kind of caller may bring the total to.
SHARE: Final[dict[Priority, float]] = {"interactive": 1.0, "watched": 0.9, "background": 0.7}

BUDGET_LIMIT = Gauge(
    "dashboard_upstream_budget_per_minute", "The dashboard's budget of Work API requests a minute (0: none)."
)
BUDGET_USED = Gauge(
    "dashboard_upstream_budget_used",
    "Work API requests taken from the current minute's budget (every instance, when Redis is shared).",
)
BUDGET_REFUSED = Counter(
    "dashboard_upstream_budget_refused_total",
    "Requests not sent because the dashboard's upstream budget was spent, by priority.",
    ["priority"],
)

_priority: ContextVar[Priority] = ContextVar("upstream_priority", default="interactive")
_ENVIRONMENT_IN_PATH = re.compile(r"/v1/environments/([^/]+)")


@contextlib.contextmanager
def priority(kind: Priority) -> Iterator[None]:
    """``with budget.priority("background"): ...``: the upstream calls made inside count as ``kind``."""
    token = _priority.set(kind)
    try:
        yield
    finally:
        _priority.reset(token)


def current_priority() -> Priority:
    return _priority.get()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    used: int
    retry_after: float  # seconds until the next minute starts (when refused)


def _minute(now: float) -> int:
    return int(now // 60)


class LocalCounts:
    """This process's counts, for a single instance (no Redis)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minute = -1
        self._total = 0
        self._background: dict[str, int] = {}

    async def take(self, limit: int, kind: Priority, environment: str | None, now: float) -> tuple[bool, int]:
        with self._lock:
            minute = _minute(now)
            if minute != self._minute:
                self._minute, self._total, self._background = minute, 0, {}
            if not _admits(limit, kind, environment, self._total, self._background):
                return False, self._total
            self._total += 1
            if kind == "background" and environment:
                self._background[environment] = self._background.get(environment, 0) + 1
            return True, self._total

    async def used(self, now: float) -> int:
        with self._lock:
            return self._total if _minute(now) == self._minute else 0


# Take one request atomically in Redis: the same rule as ``_admits``, on the minute's shared counts.
_TAKE_SCRIPT: Final = """
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
local share = tonumber(ARGV[2])
local env = ARGV[3]
if total + 1 > math.floor(limit * share) then return {0, total} end
if env ~= '' then
  redis.call('HSETNX', KEYS[2], env, 0)
  local envs = redis.call('HLEN', KEYS[2])
  local mine = tonumber(redis.call('HGET', KEYS[2], env))
  if mine + 1 > math.max(1, math.floor(limit * share / envs)) then return {0, total} end
  redis.call('HINCRBY', KEYS[2], env, 1)
  redis.call('EXPIRE', KEYS[2], 120)
end
total = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 120)
return {1, total}
"""


class RedisCounts:
    """Counts shared by every instance on one Redis (keys expire two minutes after their minute)."""

    def __init__(self, url: str, prefix: str) -> None:
        self._url = url
        self._prefix = prefix
        # One connection pool per event loop: pages, the feed and the bulk runner may run on different loops.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def _client(self) -> tuple[Any, Any]:
        """This loop's Redis client and its registered take script."""
        import redis.asyncio as redis

        loop = asyncio.get_running_loop()
        pair = self._clients.get(loop)
        if pair is None:
            client = redis.Redis.from_url(self._url, socket_timeout=2, socket_connect_timeout=2)
            pair = (client, client.register_script(_TAKE_SCRIPT))
            self._clients[loop] = pair
        return pair

    def _keys(self, now: float) -> list[str]:
        minute = _minute(now)
        return [f"{self._prefix}:budget:{minute}", f"{self._prefix}:budget:{minute}:background"]

    async def take(self, limit: int, kind: Priority, environment: str | None, now: float) -> tuple[bool, int]:
        env = environment if kind == "background" and environment else ""
        allowed, total = await self._client()[1](keys=self._keys(now), args=[limit, SHARE[kind], env])
        return bool(allowed), int(total)

    async def used(self, now: float) -> int:
        raw = await self._client()[0].get(self._keys(now)[0])
        return int(raw or 0)


def _admits(
    limit: int, kind: Priority, environment: str | None, total: int, background: dict[str, int]
) -> bool:
    ceiling = int(limit * SHARE[kind])
    if total + 1 > ceiling:
        return False
    if kind == "background" and environment:
        envs = len(background) + (0 if environment in background else 1)
        return background.get(environment, 0) + 1 <= max(1, ceiling // envs)
    return True


class UpstreamBudget:
    """``limit`` requests a minute (0: no budget), counted in ``counts``."""

    def __init__(
        self,
        limit: int | Callable[[], int],
        counts: LocalCounts | RedisCounts,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # A number, or a function read on every request (the settings' value, so a change takes effect at once).
        self._limit = limit
        self.counts = counts
        self.clock = clock
        BUDGET_LIMIT.set(self.limit)

    @property
    def limit(self) -> int:
        return int(self._limit() if callable(self._limit) else self._limit)

    async def take(self, environment: str | None = None, *, kind: Priority | None = None) -> Decision:
        kind = kind or current_priority()
        now = self.clock()
        retry_after = 60 - (now % 60)
        limit = self.limit
        BUDGET_LIMIT.set(limit)
        if limit <= 0:
            return Decision(True, 0, 0.0)
        try:
            allowed, used = await self.counts.take(limit, kind, environment, now)
        except Exception as exc:  # Redis unreachable: count locally rather than stop talking to the Work API
            logger.warning(
                "Upstream budget: shared counts unavailable (%s); counting in this process",
                type(exc).__name__,
            )
            self.counts = LocalCounts()
            allowed, used = await self.counts.take(limit, kind, environment, now)
        BUDGET_USED.set(used)
        if not allowed:
            BUDGET_REFUSED.labels(kind).inc()
        return Decision(allowed, used, retry_after)

    async def used(self) -> int:
        if self.limit <= 0:
            return 0
        try:
            return await self.counts.used(self.clock())
        except Exception:
            return 0


def environment_of(path: str) -> str | None:
    match = _ENVIRONMENT_IN_PATH.match(path)
    return match.group(1) if match else None


class BudgetExhausted(RateLimited):
    """A request not sent: the dashboard's own budget for this minute is spent. Not retried; says when it refills."""

    default_kind = "budget_exhausted"
    default_retryable = False


def refusal(decision: Decision, limit: int, kind: Priority) -> BudgetExhausted:
    wait = max(1, round(decision.retry_after))
    share = "" if kind == "interactive" else f" for {kind} work ({round(SHARE[kind] * 100)} % of it)"
    return BudgetExhausted(
        f"Not sent: the dashboard's budget of {limit} Work API requests a minute{share} is spent. "
        f"Try again in {wait} s.",
        status=None,
        retry_after=float(wait),
    )


class BudgetedTransport(httpx.AsyncBaseTransport):
    """Wraps the transport of every Work API client: a request the budget does not cover is not sent."""

    def __init__(self, inner: httpx.AsyncBaseTransport, budget: UpstreamBudget) -> None:
        self._inner = inner
        self.budget = budget

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        kind = current_priority()
        decision = await self.budget.take(environment_of(request.url.path), kind=kind)
        if not decision.allowed:
            raise refusal(decision, self.budget.limit, kind)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


_shared: UpstreamBudget | None = None
_shared_lock = threading.Lock()


def shared_budget() -> UpstreamBudget:
    """This process's budget, built from settings once."""
    global _shared
    with _shared_lock:
        if _shared is None:
            from django.conf import settings

            counts: LocalCounts | RedisCounts = (
                RedisCounts(settings.REDIS_URL, settings.LIVE_REDIS_PREFIX)
                if settings.REDIS_URL
                else LocalCounts()
            )
            _shared = UpstreamBudget(lambda: int(settings.UPSTREAM_REQUESTS_PER_MINUTE), counts)
        return _shared
