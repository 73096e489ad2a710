"""What one environment's feed knows at one moment, and the HTML fragments it becomes.

A ``Snapshot`` holds the numbers (stats, active and stuck counts), the watched work items, the last hour of
history, when the numbers were read, and — when the upstream could not be read — since when, why and the
request-id, while keeping the last numbers. ``render`` turns it into htmx out-of-band fragments once; the same
strings go to every socket allowed to see them. The fragments' element ids match the pages':

- overview tile: ``figures-<env>``, ``starving-<env>``, ``live-tile-<env>``
- environment page: ``queue-<env>``; its rows' cells ``row-<field>-<work>``
- work item page: ``item-status-<work>``, ``item-times-<work>``, ``lease-<work>``
- wall display: ``wall-<env>``

What does not live here: polling (``feed``) and delivery (``consumers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from dashboard.live import conf
from dashboard.live.sparkline import HistoryPoint, sparkline

__all__ = ["Fragments", "ItemView", "Snapshot", "Staleness", "placeholder", "render", "template_context"]


def iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment is not None else ""


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Staleness:
    """Why the numbers are old: since when the upstream fails, the failure, and its request-id."""

    since: datetime
    reason: str  # short: "Could not reach the Work API"
    detail: str  # the client's message, credentials scrubbed
    kind: str
    request_id: str = ""
    status: int | None = None

    @property
    def banner(self) -> dict[str, Any]:
        """In the shape of ``upstream.failure_banner``, for ``dashboard/pages/_failure.html``."""
        return {
            "kind": self.kind,
            "title": self.reason,
            "message": self.detail,
            "request_id": self.request_id,
            "status": self.status,
            "occurred_at": self.since,
            "retry_after": None,
        }


@dataclass(frozen=True)
class ItemView:
    """What the live rows and the work item page show of one work item."""

    id: str
    environment_id: str
    state: str
    created_at: datetime
    acknowledged_at: datetime | None
    started_at: datetime | None
    latest_heartbeat_at: datetime | None
    stop_requested_at: datetime | None
    stopped_at: datetime | None
    stuck_reason: str | None
    lease: dict[str, Any]
    # ``queries.item_mark`` of the row: the item page re-reads itself when it differs from the page's.
    mark: str = ""

    @classmethod
    def of(cls, work_id: str, record: Any, now: datetime) -> ItemView:
        """What the item page and the feed's frames show of one item: ``record`` is the index's row (the feed) or
        the item the page read (a ``WorkItem``); both carry the same fields."""
        from dashboard import stuck
        from dashboard.index import queries

        health = stuck.lease_health(record, now)
        return cls(
            id=work_id,
            environment_id=record.environment_id,
            state=record.state,
            created_at=record.created_at,
            acknowledged_at=record.acknowledged_at,
            started_at=record.started_at,
            latest_heartbeat_at=record.latest_heartbeat_at,
            stop_requested_at=record.stop_requested_at,
            stopped_at=record.stopped_at,
            stuck_reason=health.get("stuck_reason"),
            lease=health,
            mark=queries.item_mark(
                record.state,
                bool(health.get("stuck_reason")),
                record.stop_requested_at is not None,
                record.metadata,
            ),
        )


@dataclass
class Snapshot:
    environment_id: str
    name: str
    # When the numbers below were read; None until the first successful read.
    at: datetime | None
    published_at: datetime
    depth: int | None = None
    pending: int | None = None
    workers_polling: int | None = None
    oldest_queued_at: datetime | None = None
    active: int | None = None
    stuck: int | None = None
    listed: int = 0
    counts_capped: bool = False
    # Why there are no active/stuck counts (no environment key), when there are none.
    counts_note: str = ""
    # The work index's counts in one word (``queries.Counts.mark``): a page's list re-reads itself when it changes.
    index_mark: str = ""
    stale: Staleness | None = None
    history: list[HistoryPoint] = field(default_factory=list)
    items: dict[str, ItemView] = field(default_factory=dict)

    @property
    def has_stats(self) -> bool:
        return self.depth is not None

    # What the region templates read (``s.at_iso`` ...): the same names whoever renders them, page or feed.
    @property
    def at_iso(self) -> str:
        return iso(self.at)

    @property
    def published_iso(self) -> str:
        return iso(self.published_at)

    @property
    def stale_since_iso(self) -> str:
        return iso(self.stale.since) if self.stale else ""

    @property
    def oldest_iso(self) -> str:
        return iso(self.oldest_queued_at)

    @property
    def interval(self) -> str:
        return f"{conf.feed_interval():g}"

    @property
    def tone_name(self) -> str:
        return self.tone()[0]

    @property
    def tone_reasons(self) -> list[str]:
        return self.tone()[1]

    @cached_property
    def sparkline(self) -> SafeString:
        return sparkline(self.history, self.published_at, conf.history_window_seconds())

    def numbers(self) -> dict[str, Any]:
        """The figures, as JSON values: cached beside the fragments, so a page's first paint shows the feed's."""
        return {
            "at": iso(self.at),
            "published_at": iso(self.published_at),
            "depth": self.depth,
            "pending": self.pending,
            "workers_polling": self.workers_polling,
            "oldest_queued_at": iso(self.oldest_queued_at),
            "active": self.active,
            "stuck": self.stuck,
            "listed": self.listed,
            "counts_capped": self.counts_capped,
            "counts_note": self.counts_note,
            "stale": None
            if self.stale is None
            else {
                "since": iso(self.stale.since),
                "reason": self.stale.reason,
                "detail": self.stale.detail,
                "kind": self.stale.kind,
                "request_id": self.stale.request_id,
                "status": self.stale.status,
            },
        }

    @classmethod
    def from_numbers(
        cls, environment_id: str, name: str, numbers: dict[str, Any], history: list[HistoryPoint]
    ) -> Snapshot:
        stale = numbers.get("stale")
        return cls(
            environment_id=environment_id,
            name=name,
            at=_parse(numbers.get("at")),
            published_at=_parse(numbers.get("published_at")) or datetime.now(UTC),
            depth=numbers.get("depth"),
            pending=numbers.get("pending"),
            workers_polling=numbers.get("workers_polling"),
            oldest_queued_at=_parse(numbers.get("oldest_queued_at")),
            active=numbers.get("active"),
            stuck=numbers.get("stuck"),
            listed=int(numbers.get("listed") or 0),
            counts_capped=bool(numbers.get("counts_capped")),
            counts_note=str(numbers.get("counts_note") or ""),
            stale=None
            if not stale
            else Staleness(
                since=_parse(stale.get("since")) or datetime.now(UTC),
                reason=str(stale.get("reason", "")),
                detail=str(stale.get("detail", "")),
                kind=str(stale.get("kind", "")),
                request_id=str(stale.get("request_id") or ""),
                status=stale.get("status"),
            ),
            history=history,
        )

    @property
    def oldest_queued_seconds(self) -> float | None:
        if self.oldest_queued_at is None:
            return None
        return max(0.0, (self.published_at - self.oldest_queued_at).total_seconds())

    @property
    def starving(self) -> bool:
        """Work waits and no worker polls (an unknown worker count is not a warning)."""
        return bool(self.depth) and self.workers_polling == 0

    def tone(self) -> tuple[str, list[str]]:
        """The wall colour ("ok", "warn", "critical", "stale") and the reasons for it, in words."""
        reasons: list[str] = []
        level = 0
        if self.starving:
            level = 2
            reasons.append("work waiting, no worker polling")
        oldest = self.oldest_queued_seconds
        if oldest is not None:
            if oldest >= conf.oldest_critical_seconds():
                level = 2
                reasons.append("oldest item waiting too long")
            elif oldest >= conf.oldest_warning_seconds():
                level = max(level, 1)
                reasons.append("work waiting a while")
        if self.stuck:
            level = max(level, 2 if self.stuck >= conf.stuck_critical_count() else 1)
            reasons.append(f"{self.stuck} stuck")
        if self.stale is not None:
            return "stale", [*reasons, "numbers are stale"]
        return ("ok", "warn", "critical")[level], reasons


@dataclass(frozen=True)
class Fragments:
    """One snapshot's HTML, rendered once: per page kind, plus per watched work item."""

    tile: str
    environment: str
    wall: str
    rows: dict[str, str]
    items: dict[str, str]


