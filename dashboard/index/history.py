"""Each environment's history as the work index saw it: one sample a minute, and the charts' bounded reads.

Writing (the live feed that holds the environment's lease, once its index is filled):

- ``sample_minute(environment_id, end)``: the figures of the minute ending at ``end``: the stuck count (the same
  ``queries.stuck_counts`` as the stuck page and the tiles, at ``end``), live rows, items stopped in the minute and
  the time from creation to acknowledgement (p50, p95) of the items acknowledged in it.
- ``write_sample``: store it, once: a minute already stored (by this instance before a restart, or by the instance
  that held the lease before) is left as it is; the database's unique key on (environment, minute) decides.
- ``MinuteSamples``: which minutes one feed still owes, and when a minute is ready to be written (below).
- ``prune(before)``: samples older than ``HISTORY_RETENTION_HOURS`` go, with the queue samples' pruning.

Reading (the environment page): ``WINDOWS`` (1 h, 24 h, 7 d), ``window_named``, and ``buckets(environment_id,
window, now)``: at most ``MAX_BUCKETS`` buckets, aggregated in the database, whatever the window.

What does not live here: drawing (``dashboard.live.sparkline``), the stuck rule (``dashboard.stuck``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Avg, Count, F, IntegerField, Max, Sum
from django.db.models.expressions import ExpressionWrapper
from django.utils import timezone

from dashboard.index.models import LIVE, IndexedWork, IndexSample, WorkState
from dashboard.index.queries import stuck_counts

__all__ = [
    "MAX_BUCKETS",
    "WINDOWS",
    "Bucket",
    "MinuteSamples",
    "Window",
    "buckets",
    "latest",
    "minute_end",
    "percentile",
    "prune",
    "sample_minute",
    "window_named",
    "write_sample",
]

MINUTE = timedelta(minutes=1)
# How long a minute's sample waits for the index to have read everything up to the minute's end (see
# ``MinuteSamples``); past that it is written with what the index knows, so a slow sync leaves no gap.
MAX_WAIT = timedelta(minutes=5)
# A minute further back than this when its turn comes (the feed was held up: the database or the loop stalled) is
# skipped: its stuck count could no longer be read as it was, and a gap in the chart says so honestly.
MAX_BACKLOG = timedelta(minutes=15)


def minute_end(moment: datetime) -> datetime:
    """The whole minute (UTC) at or before ``moment``: the end of the last complete minute."""
    return datetime.fromtimestamp(math.floor(moment.timestamp() / 60) * 60, tz=UTC)


def _minute_number(end: datetime) -> int:
    return int(end.timestamp() // 60)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` (0–1) percentile of ``values`` by linear interpolation between closest ranks: what a
    spreadsheet's PERCENTILE.INC and Python's ``statistics.quantiles(method="inclusive")`` give. None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * fraction
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- writing -------------------------------------------------------------------------------------------------


def sample_minute(environment_id: str, end: datetime) -> IndexSample:
    """The (unsaved) sample of the minute ``[end - 1 min, end)``."""
    start = end - MINUTE
    rows = IndexedWork.objects.filter(environment_id=environment_id)
    # Items stopped in the minute, from the rows' own ``stopped_at`` (the upstream's time) rather than the
    # STOPPED timeline events: an event is dated when the sync saw it, and the fill walk writes none, while the
    # rows hold every stop, at its true minute; ``MinuteSamples`` waits until the index has read past the minute,
    # so none is missing. Cheap: the (state, stopped_at) index reads only the rows stopped in that minute.
    stopped = rows.filter(state=WorkState.STOPPED, stopped_at__gte=start, stopped_at__lt=end).count()
    # Time to acknowledge: from the rows too (the (environment, acknowledged_at) index reads one minute's rows).
    waits = [
        (acknowledged - created).total_seconds()
        for created, acknowledged in rows.filter(
            acknowledged_at__gte=start, acknowledged_at__lt=end
        ).values_list("created_at", "acknowledged_at")
        if acknowledged is not None
    ]
    waits = [max(0.0, wait) for wait in waits]
    return IndexSample(
        environment_id=environment_id,
        at=end,
        minute=_minute_number(end),
        stuck=stuck_counts([environment_id], end).get(environment_id, 0),
        live=rows.filter(LIVE).count(),
        stopped_per_minute=float(stopped),
        ack_p50_seconds=percentile(waits, 0.50),
        ack_p95_seconds=percentile(waits, 0.95),
    )


def write_sample(environment_id: str, end: datetime) -> bool:
    """Store the sample of the minute ending at ``end``; False when that minute was stored already."""
    minute = _minute_number(end)
    if IndexSample.objects.filter(environment_id=environment_id, minute=minute).exists():
        return False
    sample = sample_minute(environment_id, end)
    try:
        with transaction.atomic():
            sample.save()
    except IntegrityError:
        return False  # another instance (the lease just changed hands) wrote it meanwhile
    return True


class MinuteSamples:
    """The minutes one environment's feed still has to write a sample for, oldest first.

    The feed calls ``write_due`` after every round (every few seconds); each minute is written once, when the index
    has read everything up to its end: ``confirmed_as_of`` (``EnvironmentSync.confirmed_as_of``) is the moment
    before which every stop and acknowledgement the upstream made is in the index (the head was read after it and
    every live row was confirmed after it). So a minute's counts are exact, and they are written a round or two
    after the minute ends. A sync slower than ``MAX_WAIT`` does not leave a gap: the minute is written with what
    the index holds by then.

    A feed that starts (a restart, a lease taken over) owes the minute that has just ended, which the previous
    holder may have written already: ``write_sample`` leaves a stored minute alone, so no minute is written twice.
    """

    def __init__(self, environment_id: str, *, started_at: datetime | None = None) -> None:
        self.environment_id = environment_id
        self.next_end = minute_end(started_at or timezone.now())

    def write_due(self, now: datetime, confirmed_as_of: datetime | None, *, filled: bool) -> list[datetime]:
        """Write every minute that is due and ready; returns the ends of the minutes written."""
        written: list[datetime] = []
        if not filled:
            # While the fill walk runs, the counts grow with the walk, not with the work: no history yet.
            self.next_end = max(self.next_end, minute_end(now))
            return written
        while self.next_end <= now:
            end = self.next_end
            if now - end > MAX_BACKLOG:
                self.next_end = minute_end(now - MAX_WAIT)
                continue
            ready = confirmed_as_of is not None and confirmed_as_of >= end
            if not ready and now - end < MAX_WAIT:
                break
            if write_sample(self.environment_id, end):
                written.append(end)
            self.next_end = end + MINUTE
        return written


def prune(before: datetime) -> int:
    """Remove every environment's samples older than ``before``."""
    deleted, _ = IndexSample.objects.filter(at__lt=before).delete()
    return deleted


