"""The live feed: one upstream poller per watched environment, whatever the number of viewers or instances.

How it runs. Each process has one ``LiveRuntime`` (per event loop). It is started by the ASGI lifespan
(``dashboard.live.lifespan``, so wall displays are fed from the moment the server is up) and, failing that, by the
first websocket that connects; both are idempotent. Its supervisor wakes every half interval (and at once when a
viewer arrives or leaves) and:

1. announces which keys this instance's viewers watch (``env:<env_id>``, ``work:<env_id>:<work_id>``);
2. reads what every instance's viewers watch, plus the environments configured on wall displays;
3. keeps only environments in the directory (the self-hosted environments the upstream lists), so a viewer cannot
   make the dashboard poll ids that do not exist;
4. takes or renews the lease of each wanted environment's feed and runs the feeds it holds; lets go of the rest.

An ``EnvironmentFeed`` polls ``stats`` every ``FEED_INTERVAL_SECONDS`` and lists the newest page(s) of work (with the
environment key) for the active and stuck counts and the watched rows, retrieves watched items not in those pages,
stores a queue sample (and, once a minute, the index's history sample: ``dashboard.index.history``), renders the snapshot once, caches it for viewers who connect later, and sends the rendered
text to the channel-layer groups (one message per group and process: ``fanout``). An upstream failure produces a
stale snapshot that keeps the last numbers and says since when, why, and the request-id; the next good poll clears
it.

What does not live here: locks and presence (``coordination``), HTML (``snapshots``), delivery to this process's
sockets (``fanout``), sockets (``consumers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone
from django.utils.html import format_html

from dashboard import budget, regions, upstream
from dashboard.index import history, queries
from dashboard.index.models import IndexedEnvironment, IndexedWork
from dashboard.index.sync import EnvironmentSync, SyncRound
from dashboard.live import conf, fanout, metrics
from dashboard.live.coordination import Coordinator, coordinator_from_settings, new_instance_id
from dashboard.live.snapshots import Fragments, ItemView, Snapshot, Staleness, iso, render
from dashboard.live.sparkline import HistoryPoint
from workqueue.client import WorkAPIClient
from workqueue.errors import WorkAPIError
from workqueue.records import QueueStats

logger = logging.getLogger(__name__)

# How long a cached snapshot outlives its feed: a viewer arriving after the feed stopped still sees the last numbers
# (marked with their age) rather than nothing.
SNAPSHOT_CACHE_SECONDS = 24 * 3600
# Without a directory (the upstream never answered the environments list) at most this many watched ids get a feed.
UNCHECKED_ENVIRONMENTS_CAP = 20
DISPLAY_REFRESH_SECONDS = 10.0
PRUNE_EVERY_SECONDS = 300.0
# A socket asking for an environment the directory lacks reads the list again, at most this often per process.
DIRECTORY_FORCED_READ_SECONDS = 5.0


# --- Names shared with the consumers -----------------------------------------------------------------------------


def group_name(kind: str, *ids: str) -> str:
    """A channel-layer group name; ids are hashed because group names are limited to 100 plain characters."""
    if not ids:
        return f"live.{kind}"
    digest = hashlib.sha256("\x1f".join(ids).encode()).hexdigest()[:40]
    return f"live.{kind}.{digest}"


def env_key(environment_id: str) -> str:
    return f"env:{environment_id}"


def work_key(environment_id: str, work_id: str) -> str:
    return f"work:{environment_id}:{work_id}"


def snapshot_cache_key(environment_id: str) -> str:
    return f"snapshot:{environment_id}"


DIRECTORY_CACHE_KEY = "directory"


def _environments_of(keys: Iterable[str]) -> tuple[set[str], dict[str, set[str]]]:
    environments: set[str] = set()
    items: dict[str, set[str]] = {}
    for key in keys:
        kind, _, rest = key.partition(":")
        if kind == "env" and rest:
            environments.add(rest)
        elif kind == "work":
            environment_id, _, work_id = rest.partition(":")
            if environment_id and work_id:
                environments.add(environment_id)
                items.setdefault(environment_id, set()).add(work_id)
    return environments, items


@dataclass
class DisplayInterest:
    all_environments: bool = False
    environments: set[str] = field(default_factory=set)


def _display_interest_sync() -> DisplayInterest:
    from dashboard.live.models import DisplayLink

    interest = DisplayInterest()
    for environments in DisplayLink.objects.active().values_list("environments", flat=True):
        if not environments:
            interest.all_environments = True
        else:
            interest.environments.update(str(e) for e in environments)
    return interest


def _with_keys(environment_ids: list[str]) -> set[str]:
    """The environments among ``environment_ids`` whose work the dashboard can list (it has their key)."""
    return {e for e in environment_ids if upstream.environment_key_sync(e) is not None}


def _store_sample(environment_id: str, point: HistoryPoint, oldest_age: float | None) -> None:
    from dashboard.live.models import QueueSample

    QueueSample.objects.create(
        environment_id=environment_id,
        at=point.at,
        depth=point.depth,
        pending=point.pending,
        workers_polling=point.workers_polling,
        oldest_queued_age_seconds=oldest_age,
    )


def _load_history_sync(environment_id: str, since: datetime) -> list[HistoryPoint]:
    from dashboard.live.models import QueueSample

    rows = QueueSample.objects.filter(environment_id=environment_id, at__gte=since).order_by("at")
    return [
        HistoryPoint(at=r.at, depth=r.depth, pending=r.pending, workers_polling=r.workers_polling)
        for r in rows.only("at", "depth", "pending", "workers_polling")[:20000]
    ]


# How often each instance looks for bulk operations whose runner is gone (dead or restarted instance).
BULK_RESUME_EVERY_SECONDS = 5.0

# The overview's queue samples (one per reading, every interval) feed a one-hour chart: they are kept a day at
# most, whatever HISTORY_RETENTION_HOURS keeps of the environments' minute samples.
QUEUE_SAMPLES_MAX_HOURS = 24.0


def _prune_sync(before: datetime, queue_before: datetime | None = None) -> int:
    from dashboard.live.models import QueueSample

    deleted, _ = QueueSample.objects.filter(at__lt=max(before, queue_before or before)).delete()
    return deleted + history.prune(before)


def _staleness(exc: WorkAPIError, previous: Staleness | None) -> Staleness:
    banner = upstream.failure_banner(exc)
    return Staleness(
        # The first failure of a run of failures says since when; later ones only update why.
        since=previous.since if previous is not None else exc.occurred_at,
        reason=str(banner["title"]),
        detail=str(banner["message"]),
        kind=exc.kind,
        request_id=exc.request_id or "",
        status=exc.status,
    )


async def _apply_index_counts(snapshot: Snapshot, now: datetime, *, has_key: bool) -> None:
    """The active and stuck counts of a snapshot are the work index's, read as every page reads them."""
    from dashboard import regions

    try:
        figures = await database_sync_to_async(regions.index_figures)([snapshot.environment_id], now)
    except Exception:
        logger.exception("Could not read the work index's counts of %s", snapshot.environment_id)
        return
    regions.apply_index_figures(
        snapshot, figures.get(snapshot.environment_id), has_key=has_key, keep_note=True
    )


