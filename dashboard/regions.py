"""What each live region of the pages shows, built once for both its readers: the page's plain GET and the live
feed's socket frame. Both render the same ``{% partialdef %}`` with what is built here, so a first paint and the
next update cannot disagree.

- overview: one tile per environment (``tile_snapshots``), a ``Snapshot`` — the feed's latest queue figures when
  it has them, else read now — with the active and stuck counts of the work index (``index_figures``), which the
  feed puts on its snapshots the same way (``apply_index_figures``); the headline (``overview_context``).
- environment page: the History section's three charts over a window (``history_region``), from the minute samples
  of ``dashboard.index.history``; it refreshes itself once a minute.

What does not live here: the templates (each region is a partial of its page), polling and publishing (``live.feed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.utils.safestring import SafeString

from dashboard.index import history
from dashboard.live import conf, sparkline
from dashboard.live.snapshots import Snapshot, Staleness
from dashboard.live.sparkline import HistoryPoint
from workqueue.records import Environment, QueueStats

if TYPE_CHECKING:
    from dashboard.index import queries
    from dashboard.views import Tile

__all__ = [
    "HistoryChart",
    "HistoryRegion",
    "IndexFigures",
    "apply_index_figures",
    "history_region",
    "index_figures",
    "headline_context",
    "headline_figures",
    "overview_context",
    "tile_snapshots",
]


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
    return {
        environment_id: figures_of(
            counts.get(environment_id) or queries.Counts(environment_id),
            filled=bool(filled.get(environment_id)),
        )
        for environment_id in ids
    }


def figures_of(counts: queries.Counts, *, filled: bool) -> IndexFigures:
    """``IndexFigures`` from counts already read (``filled``: the environment's index has been walked once)."""
    note = "" if filled else "The work index is still filling: counts may grow."
    return IndexFigures(counts.active, counts.stuck, counts.total, note, counts.mark)


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
    return snapshot_of_stats(
        tile.environment.id, tile.environment.name, tile.stats, tile.stats_failure, now, history
    )


def snapshot_of_stats(
    environment_id: str,
    name: str,
    stats: QueueStats | None,
    failure: dict[str, Any] | None,
    now: datetime,
    history: list[HistoryPoint] | None = None,
) -> Snapshot:
    """Queue stats a page read itself (or the failure to read them), in the shape the feed publishes, so the page's
    first paint renders the same partial the feed's frames do."""
    snapshot = Snapshot(
        environment_id=environment_id,
        name=name,
        at=now if stats is not None else None,
        published_at=now,
        history=history or [],
    )
    if stats is not None:
        snapshot.depth = stats.depth
        snapshot.pending = stats.pending
        snapshot.workers_polling = stats.workers_polling
        snapshot.oldest_queued_at = stats.oldest_queued_at
    elif failure is not None:
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
    # Which environments have a key, in one read (not one thread hop and query per tile).
    keyed = await upstream.keyed_environments() if len(read) < len(environments) else set()
    snapshots = []
    for env in environments:
        found = numbers[env.id]
        if found:
            snapshot = Snapshot.from_numbers(env.id, env.name, found, history[env.id])
            has_key = env.id in keyed
        else:
            snapshot = snapshot_of_tile(read[env.id], now, history[env.id])
            has_key = read[env.id].has_key
        snapshots.append(apply_index_figures(snapshot, figures.get(env.id), has_key=has_key))
    return snapshots


def headline_context(tiles: Sequence[Snapshot], now: datetime) -> dict[str, Any]:
    """The overview's headline, summed over the environments' tiles: stuck items, and environments where work
    waits and no worker polls. The page's GET sums the tiles it drew; the feed sums every environment's cached
    snapshot (whichever instance feeds it), so both say the same."""
    from dashboard.index import queries

    stuck_total, starving_count = headline_figures(tiles)
    return {
        "checked_at": now,
        "starving_count": starving_count,
        "stuck_total": stuck_total,
        "freshness": queries.freshness(now=now),
    }


def headline_figures(tiles: Sequence[Snapshot]) -> tuple[int, int]:
    """The headline's two numbers: stuck items over every tile, and tiles where work waits and no worker polls."""
    return sum(tile.stuck or 0 for tile in tiles), sum(1 for tile in tiles if tile.starving)


def overview_context(tiles: Sequence[Snapshot], now: datetime) -> dict[str, Any]:
    """The overview's headline and tiles, for the page's GET."""
    return {"tiles": list(tiles), **headline_context(tiles, now)}


# --- The environment page's history -------------------------------------------------------------------------------


@dataclass
class HistoryChart:
    """One chart of the History section: its SVG (with axes and a title per bucket) and the sentence that says
    what it shows, for everyone (the SVG's accessible description too)."""

    name: str
    heading: str
    svg: SafeString
    summary: str
    legend: tuple[tuple[str, str], ...] = ()


@dataclass
class HistoryRegion:
    window: history.Window
    windows: tuple[history.Window, ...]
    charts: list[HistoryChart]
    # How long samples are kept (``HISTORY_RETENTION_HOURS``), in words.
    kept: str = ""
    # Said instead of the charts when the window holds no sample at all.
    empty: str = ""


def _span(window: history.Window) -> str:
    return f"the last {window.label}"


def history_region(environment_id: str, window: history.Window, now: datetime) -> HistoryRegion:
    """The three charts of an environment's history over ``window``: stuck items, items stopped a minute, and the
    time work waits before it is acknowledged (p50 and p95), from at most ``history.MAX_BUCKETS`` buckets."""
    found = history.buckets(environment_id, window, now)
    from dashboard.templatetags.dashboard_pages import duration_text

    region = HistoryRegion(
        window=window,
        windows=history.WINDOWS,
        charts=[],
        kept=duration_text(conf.history_retention_hours() * 3600),
    )
    if not any(b.samples for b in found):
        region.empty = (
            f"No history for {_span(window)} yet. The dashboard writes one sample a minute while it follows this "
            "environment, once its work index is filled (which needs the environment key)."
        )
        return region
    latest = history.latest(environment_id, found[0].start)
    starts, ends = [b.start for b in found], [b.end for b in found]
    wide = window.bucket_minutes > 1
    each = f"{window.bucket_minutes}-minute" if wide else "minute"
    up_to = "up to " if wide else ""
    sampled = [b for b in found if b.samples]

    def seconds(value: float | None) -> str:
        return sparkline.value_text(value, "seconds") if value is not None else "—"

    stuck_peak = max(b.stuck or 0 for b in sampled)
    stuck_hover = [f"{up_to}{b.stuck} stuck" if b.samples else "no sample" for b in found]
    stuck_summary = f"Stuck items over {_span(window)}: at most {stuck_peak}"
    if latest is not None:
        stuck_summary += f", latest {latest.stuck} (at {latest.at:%H:%M} UTC)"
    region.charts.append(
        HistoryChart(
            name="stuck",
            heading="Stuck items",
            svg=sparkline.axis_chart(
                chart_id="history-stuck",
                title=f"Stuck items over {_span(window)}, the highest count of each {each}",
                starts=starts,
                ends=ends,
                lines=[sparkline.ChartLine("stuck", "stuck", [b.stuck for b in found])],
                y_label="Stuck items",
                kind="count",
                hover=stuck_hover,
            ),
            summary=stuck_summary + ".",
        )
    )

    stopped_total = sum(b.stopped or 0 for b in sampled)
    busiest = max(b.stopped_per_minute or 0.0 for b in sampled)
    stopped_hover = [
        (
            (f"{b.stopped} stopped, {sparkline.value_text(b.stopped_per_minute or 0.0, 'rate')} a minute")
            if wide
            else f"{b.stopped} stopped"
        )
        if b.samples
        else "no sample"
        for b in found
    ]
    busiest_text = sparkline.value_text(busiest, "rate")
    stopped_summary = f"Items stopped over {_span(window)}: {stopped_total}; " + (
        f"busiest {window.bucket_minutes} minutes: {busiest_text} a minute"
        if wide
        else f"busiest minute: {busiest_text}"
    )
    if latest is not None:
        stopped_summary += f"; latest minute: {round(latest.stopped_per_minute)}"
    region.charts.append(
        HistoryChart(
            name="stopped",
            heading="Items stopped a minute",
            svg=sparkline.axis_chart(
                chart_id="history-stopped",
                title=f"Items stopped a minute over {_span(window)}"
                + (f", averaged over each {each}" if wide else ""),
                starts=starts,
                ends=ends,
                lines=[sparkline.ChartLine("stopped", "stopped", [b.stopped_per_minute for b in found])],
                y_label="Stopped a minute",
                kind="rate",
                hover=stopped_hover,
            ),
            summary=stopped_summary + ".",
        )
    )

    acked = [b for b in sampled if b.ack_p95_seconds is not None]
    ack_hover = [
        (
            f"p50 {up_to}{seconds(b.ack_p50_seconds)}, p95 {up_to}{seconds(b.ack_p95_seconds)}"
            if b.ack_p95_seconds is not None
            else "nothing acknowledged"
        )
        if b.samples
        else "no sample"
        for b in found
    ]
    if acked:
        ack_summary = (
            f"Time to acknowledge over {_span(window)}: p50 at most "
            f"{seconds(max(b.ack_p50_seconds or 0.0 for b in acked))}, p95 at most "
            f"{seconds(max(b.ack_p95_seconds or 0.0 for b in acked))}"
        )
        if latest is not None and latest.ack_p95_seconds is not None:
            ack_summary += f"; latest minute: p50 {seconds(latest.ack_p50_seconds)}, p95 {seconds(latest.ack_p95_seconds)}"
        ack_summary += "."
    else:
        ack_summary = f"No item was acknowledged in {_span(window)}."
    region.charts.append(
        HistoryChart(
            name="ack",
            heading="Time to acknowledge",
            svg=sparkline.axis_chart(
                chart_id="history-ack",
                title=f"Time from creation to acknowledgement over {_span(window)}, p50 and p95"
                + (f", the highest of each {each}" if wide else ""),
                starts=starts,
                ends=ends,
                lines=[
                    sparkline.ChartLine("p50", "p50", [b.ack_p50_seconds for b in found]),
                    sparkline.ChartLine("p95", "p95", [b.ack_p95_seconds for b in found]),
                ],
                y_label="Time to acknowledge",
                kind="seconds",
                hover=ack_hover,
            ),
            summary=ack_summary,
            legend=(("p50", "p50 (median)"), ("p95", "p95")),
        )
    )
    return region
