"""Charts as inline SVG rendered on the server: the overview's one-hour sparkline of depth, pending and workers
polling (``sparkline``), and the environment page's history charts with axes and hover values (``axis_chart``).

Plain SVG paths with classes (colours come from the stylesheet), no script and no style attribute, so it is safe
under the Content-Security-Policy and costs the browser nothing but a node swap when a snapshot replaces it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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


# --- Charts with axes: the environment page's history -----------------------------------------------------------
#
# The same drawing as the sparkline (SVG paths with classes, gaps break the line), with what a chart read on its own
# needs: labelled axes with ticks, and a <title> per bucket, which the browser shows on hover (and screen readers
# read). Tick labels carry their moment in ``data-at`` so ``static/app.js`` can show them in the viewer's local time
# when they chose it; without script they read in UTC, and say so.

CHART_WIDTH = 640
CHART_HEIGHT = 200
CHART_LEFT = 64
CHART_RIGHT = 24
CHART_TOP = 12
CHART_BOTTOM = 44

_TIME_STEPS = tuple(timedelta(minutes=m) for m in (5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080))
_SECOND_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400)


@dataclass(frozen=True)
class ChartLine:
    """One line of a chart: ``name`` picks its colour (``chart-line-<name>``), ``label`` names it in the legend."""

    name: str
    label: str
    values: Sequence[float | None]


def value_text(value: float, kind: str) -> str:
    """A value as its axis and hover text say it: ``count`` (whole items), ``rate`` (items a minute) or
    ``seconds`` (a duration)."""
    if kind == "seconds":
        return _seconds_text(value)
    if kind == "rate":
        return (
            f"{value:.0f}" if value == int(value) or value >= 10 else f"{value:.1f}".rstrip("0").rstrip(".")
        )
    return f"{round(value)}"


def _seconds_text(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}".rstrip("0").rstrip(".") + " s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes = seconds / 60
        return (f"{minutes:.0f}" if minutes >= 10 or minutes == int(minutes) else f"{minutes:.1f}") + " min"
    hours = seconds / 3600
    return (f"{hours:.0f}" if hours >= 10 or hours == int(hours) else f"{hours:.1f}") + " h"


def value_ticks(peak: float, kind: str) -> list[float]:
    """Round values from 0 to at least ``peak`` for the y axis: five at most (1, 2 or 5 times a power of ten; for
    durations, whole seconds, minutes or hours)."""
    top = peak if peak > 0 else 1.0
    if kind == "seconds":
        top = max(top, 1.0)
        step = next((float(s) for s in _SECOND_STEPS if top / s <= 4), None)
        if step is None:
            step = float(math.ceil(top / 4 / 86400) * 86400)
    else:
        if kind == "count":
            top = max(top, 1.0)
        magnitude = 10.0 ** math.floor(math.log10(top / 4))
        step = next(m * magnitude for m in (1, 2, 5, 10) if top / (m * magnitude) <= 4)
        if kind == "count":
            step = max(1.0, step)  # whole items
    return [step * n for n in range(math.ceil(top / step - 1e-9) + 1)]


def time_ticks(start: datetime, end: datetime) -> tuple[list[datetime], bool]:
    """Round moments (UTC) between ``start`` and ``end`` for the x axis, at most eight; and whether they are days
    (labelled by date) rather than times of day."""
    span = end - start
    step = next((s for s in _TIME_STEPS if span / s <= 8), _TIME_STEPS[-1])
    seconds = step.total_seconds()
    first = math.ceil(start.timestamp() / seconds) * seconds
    ticks = []
    moment = first
    while moment <= end.timestamp():
        ticks.append(datetime.fromtimestamp(moment, tz=UTC))
        moment += seconds
    return ticks, step >= timedelta(days=1)


def _tick_label(moment: datetime, days: bool) -> str:
    return f"{moment:%a} {moment.day}" if days else f"{moment:%H:%M}"


def span_text(start: datetime, end: datetime) -> str:
    """``12:00–12:12 UTC`` (with the date when the span is not today's in UTC)."""
    day = "" if start.date() == datetime.now(UTC).date() else f"{start:%a} {start.day} "
    return f"{day}{start:%H:%M}–{end:%H:%M} UTC"


def axis_chart(
    *,
    chart_id: str,
    title: str,
    starts: Sequence[datetime],
    ends: Sequence[datetime],
    lines: Sequence[ChartLine],
    y_label: str,
    kind: str,
    hover: Sequence[str],
) -> SafeString:
    """An inline SVG chart of ``lines`` over the buckets ``starts[i]``–``ends[i]``, with a time axis, a value axis
    labelled ``y_label`` (ticks in ``kind``: see ``value_text``) and ``hover[i]`` as the title of bucket ``i``."""
    left, right, top, bottom = CHART_LEFT, CHART_WIDTH - CHART_RIGHT, CHART_TOP, CHART_HEIGHT - CHART_BOTTOM
    t0, t1 = starts[0].timestamp(), ends[-1].timestamp()

    def x(moment: datetime) -> float:
        return left + (moment.timestamp() - t0) / (t1 - t0) * (right - left)

    def n(value: float) -> str:
        # format_html escapes its arguments into strings first: numbers are given as text, one decimal.
        return f"{value:.1f}"

    peak = max((v for line in lines for v in line.values if v is not None), default=0.0)
    ticks = value_ticks(peak, kind)
    scale = ticks[-1] or 1.0

    def y(value: float) -> float:
        return bottom - value / scale * (bottom - top)

    parts: list[str] = []
    for tick in ticks:
        parts.append(
            format_html(
                '<line class="chart-grid" x1="{}" y1="{}" x2="{}" y2="{}"></line>'
                '<text class="chart-tick" x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>',
                left,
                n(y(tick)),
                right,
                n(y(tick)),
                left - 6,
                n(y(tick)),
                value_text(tick, kind),
            )
        )
    moments, days = time_ticks(starts[0], ends[-1])
    for moment in moments:
        parts.append(
            format_html(
                '<line class="chart-tick-mark" x1="{}" y1="{}" x2="{}" y2="{}"></line>'
                '<text class="chart-tick" x="{}" y="{}" text-anchor="middle" data-at="{}" data-tick="{}">{}</text>',
                n(x(moment)),
                bottom,
                n(x(moment)),
                bottom + 4,
                n(x(moment)),
                bottom + 16,
                moment.isoformat().replace("+00:00", "Z"),
                "date" if days else "time",
                _tick_label(moment, days),
            )
        )
    parts.append(
        format_html(
            '<line class="chart-axis" x1="{}" y1="{}" x2="{}" y2="{}"></line>'
            '<line class="chart-axis" x1="{}" y1="{}" x2="{}" y2="{}"></line>'
            '<text class="chart-axis-title" x="{}" y="{}" text-anchor="middle" data-time-axis>Time (UTC)</text>'
            '<text class="chart-axis-title" x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>',
            left,
            bottom,
            right,
            bottom,
            left,
            top,
            left,
            bottom,
            (left + right) / 2,
            CHART_HEIGHT - 6,
            14,
            (top + bottom) / 2,
            14,
            (top + bottom) / 2,
            y_label,
        )
    )
    for line in lines:
        points = [
            (x(starts[i] + (ends[i] - starts[i]) / 2), y(v)) if v is not None else None
            for i, v in enumerate(line.values)
        ]
        parts.append(format_html('<path class="chart-line-{}" d="{}"></path>', line.name, _path(points)))
        for i, point in enumerate(points):
            lone = (
                point is not None
                and (i == 0 or points[i - 1] is None)
                and (i == len(points) - 1 or points[i + 1] is None)
            )
            if lone and point is not None:
                parts.append(
                    format_html(
                        '<circle class="chart-dot-{}" cx="{}" cy="{}" r="2.5"></circle>',
                        line.name,
                        n(point[0]),
                        n(point[1]),
                    )
                )
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        parts.append(
            format_html(
                '<rect class="chart-hit" x="{}" y="{}" width="{}" height="{}">'
                '<title data-from="{}" data-to="{}" data-value="{}">{}: {}</title></rect>',
                n(x(start)),
                top,
                n(max(0.5, x(end) - x(start))),
                bottom - top,
                start.isoformat().replace("+00:00", "Z"),
                end.isoformat().replace("+00:00", "Z"),
                hover[i],
                span_text(start, end),
                hover[i],
            )
        )
    return format_html(
        '<svg class="chart" id="{}" viewBox="0 0 {} {}" role="img" aria-labelledby="{}-title {}-summary">'
        '<title id="{}-title">{}</title>{}</svg>',
        chart_id,
        CHART_WIDTH,
        CHART_HEIGHT,
        chart_id,
        chart_id,
        chart_id,
        title,
        mark_safe("".join(parts)),  # noqa: S308 - every part is built by format_html
    )


def _path(points: Sequence[tuple[float, float] | None]) -> str:
    """An SVG path through ``points``; None breaks the line (no sample there) instead of drawing across."""
    parts: list[str] = []
    run = 0
    for point in [*points, None]:
        if point is None:
            run = 0
            continue
        parts.append(f"{'L' if run else 'M'}{point[0]:.1f} {point[1]:.1f}")
        run += 1
    return " ".join(parts)