def _row_view(row: IndexedWork, now: datetime) -> ItemView:
    return ItemView.of(row.work_id, row, now)


def _watched_rows(environment_id: str, watched: set[str], now: datetime) -> dict[str, ItemView]:
    rows = IndexedWork.objects.filter(environment_id=environment_id, work_id__in=sorted(watched))
    return {row.work_id: _row_view(row, now) for row in rows}


def _round_note(round_result: SyncRound | None) -> str:
    """Why the counts may be behind, when the index's round failed (kept over the index's own note)."""
    if round_result is None or round_result.error is None or round_result.paused_until is not None:
        return ""
    banner = upstream.failure_banner(round_result.error)
    request_id = f" (request id {banner['request_id']})" if banner["request_id"] else ""
    return f"Active and stuck counts not updated this time: {banner['title']}{request_id}."


def _slowed_down(
    until: datetime, previous: Staleness | None, status: int | None = None, request_id: str = ""
) -> Staleness:
    """The Work API asked the dashboard to slow down (429) or is overloaded (529): the screens name which, and
    say until when this environment is left alone."""
    local = timezone.localtime(until)
    kind = "overloaded" if status == 529 else "rate_limited"
    title = upstream.failure_banner(WorkAPIError("", kind=kind))["title"]
    return Staleness(
        since=previous.since if previous is not None else timezone.now(),
        reason=f"{title}: slowed down until {local:%H:%M:%S}",
        detail=f"The Work API answered {status or 429}; this environment is read again after the time it asked for.",
        kind=kind,
        request_id=request_id or (previous.request_id if previous is not None else ""),
        status=status or 429,
    )


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end, without swallowing a cancellation of the caller itself."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        logger.exception("A live feed task failed while stopping")


