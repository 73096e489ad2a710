"""What each live region of the pages shows, built once for both its readers: the page's plain GET and the live
feed's socket frame. Both render the same ``{% partialdef %}`` with what is built here, so a first paint and the
next update cannot disagree.

- overview: one tile per environment (``tile_snapshots``), a ``Snapshot`` — the feed's latest when it has one,
  else read now.

What does not live here: the templates (each region is a partial of its page), polling and publishing (``live.feed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from dashboard.live import conf
from dashboard.live.snapshots import Snapshot, Staleness
from dashboard.live.sparkline import HistoryPoint
from workqueue.records import Environment

if TYPE_CHECKING:
    from dashboard.views import Tile

__all__ = ["tile_snapshots"]


def _history(environment_ids: Sequence[str], now: datetime) -> dict[str, list[HistoryPoint]]:
    from dashboard.live.models import QueueSample

    since = now - timedelta(seconds=conf.history_window_seconds())
    history: dict[str, list[HistoryPoint]] = {e: [] for e in environment_ids}
    rows = QueueSample.objects.filter(environment_id__in=list(environment_ids), at__gte=since).order_by("at")
    for row in rows.only("environment_id", "at", "depth", "pending", "workers_polling")[:20000]:
        history[row.environment_id].append(
            HistoryPoint(at=row.at, depth=row.depth, pending=row.pending, workers_polling=row.workers_polling)
        )
    return history


def snapshot_of_tile(tile: Tile, now: datetime, history: list[HistoryPoint]) -> Snapshot:
    """A tile read by the page itself (no feed has run for it yet), in the shape the feed publishes."""
    snapshot = Snapshot(
        environment_id=tile.environment.id,
        name=tile.environment.name,
        at=now if tile.stats is not None else None,
        published_at=now,
        active=tile.active,
        stuck=tile.stuck,
        listed=tile.scanned,
        counts_capped=tile.scan_capped,
        history=history,
    )
    if tile.stats is not None:
        snapshot.depth = tile.stats.depth
        snapshot.pending = tile.stats.pending
        snapshot.workers_polling = tile.stats.workers_polling
        snapshot.oldest_queued_at = tile.stats.oldest_queued_at
    elif tile.stats_failure is not None:
        failure = tile.stats_failure
        snapshot.stale = Staleness(
            since=now,
            reason=str(failure["title"]),
            detail=str(failure["message"]),
            kind=str(failure["kind"]),
            request_id=str(failure["request_id"]),
            status=failure.get("status"),
        )
    if not tile.has_key:
        snapshot.counts_note = "No environment key: active and stuck counts need one."
    elif tile.work_failure is not None:
        failure = tile.work_failure
        request_id = f" (request id {failure['request_id']})" if failure["request_id"] else ""
        snapshot.counts_note = f"Active and stuck counts not updated: {failure['title']}{request_id}."
    return snapshot


async def tile_snapshots(c: Any, environments: Sequence[Environment], now: datetime) -> list[Snapshot]:
    """Each environment's tile: the feed's latest snapshot where one is cached, else read from the upstream now."""
    from dashboard.live.feed import read_cached, shared_state
    from dashboard.views import environment_tile, gather_bounded

    ids = [env.id for env in environments]
    async with shared_state() as coordinator:
        cached = await read_cached(coordinator, ids)
    history = await sync_to_async(_history)(ids, now)
    numbers = {
        env.id: (payload or {}).get("numbers") for env, payload in zip(environments, cached, strict=True)
    }
    unread = [env for env in environments if not numbers[env.id]]
    read = dict(
        zip(
            [env.id for env in unread],
            await gather_bounded([environment_tile(c, env, now) for env in unread]),
            strict=True,
        )
    )
    snapshots = []
    for env in environments:
        found = numbers[env.id]
        if found:
            snapshots.append(Snapshot.from_numbers(env.id, env.name, found, history[env.id]))
        else:
            snapshots.append(snapshot_of_tile(read[env.id], now, history[env.id]))
    return snapshots
