"""Keeping the work index in step with the upstream.

Writing rows (synchronous, one transaction per batch):

- ``record_items(environment_id, items, confirmed_at=…)``: upsert what a list page or a retrieve returned, and
  turn the changes it shows into timeline events (``WorkEvent``). A row confirmed later than ``confirmed_at``
  (an action's answer that arrived meanwhile) is not overwritten by an older read.
- ``record_answer(item)``: what an action (stop, force-stop, metadata patch) got back, written at once.
- ``prune(now)``: stopped items past ``INDEX_STOPPED_RETENTION_HOURS`` leave the index, with their events.

The sync itself (``EnvironmentSync``, driven by the live feed while it holds the environment's lease) is below.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from dashboard import stuck
from dashboard.index.models import IndexedEnvironment, IndexedWork, WorkEvent, WorkState
from dashboard.index.queries import metadata_search_text
from workqueue.errors import NotFound, WorkAPIError
from workqueue.records import WorkItem

logger = logging.getLogger(__name__)

# The fields a read of the upstream can change on a row (everything but identity and bookkeeping).
UPSTREAM_FIELDS = (
    "state",
    "data_type",
    "session_id",
    "metadata",
    "search_text",
    "created_at",
    "acknowledged_at",
    "started_at",
    "latest_heartbeat_at",
    "stop_requested_at",
    "stopped_at",
    "worker_id",
    "stuck_since",
)


def row_values(item: WorkItem) -> dict[str, Any]:
    """The index columns for one upstream record."""
    return {
        "state": item.state,
        "data_type": item.data.type,
        "session_id": item.data.id,
        "metadata": dict(item.metadata),
        "search_text": metadata_search_text(item.metadata),
        "created_at": item.created_at,
        "acknowledged_at": item.acknowledged_at,
        "started_at": item.started_at,
        "latest_heartbeat_at": item.latest_heartbeat_at,
        "stop_requested_at": item.stop_requested_at,
        "stopped_at": item.stopped_at,
        "worker_id": str(item.raw.get("worker_id") or "")[:512] if isinstance(item.raw, dict) else "",
        "stuck_since": stuck.reference_time(
            item.state,
            created_at=item.created_at,
            acknowledged_at=item.acknowledged_at,
            latest_heartbeat_at=item.latest_heartbeat_at,
            stop_requested_at=item.stop_requested_at,
        ),
    }


def _events_of_new(values: dict[str, Any]) -> list[tuple[str, datetime]]:
    """A row seen for the first time: its timeline so far, from the upstream's timestamps."""
    events: list[tuple[str, datetime]] = [(WorkEvent.Kind.QUEUED, values["created_at"])]
    for kind, name in (
        (WorkEvent.Kind.ACKNOWLEDGED, "acknowledged_at"),
        (WorkEvent.Kind.FIRST_HEARTBEAT, "started_at"),
        (WorkEvent.Kind.STOP_REQUESTED, "stop_requested_at"),
        (WorkEvent.Kind.STOPPED, "stopped_at"),
    ):
        if values[name] is not None:
            events.append((kind, values[name]))
    return events


def _events_of_change(row: IndexedWork, values: dict[str, Any], now: datetime) -> list[tuple[str, datetime]]:
    """What changed between the row the index had and the record just read, as timeline events."""
    events: list[tuple[str, datetime]] = []
    old_ack, new_ack = row.acknowledged_at, values["acknowledged_at"]
    was_leased = row.state in (WorkState.STARTING, WorkState.ACTIVE)
    requeued = (was_leased and values["state"] == WorkState.QUEUED) or (
        old_ack is not None and new_ack is not None and new_ack != old_ack
    )
    if requeued:
        # The upstream gives no time for a lease running out: the moment is when the index saw it (or, when a
        # new acknowledgement shows it was delivered again in between, just before that).
        events.append((WorkEvent.Kind.REQUEUED, min(now, new_ack) if new_ack is not None else now))
    if new_ack is not None and new_ack != old_ack:
        events.append((WorkEvent.Kind.ACKNOWLEDGED, new_ack))
    if values["started_at"] is not None and values["started_at"] != row.started_at:
        events.append((WorkEvent.Kind.FIRST_HEARTBEAT, values["started_at"]))
    if values["stop_requested_at"] is not None and values["stop_requested_at"] != row.stop_requested_at:
        events.append((WorkEvent.Kind.STOP_REQUESTED, values["stop_requested_at"]))
    if values["state"] == WorkState.STOPPED and row.state != WorkState.STOPPED:
        events.append((WorkEvent.Kind.STOPPED, values["stopped_at"] or now))
    return events