# --- One environment ---------------------------------------------------------------------------------------------


class EnvironmentFeed:
    """Polls one environment every interval while this instance holds its lease."""

    def __init__(self, runtime: LiveRuntime, environment_id: str) -> None:
        self.runtime = runtime
        self.environment_id = environment_id
        self.snapshot: Snapshot | None = None
        self.history: deque[HistoryPoint] = deque()
        self.polls = 0
        self._sent_rows: dict[str, str] = {}
        self._sent_items: dict[str, str] = {}
        # The work index of this environment is written by this feed only, while this instance holds the lease.
        self.sync = EnvironmentSync(environment_id, interval=conf.feed_interval())
        self.last_round: SyncRound | None = None
        # One history sample a minute, written here too: only the lease holder's index is complete and current.
        self.minutes = history.MinuteSamples(environment_id)
        self.task = asyncio.create_task(self._run(), name=f"live-feed-{environment_id}")

    async def stop(self) -> None:
        await _cancel_and_wait(self.task)
        metrics.forget_environment(self.environment_id)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._load_history()
        except Exception:
            logger.exception(
                "Could not load the queue history of %s; the chart starts empty", self.environment_id
            )
        interval = conf.feed_interval()
        due = loop.time()
        while True:
            try:
                await self.poll_once(due)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug in one poll must not end the feed: the screens would freeze without saying so.
                logger.exception(
                    "The live feed of %s failed to poll; trying again next interval", self.environment_id
                )
            due += interval
            now = loop.time()
            if due <= now:
                # Slower than the interval (a hanging upstream): skip the missed polls, never poll back to back.
                due += (math.floor((now - due) / interval) + 1) * interval
            await asyncio.sleep(due - now)

    async def _load_history(self) -> None:
        since = timezone.now() - timedelta(seconds=conf.history_window_seconds())
        points = await database_sync_to_async(_load_history_sync)(self.environment_id, since)
        self.history.extend(points)

    async def poll_once(self, due: float | None = None) -> Snapshot:
        runtime = self.runtime
        client = runtime.client
        environment_id = self.environment_id
        sync = self.sync
        # database_sync_to_async (not sync_to_async): it closes the connection afterwards, as a request would.
        key = await database_sync_to_async(upstream.environment_key_sync)(environment_id)
        watched = set(runtime.watched_items.get(environment_id, set()))
        paused_until = await sync.paused_until()

        async def stats() -> QueueStats | WorkAPIError | None:
            if paused_until is not None or not sync.may_poll_stats(time.monotonic()):
                return None
            sync.note_request()
            try:
                return await client.work_stats(environment_id)
            except WorkAPIError as exc:
                return exc

        async def index_round() -> SyncRound | None:
            if paused_until is not None:
                return None
            # An environment someone watches (a page, a wall display) goes before background work in the budget.
            with budget.priority("background" if environment_id in runtime.background else "watched"):
                return await sync.round(client, key, watched)

        stats_result, round_result = await asyncio.gather(stats(), index_round())
        if isinstance(stats_result, WorkAPIError) and stats_result.kind in ("rate_limited", "overloaded"):
            paused_until = await sync.slow_down(stats_result)
        elif round_result is not None and round_result.paused_until is not None:
            paused_until = round_result.paused_until
        elif isinstance(stats_result, QueueStats) and round_result is not None and round_result.error is None:
            await sync.recovered()
        self.last_round = round_result
        self.polls += 1
        now = timezone.now()
        if key is not None:
            await self._write_history(now)
        previous = self.snapshot
        # The queue numbers are what a snapshot is about: only their failure makes it stale.
        failure = stats_result if isinstance(stats_result, WorkAPIError) else None

        snapshot = Snapshot(
            environment_id=environment_id,
            name=runtime.environment_name(environment_id),
            at=previous.at if previous else None,
            published_at=now,
        )
        if previous is not None:
            # Whatever cannot be read now keeps its last value (and the snapshot says it is stale).
            for name in (
                "depth",
                "pending",
                "workers_polling",
                "oldest_queued_at",
                "active",
                "stuck",
                "listed",
            ):
                setattr(snapshot, name, getattr(previous, name))
            snapshot.counts_capped = previous.counts_capped
            snapshot.counts_note = previous.counts_note
            snapshot.items = dict(previous.items)
        if isinstance(stats_result, QueueStats):
            snapshot.depth = stats_result.depth
            snapshot.pending = stats_result.pending
            snapshot.workers_polling = stats_result.workers_polling
            snapshot.oldest_queued_at = stats_result.oldest_queued_at
            snapshot.at = now
            point = HistoryPoint(now, stats_result.depth, stats_result.pending, stats_result.workers_polling)
            self.history.append(point)
            try:
                await database_sync_to_async(_store_sample)(
                    environment_id, point, snapshot.oldest_queued_seconds
                )
            except Exception:
                logger.exception("Could not store a queue sample of %s", environment_id)
        horizon = now - timedelta(seconds=conf.history_window_seconds())
        while self.history and self.history[0].at < horizon:
            self.history.popleft()
        snapshot.history = list(self.history)

        # Counts and watched rows: the work index, as every page reads it (the same figures as the pages).
        try:
            snapshot.items = await database_sync_to_async(_watched_rows)(environment_id, watched, now)
        except Exception:
            logger.exception("Could not read the watched rows of %s from the work index", environment_id)
        snapshot.counts_note = _round_note(round_result)
        await _apply_index_counts(snapshot, now, has_key=key is not None)
        # Forget items nobody watches any more.
        snapshot.items = {work_id: item for work_id, item in snapshot.items.items() if work_id in watched}

        if paused_until is not None:
            snapshot.stale = _slowed_down(
                paused_until, previous.stale if previous else None, sync.paused_status, sync.paused_request_id
            )
        elif failure is not None:
            snapshot.stale = _staleness(failure, previous.stale if previous else None)
        self.snapshot = snapshot
        fragments = render(snapshot, watched_items=watched, interval=conf.feed_interval())
        await runtime.publish(snapshot, fragments, self._changed(fragments))
        self._export(snapshot, due)
        return snapshot

    async def _write_history(self, now: datetime) -> None:
        if self.minutes.next_end > now:
            return  # nothing due before the next minute ends: no database call this round
        try:
            await database_sync_to_async(self.minutes.write_due)(
                now, self.sync.confirmed_as_of, filled=self.sync.filled
            )
        except Exception:
            # The minute stays due: the next round tries it again.
            logger.exception("Could not write the history sample of %s", self.environment_id)

    def _changed(self, fragments: Fragments) -> tuple[dict[str, str], dict[str, str]]:
        """Rows and items whose HTML differs from what was last sent: only those go out to open sockets."""
        rows = {k: v for k, v in fragments.rows.items() if self._sent_rows.get(k) != v}
        items = {k: v for k, v in fragments.items.items() if self._sent_items.get(k) != v}
        self._sent_rows = dict(fragments.rows)
        self._sent_items = dict(fragments.items)
        return rows, items

    def _export(self, snapshot: Snapshot, due: float | None) -> None:
        environment_id = self.environment_id
        if due is not None:
            metrics.FEED_LAG.labels(environment_id).set(max(0.0, asyncio.get_running_loop().time() - due))
        metrics.FEED_STALE.labels(environment_id).set(1 if snapshot.stale else 0)
        if snapshot.at is not None:
            metrics.FEED_SNAPSHOT_TIME.labels(environment_id).set(snapshot.at.timestamp())
        if snapshot.depth is not None:
            metrics.QUEUE_DEPTH.labels(environment_id).set(snapshot.depth)
        if snapshot.pending is not None:
            metrics.QUEUE_PENDING.labels(environment_id).set(snapshot.pending)
        if snapshot.workers_polling is not None:
            metrics.WORKERS_POLLING.labels(environment_id).set(snapshot.workers_polling)
        metrics.OLDEST_QUEUED_AGE.labels(environment_id).set(snapshot.oldest_queued_seconds or 0.0)
        if snapshot.stuck is not None:
            metrics.STUCK_WORK.labels(environment_id).set(snapshot.stuck)
        if snapshot.active is not None:
            metrics.ACTIVE_WORK.labels(environment_id).set(snapshot.active)


