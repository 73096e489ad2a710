"""A simulated fleet of self-hosted workers, for the demo and the benchmarks.

`Fleet` runs, in one asyncio loop, any number of workers per environment against any Work API base URL (the local
emulator or anything that speaks the same API). Each worker has its own worker id and claims work through
`workqueue.poller.WorkPoller`; while it holds an item it heartbeats at half the lease TTL (the first heartbeat says
`NO_HEARTBEAT`, later ones echo the last `last_heartbeat` byte for byte), and after a random time it finishes and
force-stops the item, as the SDK's worker does when its session ends. When a heartbeat reports `stopping` or
`stopped`, or that the lease was not extended, a well-behaved worker stops the item at once; a 412 means the lease
belongs to someone else now, and the worker lets the item go without stopping it.

Some workers misbehave, chosen by fraction of the whole fleet (at least one worker when a fraction is above zero,
spread across the environments):

- ``crash``: stops heartbeating part-way through each item and abandons it, then comes back and polls again. The
  item stays `active` with an ever older heartbeat (stuck) until the upstream's lease expiry deals with it.
- ``ignore_stop``: when its work is done it asks for a graceful stop but never confirms it, and it ignores every stop
  it is told about: it keeps heartbeating, so the item stays in `stopping`. The worker is hung from then on, until
  the item is force-stopped.
- ``slow_ack``: waits before acking each delivery, so the item shows as `pending` in the stats and, past the
  reclaim window, may be redelivered to another worker.

An optional producer enqueues new work at a steady average rate per environment through a callable (the demo passes
the emulator's admin `EmulatorControl.enqueue`), so the queues keep moving.

Workers share HTTP clients in groups of `FleetConfig.workers_per_client` (8), each group with a connection pool of
its own: httpx scans a pool's every connection each time it hands one out, so a single pool for a few hundred
workers costs more CPU than all the rest of the fleet's work (at 200 workers it kept one core busy and requests
timed out). A client passed in is shared by every worker.

`FleetCounters` (polls, acks, heartbeats, stops, errors, …) are shared by every worker and readable at any time.
Cancelling `Fleet.run` (or leaving `async with fleet`) shuts down gracefully: well-behaved workers stop the item they
hold; crashed and hung workers leave theirs as they are, which is the point of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import httpx

from workqueue.client import WorkAPIClient
from workqueue.errors import WorkAPIError
from workqueue.poller import Backoff, ClaimedWork, PollerCounters, WorkPoller, default_worker_id, is_fatal
from workqueue.records import NO_HEARTBEAT, WorkItem

__all__ = [
    "BEHAVIOURS",
    "NO_HEARTBEAT",
    "Fleet",
    "FleetConfig",
    "FleetCounters",
    "FleetEnvironment",
    "FleetWorker",
    "assign_behaviours",
]

log = logging.getLogger(__name__)

BEHAVIOURS = ("normal", "crash", "ignore_stop", "slow_ack")
# The SDK's worker assumes a 90 s lease until the first heartbeat answer says otherwise.
_ASSUMED_TTL_SECONDS = 90.0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class FleetEnvironment:
    environment_id: str
    environment_key: str = field(repr=False)


@dataclass(frozen=True)
class FleetConfig:
    """How the fleet behaves. Times are in seconds; ranges are (low, high) for a uniform draw."""

    workers_per_env: int = 3
    crash: float = 0.0
    ignore_stop: float = 0.0
    slow_ack: float = 0.0
    work_seconds: tuple[float, float] = (5.0, 30.0)  # how long a worker serves an item before finishing
    crash_after: tuple[float, float] = (0.2, 0.8)  # when a crashing worker dies, as a share of its work time
    slow_ack_seconds: tuple[float, float] = (6.0, 12.0)  # past the upstream's default 5 s reclaim window
    heartbeat_interval: tuple[float, float] = (1.0, 30.0)  # ttl/2 clamped into this (the SDK's bounds)
    desired_ttl_seconds: int | None = (
        None  # sent with each heartbeat when set; the SDK's worker never sends it
    )
    block_ms: int | None = 900
    reclaim_older_than_ms: int | None = None
    idle_sleep: tuple[float, float] = (1.0, 3.0)
    backoff: Backoff = Backoff()
    # Workers sharing one HTTP client (one connection pool); 0: the whole fleet shares one. See `Fleet`.
    workers_per_client: int = 8
    fatal_retry_seconds: float = 30.0  # a worker refused outright (fatal 4xx on poll) tries again after this
    enqueue_per_minute: float = 0.0  # per environment; needs an `enqueue` callable
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.workers_per_env < 0:
            raise ValueError("workers_per_env must not be negative")
        for name in ("crash", "ignore_stop", "slow_ack"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1, not {value}")
        if self.crash + self.ignore_stop + self.slow_ack > 1.0 + 1e-9:
            raise ValueError("crash + ignore_stop + slow_ack must not exceed 1")
        if self.workers_per_client < 0:
            raise ValueError("workers_per_client must not be negative")
        if self.enqueue_per_minute < 0:
            raise ValueError("enqueue_per_minute must not be negative")
        for name in ("work_seconds", "crash_after", "slow_ack_seconds", "heartbeat_interval", "idle_sleep"):
            low, high = getattr(self, name)
            if low < 0 or high < low:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high")


@dataclass
class FleetCounters(PollerCounters):
    """Everything the fleet did. `polls`, `acks`, `stops`, `errors`… come from the workers' pollers."""

    heartbeats: int = 0
    finished: int = 0  # items served to the end and stopped
    crashes: int = 0  # items abandoned by a crashing worker
    stops_ignored: int = 0  # items an ignore_stop worker kept heartbeating after being told to stop
    leases_lost: int = 0  # 412 on heartbeat, or no heartbeat succeeded for a whole TTL
    slow_acks: int = 0
    enqueued: int = 0