@dataclass
class Recorded:
    """What one batch changed: ids of new rows, of rows whose upstream fields changed, of rows only confirmed."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def known(self) -> int:
        """Rows the index already had."""
        return len(self.changed) + len(self.confirmed) + len(self.skipped)


def stopped_retention() -> timedelta:
    return timedelta(hours=float(settings.INDEX_STOPPED_RETENTION_HOURS))


def record_items(
    environment_id: str,
    items: Sequence[WorkItem],
    *,
    confirmed_at: datetime,
    page_cursor: str | None = None,
    timeline: bool = True,
    now: datetime | None = None,
) -> Recorded:
    """Upsert ``items`` (all of ``environment_id``) as read from the upstream at ``confirmed_at``.

    ``page_cursor``: the list cursor the items were read with (None for a retrieve: the row keeps its cursor).
    ``timeline``: record the events of rows seen for the first time (the fill walk passes False: an old item's
    timeline is read from its row's timestamps, see ``queries.timeline``). Stopped items older than the
    retention are not added.
    """
    now = now or timezone.now()
    result = Recorded()
    by_id = {item.id: item for item in items if item.environment_id == environment_id}
    if not by_id:
        return result
    horizon = now - stopped_retention()
    with transaction.atomic():
        # Locked (on PostgreSQL) for the transaction: a concurrent write of the same item (an action's answer
        # beside the sync's read) waits and then sees this one's state, so a row's stop is counted once.
        existing = {
            row.work_id: row
            for row in IndexedWork.objects.select_for_update()
            .filter(environment_id=environment_id, work_id__in=list(by_id))
            .order_by("pk")
        }
        stopped_delta = 0
        creates: list[IndexedWork] = []
        updates: list[IndexedWork] = []
        events: list[WorkEvent] = []
        only_confirmed: list[int] = []
        for work_id, item in by_id.items():
            values = row_values(item)
            row = existing.get(work_id)
            if row is None:
                if item.state == WorkState.STOPPED and (item.stopped_at or item.created_at) < horizon:
                    result.skipped.append(work_id)
                    continue
                creates.append(
                    IndexedWork(
                        environment_id=environment_id,
                        work_id=work_id,
                        confirmed_at=confirmed_at,
                        first_seen_at=now,
                        page_cursor=page_cursor or "",
                        **values,
                    )
                )
                if timeline:
                    events.extend(
                        WorkEvent(
                            environment_id=environment_id, work_id=work_id, kind=k, at=at, observed_at=now
                        )
                        for k, at in _events_of_new(values)
                    )
                result.new.append(work_id)
                stopped_delta += item.state == WorkState.STOPPED
                continue
            if row.confirmed_at > confirmed_at:
                result.skipped.append(work_id)  # a newer answer (an action's) is already there
                continue
            changed = any(getattr(row, name) != value for name, value in values.items())
            if not changed and (page_cursor is None or page_cursor == row.page_cursor):
                only_confirmed.append(row.pk)
                result.confirmed.append(work_id)
                continue
            events.extend(
                WorkEvent(environment_id=environment_id, work_id=work_id, kind=k, at=at, observed_at=now)
                for k, at in _events_of_change(row, values, now)
            )
            stopped_delta += (values["state"] == WorkState.STOPPED) - (row.state == WorkState.STOPPED)
            for name, value in values.items():
                setattr(row, name, value)
            row.confirmed_at = confirmed_at
            if page_cursor is not None:
                row.page_cursor = page_cursor
            updates.append(row)
            (result.changed if changed else result.confirmed).append(work_id)
        if creates:
            IndexedWork.objects.bulk_create(creates, batch_size=500)
        if updates:
            IndexedWork.objects.bulk_update(
                updates, [*UPSTREAM_FIELDS, "confirmed_at", "page_cursor"], batch_size=500
            )
        if only_confirmed:
            IndexedWork.objects.filter(pk__in=only_confirmed).update(confirmed_at=confirmed_at)
        if events:
            WorkEvent.objects.bulk_create(events, batch_size=500)
        _count_stopped(environment_id, stopped_delta)
    return result


def _count_stopped(environment_id: str, delta: int) -> None:
    """Add ``delta`` to the environment's stopped rows (``IndexedEnvironment.stopped_rows``), in the caller's
    transaction, so the count moves with the rows."""
    if not delta:
        return
    counted = IndexedEnvironment.objects.filter(environment_id=environment_id)
    if not counted.update(stopped_rows=F("stopped_rows") + delta):
        IndexedEnvironment.objects.get_or_create(environment_id=environment_id)
        counted.update(stopped_rows=F("stopped_rows") + delta)


def record_answer(item: WorkItem, *, at: datetime | None = None) -> None:
    """An action's answer from the upstream (stop, force-stop, metadata patch): the index shows it at once.

    Never raises: the action has happened whatever the index does, so a failure here is logged only.
    """
    try:
        record_items(item.environment_id, [item], confirmed_at=at or timezone.now())
    except Exception:
        logger.exception("Could not write %s's new state to the work index", item.id)


def forget_missing(environment_id: str, work_ids: Iterable[str]) -> int:
    """Items the upstream says do not exist (404 on retrieve) leave the index."""
    ids = list(work_ids)
    if not ids:
        return 0
    with transaction.atomic():
        WorkEvent.objects.filter(environment_id=environment_id, work_id__in=ids).delete()
        rows = IndexedWork.objects.filter(environment_id=environment_id, work_id__in=ids)
        # The stopped ones apart, so the environment's stopped count loses exactly what was deleted.
        stopped, _ = rows.filter(state=WorkState.STOPPED).delete()
        others, _ = rows.delete()
        _count_stopped(environment_id, -stopped)
    return stopped + others


def prune(now: datetime | None = None, *, batch: int = 5000) -> int:
    """Remove stopped items stopped longer ago than ``INDEX_STOPPED_RETENTION_HOURS`` (the upstream keeps them;
    a page asking for one falls back to ``retrieve_fallback``), and their timeline events."""
    now = now or timezone.now()
    horizon = now - stopped_retention()
    removed = 0
    while True:
        rows = list(
            IndexedWork.objects.filter(state=WorkState.STOPPED, stopped_at__lt=horizon).values_list(
                "pk", "environment_id", "work_id"
            )[:batch]
        )
        if not rows:
            return removed
        with transaction.atomic():
            by_env: dict[str, list[str]] = {}
            for _, environment_id, work_id in rows:
                by_env.setdefault(environment_id, []).append(work_id)
            for environment_id, ids in by_env.items():
                WorkEvent.objects.filter(environment_id=environment_id, work_id__in=ids).delete()
            for environment_id in by_env:
                pks = [pk for pk, env, _ in rows if env == environment_id]
                deleted, _ = IndexedWork.objects.filter(pk__in=pks, state=WorkState.STOPPED).delete()
                _count_stopped(environment_id, -deleted)
        removed += len(rows)


def environment_state(environment_id: str) -> IndexedEnvironment:
    state, _ = IndexedEnvironment.objects.get_or_create(environment_id=environment_id)
    return state


# --- The sync ------------------------------------------------------------------------------------------------------

PAGE_SIZE = 100  # the list endpoint's largest page: one request confirms up to 100 rows
NO_PAGE = "-"  # page_cursor of a row its page no longer returned: refreshed by retrieve
MAX_PAUSE_SECONDS = 300.0


class RequestWindow:
    """The upstream requests one environment's feed made in the last minute (this process holds its lease, so it
    is the only one making them)."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def spent(self, now: float) -> int:
        while self._times and self._times[0] <= now - 60.0:
            self._times.popleft()
        return len(self._times)

    def note(self, now: float, count: int = 1) -> None:
        self._times.extend([now] * count)