# --- The process's runtime ---------------------------------------------------------------------------------------


class LiveRuntime:
    """Everything live in this process: local viewers, the feeds held here, the supervisor that decides."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.instance_id = new_instance_id()
        self.coordinator: Coordinator = coordinator_from_settings(self.instance_id)
        self.local_watch: Counter[str] = Counter()
        self.feeds: dict[str, EnvironmentFeed] = {}
        # This process's sockets get the feeds' messages through it (one channel-layer subscription per process).
        self.relay = fanout.Relay()
        self.watched_items: dict[str, set[str]] = {}
        # Environments fed only for the work index (nobody watches them): last in the upstream budget.
        self.background: set[str] = set()
        self._client: WorkAPIClient | None = None
        self._built_client: WorkAPIClient | None = None
        self._directory_forced_at = -math.inf
        self._built_options: tuple[Any, ...] = ()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._directory: list[dict[str, str]] | None = None
        self._directory_names: dict[str, str] = {}
        self._directory_read_at = -math.inf
        self._displays = DisplayInterest()
        self._displays_read_at = -math.inf
        self._pruned_at = -math.inf
        self._announced: frozenset[str] | None = None
        # The overview's headline as last sent from here: its figures and when (``_publish_headline``).
        self._headline_figures: tuple[int, int] | None = None
        self._headline_sent_at = -math.inf
        self._bulk_checked_at = -math.inf
        self.stopped = False

    # --- lifecycle

    @property
    def client(self) -> WorkAPIClient:
        """The feed's client, made from settings; a changed setting (base URL, key, workspace, timeout) makes a
        new one on the next poll, as it does for pages."""
        options = _feed_client_options()
        if self._client is not None and self._client is self._built_client and options != self._built_options:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._client.aclose())
            self._client = None
        if self._client is None:
            self._client = self._built_client = feed_client()
            self._built_options = options
        return self._client

    def ensure_started(self) -> None:
        if self.stopped:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._supervise(), name="live-supervisor")

    async def stop(self) -> None:
        """Stop every feed and give their leases up, so another instance takes them over at once; bulk stops
        running here finish the item in hand and are left for another instance to resume."""
        from dashboard import actions

        self.stopped = True
        try:
            handed = await database_sync_to_async(actions.hand_over_bulk)()
            if handed:
                logger.info("Handed %d running bulk operation(s) over to the other instances", len(handed))
        except Exception:
            logger.exception("Could not hand the running bulk operations over")
        if self._task is not None:
            await _cancel_and_wait(self._task)
        for feed in list(self.feeds.values()):
            await feed.stop()
        self.feeds.clear()
        await self.relay.stop()
        metrics.FEEDS_HELD.set(0)
        with contextlib.suppress(Exception):
            await self.coordinator.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    # --- viewers (called by the consumers)

    def watch(self, keys: Iterable[str]) -> None:
        self.local_watch.update(keys)
        self.ensure_started()
        self._wake.set()

    def unwatch(self, keys: Iterable[str]) -> None:
        self.local_watch.subtract(keys)
        self.local_watch = +self.local_watch  # drops keys nobody here watches any more
        self._wake.set()

    async def cached(self, environment_ids: list[str]) -> list[dict[str, Any] | None]:
        """The latest snapshot payload of each environment (None where there is none yet), for a new viewer."""
        return await read_cached(self.coordinator, environment_ids)

    def environment_name(self, environment_id: str) -> str:
        return self._directory_names.get(environment_id, environment_id)

    async def directory(self, *, load: bool = True) -> list[dict[str, str]] | None:
        """The self-hosted environments (``[{"id", "name"}]``, by name): this process's copy, else the shared
        cache, else (``load``) read from the upstream now. None when it cannot be known."""
        if (
            self._directory is not None
            and time.monotonic() - self._directory_read_at < conf.directory_interval()
        ):
            return self._directory
        entries = await read_directory(self.coordinator, self.client if load else None)
        if entries is not None:
            self._set_directory(entries)
        return self._directory

    async def directory_with(self, environment_ids: list[str]) -> list[dict[str, str]] | None:
        """The directory, read again from the upstream when it lacks one of ``environment_ids`` (a page just
        showed an environment created since): at most once every few seconds, whoever asks."""
        entries = await self.directory(load=False)
        known = {entry["id"] for entry in entries or []}
        if entries is None or all(e in known for e in environment_ids):
            return entries
        if time.monotonic() - self._directory_forced_at < DIRECTORY_FORCED_READ_SECONDS:
            return entries
        self._directory_forced_at = time.monotonic()
        try:
            await self._read_directory()
        except WorkAPIError as exc:
            logger.warning("Could not read the environments list: %s", exc)
        return self._directory

    def _set_directory(self, entries: list[dict[str, str]]) -> None:
        self._directory = entries
        self._directory_names = {e["id"]: e["name"] for e in entries}
        self._directory_read_at = time.monotonic()

    async def _read_directory(self) -> None:
        before = [entry["id"] for entry in self._directory] if self._directory is not None else None
        self._set_directory(await fetch_directory(self.coordinator, self.client))
        with contextlib.suppress(Exception):  # names for breadcrumbs; a failed write must not stop the feed
            await database_sync_to_async(IndexedEnvironment.remember_names)(self._directory or [])
        after = [entry["id"] for entry in self._directory or []]
        if before is not None and before != after:
            # Wall displays showing every environment re-render when one is added or goes away.
            await fanout.group_send(
                group_name("directory"), {"type": "live.directory", "environments": after}
            )

    # --- publishing (called by the feeds)

    async def publish(
        self, snapshot: Snapshot, fragments: Fragments, changed: tuple[dict[str, str], dict[str, str]]
    ) -> None:
        environment_id = snapshot.environment_id
        payload = {
            "environment_id": environment_id,
            "name": snapshot.name,
            "at": iso(snapshot.at),
            "published_at": iso(snapshot.published_at),
            "stale": snapshot.stale is not None,
            "depth": snapshot.depth,
            "numbers": snapshot.numbers(),
            "tile": fragments.tile,
            "environment": fragments.environment,
            "wall": fragments.wall,
            "rows": fragments.rows,
            "items": fragments.items,
        }
        # Cache first: a viewer connecting now reads this or a newer one, never an older one after a newer message.
        try:
            await self.coordinator.put(
                snapshot_cache_key(environment_id), json.dumps(payload), SNAPSHOT_CACHE_SECONDS
            )
        except Exception:
            logger.warning("Could not cache the snapshot of %s", environment_id, exc_info=True)
        # One message per group and process; each process's relay hands it to its own sockets (``fanout``).
        rows, items = changed
        await fanout.group_send(
            group_name("overview"),
            {"type": "live.tile", "environment_id": environment_id, "text": fragments.tile},
        )
        await fanout.group_send(
            group_name("environment", environment_id),
            {"type": "live.environment", "text": fragments.environment, "rows": rows},
        )
        await fanout.group_send(
            group_name("wall", environment_id), {"type": "live.wall", "text": fragments.wall}
        )
        for work_id, text in items.items():
            await fanout.group_send(
                group_name("work", environment_id, work_id), {"type": "live.item", "text": text}
            )
        await self._publish_headline()

    async def _publish_headline(self) -> None:
        """The overview's headline sums the tiles of every environment, whichever instance feeds them: after a
        tile goes out it is drawn again from every environment's cached snapshot, and sent when its figures
        changed, else at most once an interval (its freshness line ages)."""
        entries = self._directory
        if not entries:
            return
        payloads = await read_cached(self.coordinator, [entry["id"] for entry in entries])
        tiles = [
            Snapshot.from_numbers(entry["id"], str(entry.get("name") or ""), payload.get("numbers") or {}, [])
            for entry, payload in zip(entries, payloads, strict=True)
            if payload
        ]
        figures = regions.headline_figures(tiles)
        if (
            figures == self._headline_figures
            and time.monotonic() - self._headline_sent_at < conf.feed_interval()
        ):
            return
        self._headline_figures, self._headline_sent_at = figures, time.monotonic()
        # The stuck page's mark is read with it (one read of the stuck query's partial index): an item stopped
        # while another got stuck, leaving the counts as they were, reaches the page within an interval.
        now = timezone.now()
        mark = await database_sync_to_async(queries.stuck_mark)(now)
        text = await database_sync_to_async(render_headline)(tiles, now)
        # The stuck page's mark goes in the same message, as its own fragment: only stuck sockets forward it (the
        # overview has no element for it), and only the overview forwards the headline.
        await fanout.group_send(
            group_name("overview"),
            {"type": "live.headline", "text": text, "stuck": render_stuck_mark(mark, now)},
        )

    # --- the supervisor

    async def _supervise(self) -> None:
        while not self.stopped:
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("The live feed supervisor failed; trying again shortly")
            # asyncio.timeout rather than wait_for: on 3.11 wait_for can swallow a cancellation that arrives just as
            # the event is set, and the supervisor would outlive its runtime.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(conf.supervisor_tick()):
                    await self._wake.wait()

    async def tick(self) -> None:
        """One round: announce, decide which feeds to run, hold their leases, start and stop feeds."""
        local = frozenset(self.local_watch)
        # Presence outlives a dead instance by a few intervals only; a live one renews it every tick.
        await self.coordinator.announce(local, ttl=max(5.0, 4 * conf.feed_interval()))
        watched = await self.coordinator.watched()
        displays = await self._display_interest()
        wanted, self.watched_items = _environments_of(watched)
        wanted |= displays.environments
        index_all = bool(settings.INDEX_ALL_ENVIRONMENTS)
        directory: list[dict[str, str]] | None = None
        if wanted or displays.all_environments or index_all:
            directory = await self._refresh_directory()
        if directory is not None:
            known = {entry["id"] for entry in directory}
            if displays.all_environments:
                wanted |= known
            if index_all:
                # The work index follows every environment it can list, watched or not (the stuck page covers all);
                # those nobody watches come last in the upstream budget.
                self.background = await database_sync_to_async(_with_keys)(sorted(known - wanted))
                wanted |= self.background
            wanted &= known
        else:
            wanted = set(sorted(wanted)[:UNCHECKED_ENVIRONMENTS_CAP])
        await self._hold_feeds(wanted)
        await self._prune_history()
        await self._resume_bulk()
        try:
            await self.relay.maintain()
        except Exception:
            logger.warning("Could not renew the live relay's groups", exc_info=True)

    async def _resume_bulk(self) -> None:
        """Bulk stops left running by an instance that died or was restarted go on here (one instance claims each)."""
        from dashboard import actions

        if time.monotonic() - self._bulk_checked_at < BULK_RESUME_EVERY_SECONDS:
            return
        self._bulk_checked_at = time.monotonic()
        try:
            await database_sync_to_async(actions.resume_interrupted_bulk)()
        except Exception:
            logger.exception("Could not look for interrupted bulk operations")

    async def _display_interest(self) -> DisplayInterest:
        if time.monotonic() - self._displays_read_at >= DISPLAY_REFRESH_SECONDS:
            try:
                self._displays = await database_sync_to_async(_display_interest_sync)()
                self._displays_read_at = time.monotonic()
            except Exception:
                logger.warning("Could not read the wall displays' environments", exc_info=True)
        return self._displays

    def refresh_displays(self) -> None:
        """Re-read the wall displays' environments on the next tick (a link was created or revoked)."""
        self._displays_read_at = -math.inf
        self._wake.set()

    async def _refresh_directory(self) -> list[dict[str, str]] | None:
        due = time.monotonic() - self._directory_read_at >= conf.directory_interval()
        if not due and self._directory is not None:
            return self._directory
        # One instance reads the list from the upstream; the others take it from the shared cache.
        held = await self.coordinator.hold("directory", ttl=3 * conf.directory_interval())
        if held:
            try:
                await self._read_directory()
            except WorkAPIError as exc:
                logger.warning("Could not read the environments list: %s", exc)
                self._directory_read_at = time.monotonic() - conf.directory_interval() + conf.feed_interval()
            return self._directory
        return await self.directory(load=False)

    async def _hold_feeds(self, wanted: set[str]) -> None:
        ttl = conf.lease_ttl()
        for environment_id in sorted(wanted):
            try:
                held = await self.coordinator.hold(f"feed:{environment_id}", ttl)
            except Exception:
                logger.warning("Could not renew the lease of %s's feed", environment_id, exc_info=True)
                held = False
            feed = self.feeds.get(environment_id)
            if held and feed is None:
                logger.info("Live feed of %s starts on %s", environment_id, self.instance_id)
                self.feeds[environment_id] = EnvironmentFeed(self, environment_id)
            elif not held and feed is not None:
                logger.info("Live feed of %s moved to another instance", environment_id)
                del self.feeds[environment_id]
                await feed.stop()
        for environment_id in [e for e in self.feeds if e not in wanted]:
            feed = self.feeds.pop(environment_id)
            await feed.stop()
            with contextlib.suppress(Exception):
                await self.coordinator.release(f"feed:{environment_id}")
        metrics.FEEDS_HELD.set(len(self.feeds))

    async def _prune_history(self) -> None:
        if time.monotonic() - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = time.monotonic()
        if not await self.coordinator.hold("prune", ttl=PRUNE_EVERY_SECONDS):
            return
        now = timezone.now()
        before = now - timedelta(hours=conf.history_retention_hours())
        queue_before = now - timedelta(hours=QUEUE_SAMPLES_MAX_HOURS)
        try:
            deleted = await database_sync_to_async(_prune_sync)(before, queue_before)
        except Exception:
            logger.exception("Could not prune the queue history")
            return
        if deleted:
            logger.info("Pruned %d history samples older than %s", deleted, before.isoformat())


