"""The overview's one-hour chart of depth, pending and workers polling, as inline SVG rendered on the server.

Plain SVG paths with classes (colours come from the stylesheet), no script and no style attribute, so it is safe
under the Content-Security-Policy and costs the browser nothing but a node swap when a snapshot replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

WIDTH = 240
HEIGHT = 48
PAD = 2
# One point per half minute over the hour: enough detail for a glance, few enough nodes for a wall left on for days.
BUCKETS = 120


@dataclass(frozen=True)
class HistoryPoint:
    at: datetime
    depth: int
    pending: int
    workers_polling: int | None


def _series(values: list[float | None], scale: float) -> str:
    """An SVG path; a gap in the data (no sample in a bucket) breaks the line instead of drawing across it."""
    parts: list[str] = []
    run = 0
    step = (WIDTH - 2 * PAD) / (BUCKETS - 1)
    for index, value in enumerate([*values, None]):
        if value is None:
            if run == 1:
                parts.append("h-3")  # a lone sample still shows, as a short dash
            run = 0
            continue
        x = PAD + index * step
        y = HEIGHT - PAD - (value / scale) * (HEIGHT - 2 * PAD)
        parts.append(f"{'L' if run else 'M'}{x:.1f} {y:.1f}")
        run += 1
    return " ".join(parts)


def sparkline(points: Sequence[HistoryPoint], now: datetime, window_seconds: float = 3600.0) -> SafeString:
    """The chart for ``points`` over the ``window_seconds`` before ``now``; the largest value in each bucket."""
    start = now.timestamp() - window_seconds
    width = window_seconds / BUCKETS
    depth: list[float | None] = [None] * BUCKETS
    pending: list[float | None] = [None] * BUCKETS
    workers: list[float | None] = [None] * BUCKETS
    for point in points:
        index = int((point.at.timestamp() - start) // width)
        if not 0 <= index < BUCKETS:
            continue
        depth[index] = max(depth[index] or 0, point.depth)
        pending[index] = max(pending[index] or 0, point.pending)
        if point.workers_polling is not None:
            workers[index] = max(workers[index] or 0, point.workers_polling)
    peak = max([v for series in (depth, pending, workers) for v in series if v is not None], default=0.0)
    scale = max(peak, 1.0)
    known = [p for p in points if p.at.timestamp() >= start]
    if known:
        label = (
            f"Last hour: queued up to {max(p.depth for p in known)}, pending up to {max(p.pending for p in known)}, "
            f"workers polling up to {max((p.workers_polling or 0) for p in known)}."
        )
    else:
        label = "Last hour: no samples yet."
    paths = mark_safe(
        "".join(
            format_html('<path class="spark-{}" d="{}"></path>', name, _series(series, scale))
            for name, series in (("depth", depth), ("pending", pending), ("workers", workers))
        )
    )
    return format_html(
        '<svg class="sparkline" viewBox="0 0 {} {}" width="{}" height="{}" role="img" preserveAspectRatio="none">'
        "<title>{}</title>"
        '<line class="spark-axis" x1="{}" y1="{}" x2="{}" y2="{}"></line>{}</svg>',
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        label,
        PAD,
        HEIGHT - PAD,
        WIDTH - PAD,
        HEIGHT - PAD,
        paths,
    )