@dataclass
class SyncRound:
    """What one round did, for the snapshot, the logs and the tests."""

    requests: int = 0
    walk_pages: int = 0
    head_pages: int = 0
    refresh_pages: int = 0
    retrieved: int = 0
    new: int = 0
    changed: int = 0
    paused_until: datetime | None = None
    error: WorkAPIError | None = None
    filled: bool = False
    # When the head read of this round started (None when the round did not read the whole head).
    head_read_at: datetime | None = None


class _OutOfBudget(Exception):
    pass


def _live_rows_to_refresh(
    environment_id: str, confirmed_before: datetime, limit: int, exclude: set[str]
) -> list[tuple[str, str]]:
    """(work_id, page_cursor) of live rows last confirmed before ``confirmed_before``: stuck ones first (they are
    on the stuck page: it should be right), then the least recently confirmed."""
    from dashboard.index.queries import stuck_filter

    base = IndexedWork.objects.filter(
        environment_id=environment_id, confirmed_at__lt=confirmed_before
    ).exclude(state=WorkState.STOPPED)
    picked: list[tuple[str, str]] = []
    seen: set[str] = set(exclude)
    for query in (base.filter(stuck_filter()), base):
        for work_id, cursor in query.order_by("confirmed_at", "id").values_list("work_id", "page_cursor")[
            :limit
        ]:
            if work_id not in seen:
                seen.add(work_id)
                picked.append((work_id, cursor))
        if len(picked) >= limit:
            break
    return picked[:limit]