def _feed_client_options() -> tuple[Any, ...]:
    return (
        settings.ANTHROPIC_API_KEY,
        settings.ANTHROPIC_BASE_URL,
        conf.feed_timeout(),
        settings.ANTHROPIC_WORKSPACE_ID or None,
    )


def feed_client() -> WorkAPIClient:
    """A client for the feed: short timeout, and no retries (the next interval is the retry, and a poll must not
    outlast its interval). Its calls are measured for ``/metrics``."""
    return WorkAPIClient(
        api_key=settings.ANTHROPIC_API_KEY,
        base_url=settings.ANTHROPIC_BASE_URL,
        timeout=conf.feed_timeout(),
        retry_total=0,
        workspace_id=settings.ANTHROPIC_WORKSPACE_ID or None,
        transport=metrics.instrumented_transport(),
    )


def render_headline(tiles: list[Snapshot], now: datetime) -> str:
    """The overview's headline partial, as the page's GET renders it (``regions.headline_context``)."""
    from django.template.loader import render_to_string

    context = {**regions.headline_context(tiles, now), "oob": True}
    return render_to_string("dashboard/pages/overview.html#headline", context)


def render_stuck_mark(mark: str, now: datetime) -> str:
    """The stuck page's index mark (``queries.stuck_mark``), which ``static/live.js`` compares with the one its
    list was drawn with, to read the list again when they differ; and when it was read, so the page's badge says
    so when the marks stop coming."""
    return format_html(
        '<span id="stuck-mark" hx-swap-oob="true" hidden data-index-mark-for="stuck-region"'
        ' data-index-mark="{}" data-live data-live-at="{}" data-live-interval="{}"></span>',
        mark,
        iso(now),
        f"{conf.feed_interval():g}",
    )