@dataclass(frozen=True)
class FleetWorker:
    worker_id: str
    environment_id: str
    behaviour: str


def assign_behaviours(total: int, config: FleetConfig) -> list[str]:
    """The behaviour of each of `total` workers: `round(fraction * total)`, at least one for a non-zero fraction."""
    counts: dict[str, int] = {}
    left = total
    for name in ("crash", "ignore_stop", "slow_ack"):
        fraction = getattr(config, name)
        wanted = max(1, round(fraction * total)) if fraction > 0 else 0
        counts[name] = min(wanted, left)
        left -= counts[name]
    behaviours = [name for name, count in counts.items() for _ in range(count)]
    return behaviours + ["normal"] * left


class Fleet:
    """The simulated workers (and optional producer) for a set of environments. See the module docstring."""

    def __init__(
        self,
        base_url: str,
        environments: Sequence[FleetEnvironment],
        config: FleetConfig | None = None,
        *,
        enqueue: Callable[[str], object] | None = None,
        client: WorkAPIClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.config = config or FleetConfig()
        self.environments = list(environments)
        self.counters = FleetCounters()
        self._enqueue = enqueue
        self._random = random.Random(self.config.seed)
        total = self.config.workers_per_env * len(self.environments)
        behaviours = assign_behaviours(total, self.config)
        # Worker k serves environment k mod E, so the misbehaving ones (first in the list) spread over environments.
        self.workers = [
            FleetWorker(
                worker_id=f"fleet-{behaviour.replace('_', '-')}-{default_worker_id()}",
                environment_id=self.environments[k % len(self.environments)].environment_id,
                behaviour=behaviour,
            )
            for k, behaviour in enumerate(behaviours)
        ]
        self._keys = {env.environment_id: env.environment_key for env in self.environments}
        self._own_client = client is None
        if client is None:
            # One small connection pool per group of workers rather than one pool for the whole fleet: httpx scans
            # every connection of a pool on each request it assigns, so one pool of N connections costs O(N) per
            # request and, at a few hundred workers, more CPU than everything else the fleet does.
            per_client = self.config.workers_per_client or max(total, 1)
            self.clients = [
                self._new_client(base_url, timeout, min(per_client, total - start))
                for start in range(0, max(total, 1), per_client)
            ]
        else:
            self.clients = [client]
        self.client = self.clients[0]
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def _new_client(base_url: str, timeout: float, workers: int) -> WorkAPIClient:
        # Every worker of the group may long-poll at once: room for each, plus a spare for its stops.
        limits = httpx.Limits(max_connections=workers + 2, max_keepalive_connections=workers + 2)
        # No API key: workers speak only with environment keys and sessions tokens.
        return WorkAPIClient(
            api_key=None,
            base_url=base_url,
            timeout=timeout,
            transport=httpx.AsyncHTTPTransport(limits=limits),
        )

    def _client_of(self, index: int) -> WorkAPIClient:
        per_client = self.config.workers_per_client or len(self.workers)
        return self.clients[min(index // per_client, len(self.clients) - 1)]

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker (and the producers) in the background."""
        if self._tasks:
            return
        for index, worker in enumerate(self.workers):
            task = self._run_worker(worker, self._client_of(index))
            self._tasks.append(asyncio.create_task(task, name=worker.worker_id))
        if self._enqueue is not None and self.config.enqueue_per_minute > 0:
            for env in self.environments:
                self._tasks.append(asyncio.create_task(self._produce(env.environment_id)))

    async def stop(self) -> None:
        """Shut down: cancel the workers and wait for them to stop what they hold; close the client."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("fleet task ended with an error: %s", result)
        if self._own_client:
            await asyncio.gather(*(client.aclose() for client in self.clients))

    async def run(self, duration: float | None = None) -> FleetCounters:
        """Run for `duration` seconds (None or 0: until cancelled), then shut down gracefully."""
        await self.start()
        try:
            if duration:
                await asyncio.sleep(duration)
            else:
                await asyncio.Event().wait()
        finally:
            await self.stop()
        return self.counters

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def behaviour_counts(self) -> dict[str, int]:
        return {name: sum(1 for w in self.workers if w.behaviour == name) for name in BEHAVIOURS}

    def summary(self) -> str:
        """One line for a terminal: ids and numbers only, never a credential."""
        c = self.counters
        kinds = ", ".join(
            f"{n} {name}" for name, n in self.behaviour_counts().items() if n and name != "normal"
        )
        return (
            f"fleet: {_count(len(self.workers), 'worker')} in {_count(len(self.environments), 'environment')}"
            f"{f' ({kinds})' if kinds else ''} | polls {c.polls} (empty {c.empty_polls}) acks {c.acks}"
            f" heartbeats {c.heartbeats} stops {c.stops} finished {c.finished} crashes {c.crashes}"
            f" stops ignored {c.stops_ignored} leases lost {c.leases_lost} enqueued {c.enqueued} errors {c.errors}"
        )

    # --- workers -----------------------------------------------------------------------------------------------

    async def _run_worker(self, worker: FleetWorker, client: WorkAPIClient) -> None:
        cfg = self.config
        before_ack = self._slow_ack if worker.behaviour == "slow_ack" else None
        while True:
            poller = WorkPoller(
                client,
                worker.environment_id,
                self._keys[worker.environment_id],
                worker_id=worker.worker_id,
                block_ms=cfg.block_ms,
                reclaim_older_than_ms=cfg.reclaim_older_than_ms,
                backoff=cfg.backoff,
                idle_sleep=cfg.idle_sleep,
                before_ack=before_ack,
                counters=self.counters,
            )
            try:
                async with poller:
                    async for claim in poller:
                        await self._serve(worker, claim, client)
            except WorkAPIError as exc:
                # Refused outright (bad key, archived environment...): the poller has logged it; try again later
                # rather than take the whole fleet down.
                log.error(
                    "worker %s refused by the upstream (%s, status %s); retrying in %.0fs",
                    worker.worker_id,
                    exc.kind,
                    exc.status,
                    cfg.fatal_retry_seconds,
                )
                await asyncio.sleep(cfg.fatal_retry_seconds)

    async def _slow_ack(self, item: WorkItem) -> None:
        self.counters.slow_acks += 1
        await asyncio.sleep(self._random.uniform(*self.config.slow_ack_seconds))

    async def _serve(self, worker: FleetWorker, claim: ClaimedWork, client: WorkAPIClient) -> None:
        """Hold one item: heartbeat until the work is done, then stop it (or misbehave)."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        started = loop.time()
        work_for = self._random.uniform(*cfg.work_seconds)
        finish_at = started + work_for
        crash_at = (
            started + work_for * self._random.uniform(*cfg.crash_after)
            if worker.behaviour == "crash"
            else None
        )
        hung = False  # an ignore_stop worker after its graceful-stop request: heartbeats forever
        ignoring = False  # it has been told to stop (and carries on)
        last_heartbeat = NO_HEARTBEAT
        ttl = _ASSUMED_TTL_SECONDS
        interval = cfg.heartbeat_interval[1]
        last_success = started
        beats = 0
        try:
            while True:
                try:
                    heartbeat = await client.heartbeat_work(
                        claim.environment_id,
                        claim.id,
                        credential=claim.credential,
                        expected_last_heartbeat=last_heartbeat,
                        desired_ttl_seconds=cfg.desired_ttl_seconds,
                    )
                except WorkAPIError as exc:
                    self.counters.errors += 1
                    if exc.status == 412:
                        log.info("lease lost work_id=%s worker=%s", claim.id, worker.worker_id)
                        self.counters.leases_lost += 1
                        claim.release()
                        return
                    if is_fatal(exc):
                        log.warning("heartbeat refused work_id=%s kind=%s; stopping", claim.id, exc.kind)
                        await claim.stop(force=True)
                        return
                    if loop.time() - last_success > ttl:
                        log.warning("lease assumed lost work_id=%s worker=%s", claim.id, worker.worker_id)
                        self.counters.leases_lost += 1
                        claim.release()
                        return
                else:
                    self.counters.heartbeats += 1
                    beats += 1
                    last_heartbeat = heartbeat.last_heartbeat
                    last_success = loop.time()
                    if heartbeat.ttl_seconds > 0:
                        ttl = float(heartbeat.ttl_seconds)
                        low, high = cfg.heartbeat_interval
                        interval = max(low, min(ttl / 2, high))
                    told_to_stop = heartbeat.state in ("stopping", "stopped") or not heartbeat.lease_extended
                    if heartbeat.state == "stopped":
                        # Nothing left to hold, whatever the worker's manners.
                        claim.release()
                        return
                    if told_to_stop:
                        if worker.behaviour == "ignore_stop":
                            if not ignoring:
                                self.counters.stops_ignored += 1
                            ignoring = hung = True
                        else:
                            await claim.stop(force=True)
                            return
                now = loop.time()
                if crash_at is not None and beats and now >= crash_at:
                    log.info("worker %s crashed holding work_id=%s", worker.worker_id, claim.id)
                    self.counters.crashes += 1
                    claim.release()
                    return
                if not hung and now >= finish_at:
                    if worker.behaviour == "ignore_stop":
                        await claim.stop()  # graceful; the worker will never confirm it
                        hung = True
                    else:
                        await claim.stop(force=True)
                        self.counters.finished += 1
                        return
                wake_at = now + interval
                if not hung:
                    wake_at = min(wake_at, finish_at)
                if crash_at is not None and beats:
                    wake_at = min(wake_at, crash_at)
                await asyncio.sleep(max(0.0, wake_at - loop.time()))
        except asyncio.CancelledError:
            # Shutting down: a well-behaved worker stops what it holds; crashed and hung ones just vanish.
            if worker.behaviour in ("crash", "ignore_stop"):
                claim.release()
            elif not claim.done:
                with contextlib.suppress(Exception):
                    await claim.stop(force=True)
            raise

    # --- producer ----------------------------------------------------------------------------------------------

    async def _produce(self, environment_id: str) -> None:
        assert self._enqueue is not None
        enqueue = self._enqueue
        mean_gap = 60.0 / self.config.enqueue_per_minute
        while True:
            # Exponential gaps: arrivals at the requested average rate, without lockstep across environments.
            await asyncio.sleep(self._random.expovariate(1.0 / mean_gap))
            try:
                await asyncio.to_thread(enqueue, environment_id)
            except Exception as exc:
                # The producer is a convenience: a failed enqueue must not stop the workers.
                self.counters.errors += 1
                log.warning("enqueue failed environment_id=%s error=%s", environment_id, type(exc).__name__)
            else:
                self.counters.enqueued += 1