def _known_ids(environment_id: str, work_ids: list[str]) -> set[str]:
    return set(
        IndexedWork.objects.filter(environment_id=environment_id, work_id__in=work_ids).values_list(
            "work_id", flat=True
        )
    )


def _mark_off_page(environment_id: str, work_ids: list[str]) -> None:
    IndexedWork.objects.filter(environment_id=environment_id, work_id__in=work_ids).update(
        page_cursor=NO_PAGE
    )


def _save_state(environment_id: str, changes: dict[str, Any]) -> IndexedEnvironment:
    state = environment_state(environment_id)
    for name, value in changes.items():
        setattr(state, name, value)
    live = IndexedWork.objects.filter(environment_id=environment_id).exclude(state=WorkState.STOPPED)
    state.oldest_confirmed_at = live.order_by("confirmed_at").values_list("confirmed_at", flat=True).first()
    state.save()
    return state


class EnvironmentSync:
    """Keeps one environment's rows in step with the upstream, within ``INDEX_REQUESTS_PER_MINUTE``.

    Driven by the live feed (``round``) while this instance holds the environment's lease. Each round, within what
    the budget leaves (requests in the last minute, less what the feed's own stats polls need):

    1. the head: the newest page, and the next ones while every item on them is new (until known items);
    2. watched items (someone has their page open), by retrieve;
    3. while the index is filling, the fill walk: the next pages of the whole list, oldest last; the cursor is
       saved after each page, so a restart carries on where it stopped and never reads a page twice;
    4. live rows (not ``stopped``: a stopped item is final), stuck ones first, then the least recently confirmed:
       a page re-read when two or more of them were last seen on it (one request confirms them all), a retrieve
       otherwise.

    A 429 or 529 ends the round and pauses the environment's feed (stats included) until the ``retry-after`` the
    upstream gave, or a back-off that doubles with each one (the interval, twice it, … at most 5 minutes); the
    pause is stored, so pages say "slowed down by the Work API until …". Any other failure ends the round; the
    next interval tries again.
    """

    def __init__(self, environment_id: str, *, interval: float, budget_per_minute: int | None = None) -> None:
        self.environment_id = environment_id
        self.interval = float(interval)
        # What the latest pause answered (429 or 529) and its request-id, for the screens to name it.
        self.paused_status: int | None = None
        self.paused_request_id = ""
        self.budget_per_minute = int(budget_per_minute or settings.INDEX_REQUESTS_PER_MINUTE)
        self.window = RequestWindow()
        # Every stop and acknowledgement the upstream made before this moment is in the index: the head was read
        # after it and every live row was confirmed after it (None until a round has shown that). The history
        # writes a minute's sample once this has passed the minute's end (``dashboard.index.history``).
        self.confirmed_as_of: datetime | None = None
        self.filled = False

    # -- budget ---------------------------------------------------------------------------------------------------

    def stats_per_minute(self) -> int:
        return math.ceil(60.0 / self.interval)

    def allowance(self, now: float) -> int:
        """Requests the sync may make this round: what the minute has left after the stats polls' share, and at
        most twice its even share of the minute (so a fill walk is spread out rather than one burst a minute)."""
        sync_share = max(1, self.budget_per_minute - self.stats_per_minute())
        per_round = max(1, math.ceil(2 * sync_share * self.interval / 60.0))
        left = self.budget_per_minute - self.window.spent(now) - 1  # keep one for the next stats poll
        return max(0, min(per_round, left))

    def may_poll_stats(self, now: float) -> bool:
        return self.window.spent(now) < self.budget_per_minute

    def note_request(self) -> None:
        self.window.note(time.monotonic())

    # -- pauses ---------------------------------------------------------------------------------------------------

    async def paused_until(self) -> datetime | None:
        state = await database_sync_to_async(environment_state)(self.environment_id)
        until = state.rate_limited_until
        if state.rate_limited_status is not None:
            self.paused_status = state.rate_limited_status
        return until if until is not None and until > timezone.now() else None

    async def slow_down(self, exc: WorkAPIError) -> datetime:
        """Record a 429/529 and pause the feed until the upstream's retry-after, else a doubling back-off."""

        def save() -> datetime:
            state = environment_state(self.environment_id)
            count = state.rate_limited_count + 1
            wait = (
                exc.retry_after
                if exc.retry_after and exc.retry_after > 0
                else self.interval * 2 ** (count - 1)
            )
            now = timezone.now()
            until = now + timedelta(seconds=min(MAX_PAUSE_SECONDS, max(wait, self.interval)))
            IndexedEnvironment.objects.filter(pk=state.pk).update(
                rate_limited_until=until,
                rate_limited_status=exc.status,
                rate_limited_at=now,
                rate_limited_count=count,
                last_error=str(exc)[:500],
            )
            return until

        self.paused_status = exc.status
        self.paused_request_id = exc.request_id or ""
        return await database_sync_to_async(save)()

    async def recovered(self) -> None:
        """A round went through: the back-off starts from the interval again next time."""

        def save() -> None:
            IndexedEnvironment.objects.filter(
                environment_id=self.environment_id, rate_limited_count__gt=0
            ).update(rate_limited_count=0, rate_limited_until=None)

        await database_sync_to_async(save)()

    # -- one round ------------------------------------------------------------------------------------------------

    async def round(self, client: Any, key: str | None, watched: Iterable[str] = ()) -> SyncRound:
        result = SyncRound()
        state = await database_sync_to_async(environment_state)(self.environment_id)
        budget = [self.allowance(time.monotonic())]

        def spend() -> None:
            if budget[0] <= 0:
                raise _OutOfBudget
            budget[0] -= 1
            result.requests += 1
            self.note_request()

        changes: dict[str, Any] = {}
        try:
            if key is not None:
                if state.walk_pages == 0 and not state.filled:
                    await self._walk_page(client, key, state, changes, result, spend)
                else:
                    await self._head(client, key, result, spend)
            await self._watched(client, set(watched), result, spend)
            if key is not None and not state.filled:
                # The fill takes half of what is left, refreshing live rows the other half.
                walk_budget = max(1, budget[0] // 2) if budget[0] > 0 else 0
                while walk_budget > 0 and not changes.get("filled", state.filled):
                    await self._walk_page(client, key, state, changes, result, spend)
                    walk_budget -= 1
            await self._refresh(client, key, set(watched), budget, result, spend)
        except _OutOfBudget:
            pass
        except WorkAPIError as exc:
            result.error = exc
            if exc.kind in ("rate_limited", "overloaded"):
                result.paused_until = await self.slow_down(exc)
            else:
                changes["last_error"] = str(exc)[:500]
        else:
            changes["last_error"] = ""
        changes["last_sync_at"] = timezone.now()
        changes["requests_last_minute"] = self.window.spent(time.monotonic())
        saved = await database_sync_to_async(_save_state)(self.environment_id, changes)
        result.filled = self.filled = saved.filled
        if result.head_read_at is not None:
            as_of = min(result.head_read_at, saved.oldest_confirmed_at or result.head_read_at)
            if self.confirmed_as_of is None or as_of > self.confirmed_as_of:
                self.confirmed_as_of = as_of
        return result

    async def _walk_page(
        self,
        client: Any,
        key: str,
        state: IndexedEnvironment,
        changes: dict[str, Any],
        result: SyncRound,
        spend: Any,
    ) -> None:
        """One page of the fill walk; its cursor is saved at once, so a restart resumes after it."""
        cursor = changes.get("walk_cursor", state.walk_cursor) or None
        spend()
        started = timezone.now()
        page = await client.list_work(self.environment_id, environment_key=key, limit=PAGE_SIZE, page=cursor)
        recorded = await database_sync_to_async(record_items)(
            self.environment_id, page.data, confirmed_at=started, page_cursor=cursor or "", timeline=False
        )
        result.walk_pages += 1
        result.new += len(recorded.new)
        result.changed += len(recorded.changed)
        changes["walk_pages"] = changes.get("walk_pages", state.walk_pages) + 1
        changes["walk_cursor"] = page.next_page or ""
        if cursor is None:
            changes["walk_started_at"] = started
            changes["head_read_at"] = started
            result.head_read_at = started  # the walk's first page is the head
            if page.data:
                changes["head_work_id"] = page.data[0].id
        if page.next_page is None:
            changes["filled"] = True
            changes["filled_at"] = timezone.now()
        # Saved after every page: a restart carries on from here.
        saved = await database_sync_to_async(_save_state)(self.environment_id, dict(changes))
        state.walk_cursor, state.walk_pages, state.filled = saved.walk_cursor, saved.walk_pages, saved.filled

    async def _head(self, client: Any, key: str, result: SyncRound, spend: Any) -> None:
        """The newest pages, until a page holds an item the index already had."""
        cursor: str | None = None
        head_started: datetime | None = None
        while True:
            spend()
            started = timezone.now()
            head_started = head_started or started
            page = await client.list_work(
                self.environment_id, environment_key=key, limit=PAGE_SIZE, page=cursor
            )
            known = await database_sync_to_async(_known_ids)(self.environment_id, [i.id for i in page.data])
            recorded = await database_sync_to_async(record_items)(
                self.environment_id, page.data, confirmed_at=started, page_cursor=cursor or ""
            )
            result.head_pages += 1
            result.new += len(recorded.new)
            result.changed += len(recorded.changed)
            if known or page.next_page is None:
                result.head_read_at = head_started
                return
            cursor = page.next_page

    async def _watched(self, client: Any, watched: set[str], result: SyncRound, spend: Any) -> None:
        """Items someone is looking at, read fresh (bounded by FEED_MAX_WATCHED_ITEMS)."""
        limit = int(settings.FEED_MAX_WATCHED_ITEMS)
        for work_id in sorted(watched)[:limit]:
            await self._retrieve(client, work_id, result, spend)

    async def _retrieve(self, client: Any, work_id: str, result: SyncRound, spend: Any) -> None:
        spend()
        started = timezone.now()
        try:
            item = await client.retrieve_work(self.environment_id, work_id)
        except NotFound:
            await database_sync_to_async(forget_missing)(self.environment_id, [work_id])
            return
        recorded = await database_sync_to_async(record_items)(
            self.environment_id, [item], confirmed_at=started
        )
        result.retrieved += 1
        result.new += len(recorded.new)
        result.changed += len(recorded.changed)

    async def _refresh(
        self,
        client: Any,
        key: str | None,
        watched: set[str],
        budget: list[int],
        result: SyncRound,
        spend: Any,
    ) -> None:
        """Live rows, least recently confirmed first, a page read where it confirms two or more of them."""
        if budget[0] <= 0:
            return
        fresh_after = timezone.now() - timedelta(seconds=self.interval)
        rows = await database_sync_to_async(_live_rows_to_refresh)(
            self.environment_id, fresh_after, budget[0] * PAGE_SIZE, watched
        )
        by_page: dict[str, list[str]] = {}
        order: list[tuple[str, list[str]]] = []
        for work_id, cursor in rows:
            if key is not None and cursor != NO_PAGE:
                if cursor not in by_page:
                    by_page[cursor] = []
                    order.append((cursor, by_page[cursor]))
                by_page[cursor].append(work_id)
            else:
                order.append((NO_PAGE, [work_id]))
        for cursor, ids in order:
            if cursor == NO_PAGE or len(ids) == 1:
                for work_id in ids:
                    await self._retrieve(client, work_id, result, spend)
                continue
            assert key is not None
            spend()
            started = timezone.now()
            page = await client.list_work(
                self.environment_id, environment_key=key, limit=PAGE_SIZE, page=cursor or None
            )
            await database_sync_to_async(record_items)(
                self.environment_id, page.data, confirmed_at=started, page_cursor=cursor
            )
            result.refresh_pages += 1
            returned = {i.id for i in page.data}
            gone = [work_id for work_id in ids if work_id not in returned]
            if gone:
                # Not on the page it was last read on (the upstream's pages moved): read it alone next time.
                await database_sync_to_async(_mark_off_page)(self.environment_id, gone)