# --- Shared state without a runtime (pages) -----------------------------------------------------------------------


async def read_cached(coordinator: Coordinator, environment_ids: list[str]) -> list[dict[str, Any] | None]:
    try:
        values = await coordinator.get_many([snapshot_cache_key(e) for e in environment_ids])
    except Exception:
        logger.warning("Could not read cached snapshots", exc_info=True)
        return [None] * len(environment_ids)
    payloads: list[dict[str, Any] | None] = []
    for value in values:
        try:
            payloads.append(json.loads(value) if value else None)
        except ValueError:
            payloads.append(None)
    return payloads


async def fetch_directory(coordinator: Coordinator, client: WorkAPIClient) -> list[dict[str, str]]:
    """Read the self-hosted environments from the upstream (the same list, in the same order, as the overview)."""
    from dashboard.views import self_hosted_environments

    environments = await self_hosted_environments(client)
    entries = [{"id": e.id, "name": e.name} for e in environments]
    with contextlib.suppress(Exception):
        await coordinator.put(DIRECTORY_CACHE_KEY, json.dumps(entries), SNAPSHOT_CACHE_SECONDS)
    return entries


async def read_directory(
    coordinator: Coordinator, client: WorkAPIClient | None
) -> list[dict[str, str]] | None:
    """The cached directory, else (given a client) the upstream's; None if neither is available."""
    with contextlib.suppress(Exception):
        cached = await coordinator.get(DIRECTORY_CACHE_KEY)
        if cached:
            entries: list[dict[str, str]] = json.loads(cached)
            return entries
    if client is None:
        return None
    try:
        return await fetch_directory(coordinator, client)
    except WorkAPIError:
        return None


@contextlib.asynccontextmanager
async def shared_state() -> AsyncIterator[Coordinator]:
    """A short-lived handle on the shared cache, for pages (which must not start or replace the runtime)."""
    coordinator = coordinator_from_settings(new_instance_id())
    try:
        yield coordinator
    finally:
        with contextlib.suppress(Exception):
            await coordinator.close()


_runtime: LiveRuntime | None = None


def runtime() -> LiveRuntime:
    """This process's runtime (one per event loop: a server has one; tests start a fresh one per loop)."""
    global _runtime
    loop = asyncio.get_running_loop()
    if _runtime is None or _runtime.loop is not loop or _runtime.stopped:
        _runtime = LiveRuntime()
    return _runtime


def current_runtime() -> LiveRuntime | None:
    """The runtime if one exists in this process (for ``/metrics`` and ``/readyz``), without creating one."""
    return _runtime


async def shutdown() -> None:
    """Stop this process's runtime (ASGI lifespan shutdown; tests)."""
    global _runtime
    if _runtime is not None:
        current, _runtime = _runtime, None
        if current.loop is asyncio.get_running_loop():
            await current.stop()