def template_context(snapshot: Snapshot, interval: float) -> dict[str, Any]:
    tone, tone_reasons = snapshot.tone()
    return {
        "s": snapshot,
        "env_id": snapshot.environment_id,
        "at_iso": iso(snapshot.at),
        "published_iso": iso(snapshot.published_at),
        "stale_since_iso": iso(snapshot.stale.since) if snapshot.stale else "",
        "oldest_iso": iso(snapshot.oldest_queued_at),
        "interval": f"{interval:g}",
        "tone": tone,
        "tone_reasons": tone_reasons,
        "oob": True,
    }


# Each live region is a {% partialdef %} of the page that shows it; the page's GET renders the same partial.
TILE = "dashboard/pages/overview.html#tile"


def render(snapshot: Snapshot, *, watched_items: set[str], interval: float) -> Fragments:
    context = template_context(snapshot, interval)
    chart = snapshot.sparkline
    tile = render_to_string(TILE, {"s": snapshot, "oob": True})
    environment = render_to_string("live/_environment.html", context)
    wall = render_to_string("live/_wall_tile.html", {**context, "sparkline": chart})
    rows: dict[str, str] = {}
    items: dict[str, str] = {}
    for work_id in sorted(watched_items):
        item = snapshot.items.get(work_id)
        if item is None:
            continue
        item_context = {**context, "item": item}
        rows[work_id] = render_to_string("live/_row.html", item_context)
        items[work_id] = render_to_string("live/_item.html", item_context)
    return Fragments(tile=tile, environment=environment, wall=wall, rows=rows, items=items)


def placeholder(environment_id: str, name: str = "") -> Snapshot:
    """What a page shows before the first snapshot arrives."""
    return Snapshot(
        environment_id=environment_id, name=name or environment_id, at=None, published_at=datetime.now(UTC)
    )