# --- reading -------------------------------------------------------------------------------------------------

MAX_BUCKETS = 120


@dataclass(frozen=True)
class Window:
    """A span the charts can show, and how many minutes one bucket of it holds."""

    name: str
    label: str
    minutes: int

    @property
    def bucket_minutes(self) -> int:
        return max(1, math.ceil(self.minutes / MAX_BUCKETS))

    @property
    def bucket_count(self) -> int:
        return math.ceil(self.minutes / self.bucket_minutes)


WINDOWS = (
    Window("1h", "1 hour", 60),
    Window("24h", "24 hours", 24 * 60),
    Window("7d", "7 days", 7 * 24 * 60),
)
DEFAULT_WINDOW = WINDOWS[0]


def window_named(name: str) -> Window | None:
    return next((w for w in WINDOWS if w.name == name), None)


@dataclass(frozen=True)
class Bucket:
    """The minutes ``(start, end]`` of one chart bucket: the worst minute for the stuck count and the waits, the
    average rate for items stopped (and their total). ``samples`` 0: nothing was recorded then (a gap)."""

    start: datetime
    end: datetime
    samples: int = 0
    stuck: int | None = None
    stopped_per_minute: float | None = None
    stopped: int | None = None
    ack_p50_seconds: float | None = None
    ack_p95_seconds: float | None = None


def buckets(environment_id: str, window: Window, now: datetime | None = None) -> list[Bucket]:
    """The window's buckets, oldest first, ending with the one holding the latest complete minute. Grouped in the
    database on the sample's minute number, so a 7-day chart reads ``MAX_BUCKETS`` rows, not 10,080. Buckets are
    aligned on whole multiples of their width, so a chart does not shift its buckets from one minute to the next."""
    width = window.bucket_minutes
    count = window.bucket_count
    last_minute = _minute_number(minute_end(now or timezone.now()))
    edge = math.ceil(last_minute / width) * width  # the end of the newest bucket
    first = edge - count * width  # buckets cover the minutes (first, edge]
    index = ExpressionWrapper((F("minute") - (first + 1)) / width, output_field=IntegerField())
    rows = (
        IndexSample.objects.filter(environment_id=environment_id, minute__gt=first, minute__lte=edge)
        .annotate(bucket=index)
        .values("bucket")
        .annotate(
            n=Count("id"),
            stuck_max=Max("stuck"),
            stopped_avg=Avg("stopped_per_minute"),
            stopped_sum=Sum("stopped_per_minute"),
            p50_max=Max("ack_p50_seconds"),
            p95_max=Max("ack_p95_seconds"),
        )
        .order_by("bucket")
    )
    found = {row["bucket"]: row for row in rows}
    result: list[Bucket] = []
    for k in range(count):
        start = datetime.fromtimestamp((first + k * width) * 60, tz=UTC)
        end = start + timedelta(minutes=width)
        row = found.get(k)
        if row is None:
            result.append(Bucket(start, end))
            continue
        result.append(
            Bucket(
                start,
                end,
                samples=int(row["n"]),
                stuck=int(row["stuck_max"]),
                stopped_per_minute=float(row["stopped_avg"]),
                stopped=round(float(row["stopped_sum"])),
                ack_p50_seconds=row["p50_max"],
                ack_p95_seconds=row["p95_max"],
            )
        )
    return result


def latest(environment_id: str, since: datetime) -> IndexSample | None:
    """The newest sample since ``since`` (the charts' "latest" figures)."""
    return IndexSample.objects.filter(environment_id=environment_id, at__gt=since).order_by("-minute").first()
