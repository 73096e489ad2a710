"""What each live region of the pages shows, built once for both its readers: the page's plain GET and the live
feed's socket frame. Both render the same ``{% partialdef %}`` with what is built here, so a first paint and the
next update cannot disagree.

- overview: one tile per environment (``tile_snapshots``), a ``Snapshot`` — the feed's latest queue figures when
  it has them, else read now — with the active and stuck counts of the work index (``index_figures``), which the
  feed puts on its snapshots the same way (``apply_index_figures``); the headline (``overview_context``).

What does not live here: the templates (each region is a partial of its page), polling and publishing (``live.feed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from dashboard.live import conf
from dashboard.live.snapshots import Snapshot, Staleness
from dashboard.live.sparkline import HistoryPoint
from workqueue.records import Environment

if TYPE_CHECKING:
    from dashboard.views import Tile

__all__ = ["IndexFigures", "apply_index_figures", "index_figures", "overview_context", "tile_snapshots"]


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


@dataclass(frozen=True)
class IndexFigures:
    """An environment's active and stuck counts from the work index, and what to say about them."""

    active: int
    stuck: int
    total: int
    note: str = ""
    mark: str = ""


def index_figures(environment_ids: Sequence[str], now: datetime) -> dict[str, IndexFigures]:
    """The counts every tile, headline, wall tile and metric shows, read at one moment ``now``."""
    from dashboard.index import queries
    from dashboard.index.models import IndexedEnvironment

    ids = list(environment_ids)
    counts = queries.environment_counts(ids, now)
    filled = dict(
        IndexedEnvironment.objects.filter(environment_id__in=ids).values_list("environment_id", "filled")
    )
    figures = {}
    for environment_id in ids:
        found = counts.get(environment_id) or queries.Counts(environment_id)
        note = "" if filled.get(environment_id) else "The work index is still filling: counts may grow."
        figures[environment_id] = IndexFigures(found.active, found.stuck, found.total, note, found.mark)
    return figures


NO_KEY_NOTE = "No environment key: active and stuck counts need one."


def apply_index_figures(
    snapshot: Snapshot, figures: IndexFigures | None, *, has_key: bool = True, keep_note: bool = False
) -> Snapshot:
    """Put the index's counts on a snapshot (the feed's or the page's), the same way for both. ``keep_note``: a
    note the snapshot already carries (the feed's failure to read the work list) stays."""
    if not has_key:
        snapshot.active = snapshot.stuck = None
        snapshot.counts_note = NO_KEY_NOTE
    elif figures is not None:
        snapshot.active, snapshot.stuck = figures.active, figures.stuck
        snapshot.listed, snapshot.counts_capped = figures.total, False
        snapshot.index_mark = figures.mark
        if not (keep_note and snapshot.counts_note):
            snapshot.counts_note = figures.note
    return snapshot


def snapshot_of_tile(tile: Tile, now: datetime, history: list[HistoryPoint]) -> Snapshot:
    """A tile read by the page itself (no feed has run for it yet), in the shape the feed publishes."""
    snapshot = Snapshot(
        environment_id=tile.environment.id,
        name=tile.environment.name,
        at=now if tile.stats is not None else None,
        published_at=now,
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
    return snapshot


async def tile_snapshots(c: Any, environments: Sequence[Environment], now: datetime) -> list[Snapshot]:
    """Each environment's tile: the feed's latest queue figures where one is cached, else read from the upstream
    now; the active and stuck counts from the work index, as the feed's next frame will have them."""
    from dashboard import upstream
    from dashboard.live.feed import read_cached, shared_state
    from dashboard.views import environment_tile, gather_bounded

    ids = [env.id for env in environments]
    async with shared_state() as coordinator:
        cached = await read_cached(coordinator, ids)
    history = await sync_to_async(_history)(ids, now)
    figures = await sync_to_async(index_figures)(ids, now)
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
            snapshot = Snapshot.from_numbers(env.id, env.name, found, history[env.id])
            has_key = await upstream.environment_key(env.id) is not None
        else:
            snapshot = snapshot_of_tile(read[env.id], now, history[env.id])
            has_key = read[env.id].has_key
        snapshots.append(apply_index_figures(snapshot, figures.get(env.id), has_key=has_key))
    return snapshots


def overview_context(tiles: Sequence[Snapshot], now: datetime) -> dict[str, Any]:
    """The overview's headline and tiles, for the page's GET and the feed's frame alike."""
    from dashboard.index import queries

    return {
        "tiles": list(tiles),
        "checked_at": now,
        "starving_count": sum(1 for tile in tiles if tile.starving),
        "stuck_total": sum(tile.stuck or 0 for tile in tiles),
        "freshness": queries.freshness(now=now),
    }
