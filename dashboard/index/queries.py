"""Every read of the work index: the stuck set, counts, paging both ways, search, freshness, timelines.

Pages, counts, bulk selections, the wall display and ``/metrics`` call these, so one question gets one answer
everywhere. All functions are synchronous ORM reads (wrap them in ``database_sync_to_async`` from async code).

- ``stuck_items(environment_id=None)``: the stuck set as a query, by the rule ``dashboard.stuck`` states.
- ``state_counts`` / ``environment_counts``: items per state (and stuck, active) per environment.
- ``work_items(...)``: the rows of an environment (or all), filtered by state, stuck and a search.
- ``page(queryset, older=…, newer=…)``: one page newest first, keyset cursors both ways, and the total count.
- ``parse_search`` / ``search``: work id, session id, ``key=value`` on metadata, free text over metadata.
- ``freshness``: how old the oldest live row is, whether the fill is complete, whether the sync is slowed.
- ``item``, ``timeline``, ``samples``: one row, its observed history, an environment's history samples.
- ``environment_name``: an environment's name as last listed by the upstream, else its id.

What does not live here: writing rows (``dashboard.index.sync``), rendering (templates), the stuck rule itself
(``dashboard.stuck``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shlex
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from dashboard import stuck
from dashboard.index.models import (
    LIVE,
    IndexedEnvironment,
    IndexedWork,
    WorkEvent,
    WorkState,
)
from workqueue.records import WorkData, WorkItem

__all__ = [
    "Counts",
    "Freshness",
    "InvalidCursor",
    "InvalidSearch",
    "Page",
    "SearchTerms",
    "as_work_item",
    "environment_counts",
    "freshness",
    "item",
    "page",
    "parse_search",
    "search",
    "state_counts",
    "stuck_counts",
    "stuck_filter",
    "stuck_items",
    "stuck_mark",
    "timeline",
    "work_items",
]

MAX_PAGE_SIZE = 500
LIVE_STATES = tuple(state for state in WorkState.values if state != WorkState.STOPPED)
MAX_SEARCH_LENGTH = 500
MAX_SEARCH_TERMS = 10

# --- the stuck set -------------------------------------------------------------------------------------------


def stuck_filter(now: datetime | None = None) -> Q:
    """The stuck rule of ``dashboard.stuck`` as a filter on index rows: each row stores the moment its state's
    stuck clock runs from (``stuck_since`` = ``stuck.reference_time``), and a row is stuck when that is earlier
    than its state's cutoff. Served by a partial index over live rows only."""
    condition = Q(pk__in=[])
    cutoffs = stuck.cutoffs(now or timezone.now())
    for state, cutoff in cutoffs.items():
        condition |= Q(state=state, stuck_since__lt=cutoff)
    # A stopping item whose worker stopped heartbeating is stuck too (the graceful stop cannot complete). Few
    # rows are stopping at any time, so this part needs no index of its own.
    condition |= Q(state="stopping") & (
        Q(latest_heartbeat_at__lt=cutoffs["active"])
        | Q(latest_heartbeat_at__isnull=True, acknowledged_at__lt=cutoffs["active"])
        | Q(latest_heartbeat_at__isnull=True, acknowledged_at__isnull=True, created_at__lt=cutoffs["active"])
    )
    return LIVE & condition


def stuck_items(environment_id: str | None = None, now: datetime | None = None) -> QuerySet[IndexedWork]:
    """Every stuck item (of one environment, or of all), newest first. The same set for the stuck page, the
    stuck filter, the tiles' stuck count and bulk "every stuck item"."""
    rows = IndexedWork.objects.filter(stuck_filter(now))
    if environment_id is not None:
        rows = rows.filter(environment_id=environment_id)
    return rows.order_by("-created_at", "-id")


def stuck_counts(environment_ids: Iterable[str] | None = None, now: datetime | None = None) -> dict[str, int]:
    """Stuck items per environment (environments with none are absent unless named in ``environment_ids``)."""
    rows = IndexedWork.objects.filter(stuck_filter(now))
    wanted = None if environment_ids is None else list(environment_ids)
    if wanted is not None:
        rows = rows.filter(environment_id__in=wanted)
    counts = dict.fromkeys(wanted or [], 0)
    for environment_id, n in rows.values_list("environment_id").annotate(n=Count("id")).order_by():
        counts[environment_id] = n
    return counts


def stuck_mark(now: datetime | None = None) -> str:
    """What of the stuck set, when it changes, makes the stuck page out of date: how many items, and a digest of
    each one's environment, id and state (an item stopped while another gets stuck changes it too). Read from the
    stuck query's partial index, the rows' three columns only."""
    rows = sorted(
        IndexedWork.objects.filter(stuck_filter(now)).values_list("environment_id", "work_id", "state")
    )
    digest = hashlib.sha256("\n".join(" ".join(row) for row in rows).encode()).hexdigest()[:16]
    return f"{len(rows)}.{digest}"


# --- counts --------------------------------------------------------------------------------------------------


@dataclass
class Counts:
    """One environment's items by state, plus its stuck count."""

    environment_id: str
    by_state: dict[str, int] = field(default_factory=dict)
    stuck: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def live(self) -> int:
        return self.total - self.by_state.get(WorkState.STOPPED, 0)

    @property
    def active(self) -> int:
        return self.by_state.get(WorkState.ACTIVE, 0)

    def __getitem__(self, state: str) -> int:
        return self.by_state.get(state, 0)

    @property
    def mark(self) -> str:
        """The counts in one word: when it changes, a page's list of this environment's work is out of date."""
        states = ".".join(str(self[state]) for state in WorkState.values)
        return f"{states}.{self.stuck}"


def state_counts(environment_ids: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """``{environment_id: {state: n}}`` with every state present (0 where none), at a cost that does not grow
    with the history: the live states counted over their few rows, the stopped count kept by the index."""
    rows = IndexedWork.objects.all()
    wanted = None if environment_ids is None else list(environment_ids)
    if wanted is not None:
        rows = rows.filter(environment_id__in=wanted)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(WorkState.values, 0))
    for environment_id in wanted or []:
        counts[environment_id]  # noqa: B018 - every named environment is present, even without rows
    # Live states named one by one (not "not stopped"), so the (environment, state) index is read for those
    # states only: few rows, however long the history.
    live = rows.filter(state__in=LIVE_STATES)
    for environment_id, state, n in (
        live.values_list("environment_id", "state").annotate(n=Count("id")).order_by()
    ):
        counts[environment_id][state] = n
    # Kept by every write of the index (``IndexedEnvironment.stopped_rows``): read, not counted.
    kept = IndexedEnvironment.objects.filter(stopped_rows__gt=0)
    if wanted is not None:
        kept = kept.filter(environment_id__in=wanted)
    for environment_id, n in kept.values_list("environment_id", "stopped_rows"):
        counts[environment_id][WorkState.STOPPED] = n
    return dict(counts)


def environment_counts(
    environment_ids: Iterable[str] | None = None, now: datetime | None = None
) -> dict[str, Counts]:
    """Per environment: items per state and the stuck count, read at one moment ``now``."""
    wanted = None if environment_ids is None else list(environment_ids)
    by_state = state_counts(wanted)
    stuck_by_env = stuck_counts(wanted, now)
    return {
        environment_id: Counts(environment_id, states, stuck_by_env.get(environment_id, 0))
        for environment_id, states in by_state.items()
    }


def item_mark(state: str, is_stuck: bool, stop_requested: bool, metadata: dict[str, str]) -> str:
    """What of a work item, when it changes, makes its page out of date (state, stuck, stop requested, metadata),
    in one word. The page computes it from what it shows, the feed from the index's row: equal when they agree."""
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:16]
    return f"{state}.{int(is_stuck)}.{int(stop_requested)}.{digest}"


# --- search --------------------------------------------------------------------------------------------------


class InvalidSearch(ValueError):
    """A search the index cannot run; the message says why, for the person who typed it."""


@dataclass(frozen=True)
class SearchTerms:
    """A parsed search: every term must match (AND)."""

    key_values: tuple[tuple[str, str], ...] = ()
    words: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.key_values or self.words)


def parse_search(text: str) -> SearchTerms:
    """``owner=alice "ticket=OPS 12" work_01abc timeout``: ``key=value`` terms match a metadata entry exactly
    (ignoring case); any other term matches part of the work id, the session id, or a metadata key or value.
    Quotes group words."""
    text = (text or "").strip()
    if len(text) > MAX_SEARCH_LENGTH:
        raise InvalidSearch(f"A search can be at most {MAX_SEARCH_LENGTH} characters long.")
    if "\x00" in text:
        raise InvalidSearch("A search cannot contain a NUL character.")
    if text and not any(ch.isalnum() for ch in text):
        raise InvalidSearch("A search needs at least one letter or digit: an id, key=value or words.")
    try:
        parts = shlex.split(text)
    except ValueError:
        parts = text.split()  # an unbalanced quote: take the words as they are
    if len(parts) > MAX_SEARCH_TERMS:
        raise InvalidSearch(f"A search can have at most {MAX_SEARCH_TERMS} terms.")
    key_values: list[tuple[str, str]] = []
    words: list[str] = []
    for part in parts:
        key, sep, value = part.partition("=")
        if sep and key:
            key_values.append((key, value))
        elif part:
            words.append(part)
    return SearchTerms(tuple(key_values), tuple(words))


def metadata_search_text(metadata: dict[str, str]) -> str:
    """What free text and ``key=value`` search look in: one lower-cased ``key=value`` line per entry, between
    newlines (so a ``key=value`` term matches a whole line). Newlines inside keys and values become spaces."""
    lines = [f"{_flat(k)}={_flat(v)}" for k, v in sorted(metadata.items())]
    return ("\n" + "\n".join(lines) + "\n").lower() if lines else ""


def _flat(text: str) -> str:
    return str(text).replace("\r", " ").replace("\n", " ")


def search(rows: QuerySet[IndexedWork], terms: SearchTerms | str) -> QuerySet[IndexedWork]:
    """``rows`` narrowed to those matching every term of ``terms`` (parsed with ``parse_search`` if a string)."""
    if isinstance(terms, str):
        terms = parse_search(terms)
    for key, value in terms.key_values:
        rows = rows.filter(search_text__contains=f"\n{_flat(key)}={_flat(value)}\n".lower())
    for word in terms.words:
        rows = rows.filter(
            Q(work_id__icontains=word)
            | Q(session_id__icontains=word)
            | Q(search_text__contains=_flat(word).lower())
        )
    return rows


# --- rows and paging -----------------------------------------------------------------------------------------


def work_items(
    environment_id: str | None = None,
    *,
    state: str | None = None,
    stuck_only: bool = False,
    q: str | SearchTerms = "",
    now: datetime | None = None,
) -> QuerySet[IndexedWork]:
    """Rows of one environment (or every one), newest first, narrowed by state, the stuck rule and a search.
    ``state="live"`` means every state but stopped. An unknown state raises ``InvalidSearch``."""
    rows = IndexedWork.objects.all()
    if environment_id is not None:
        rows = rows.filter(environment_id=environment_id)
    if state == "live":
        rows = rows.filter(LIVE)
    elif state:
        if state not in WorkState.values:
            raise InvalidSearch(f"{state[:40]!r} is not a state: one of {', '.join(WorkState.values)}.")
        rows = rows.filter(state=state)
    if stuck_only:
        rows = rows.filter(stuck_filter(now))
    if q:
        rows = search(rows, q)
    return rows.order_by("-created_at", "-id")


class InvalidCursor(ValueError):
    """A page cursor this index did not hand out."""


def encode_cursor(row: IndexedWork) -> str:
    raw = json.dumps([row.created_at.isoformat(), row.pk], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, pk = json.loads(raw)
        moment = datetime.fromisoformat(created)
        if not isinstance(pk, int) or isinstance(pk, bool) or moment.tzinfo is None:
            raise ValueError
        return moment, pk
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("That page link is not valid any more; start again from the newest.") from None


@dataclass
class Page:
    """One page of rows, newest first. ``newer`` / ``older`` are cursors for the neighbouring pages (None at
    either end); ``total`` counts every row of the query, not only this page."""

    items: list[IndexedWork]
    total: int
    newer: str | None
    older: str | None

    def __iter__(self) -> Iterator[IndexedWork]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _older_than(moment: datetime, pk: int) -> Q:
    # The range on created_at stands alone (not only inside the OR) so that the database walks the index from the
    # cursor on, whichever index the rest of the query picks (the live rows' one for the stuck filter).
    return Q(created_at__lte=moment) & (Q(created_at__lt=moment) | Q(pk__lt=pk))


def _newer_than(moment: datetime, pk: int) -> Q:
    return Q(created_at__gte=moment) & (Q(created_at__gt=moment) | Q(pk__gt=pk))


def page(
    rows: QuerySet[IndexedWork],
    *,
    older: str | None = None,
    newer: str | None = None,
    limit: int = 50,
    total: int | None = None,
) -> Page:
    """One page of ``rows`` (any query of this module) in newest-first order: the newest page, or the page just
    older than the cursor ``older``, or just newer than ``newer``. Keyset paging on (created_at, id): a page
    costs the same deep in the history as at its head, and rows added meanwhile never shift it. ``total``: the
    query's row count when the caller has it already (an environment's unfiltered rows: the sum of its counts)."""
    limit = max(1, min(int(limit), MAX_PAGE_SIZE))
    base = rows.order_by()
    if older:
        moment, pk = decode_cursor(older)
        chunk = list(base.filter(_older_than(moment, pk)).order_by("-created_at", "-id")[:limit])
    elif newer:
        moment, pk = decode_cursor(newer)
        chunk = list(base.filter(_newer_than(moment, pk)).order_by("created_at", "id")[:limit])
        chunk.reverse()
    else:
        chunk = list(base.order_by("-created_at", "-id")[:limit])
    has_newer = has_older = False
    if chunk:
        first, last = chunk[0], chunk[-1]
        has_newer = base.filter(_newer_than(first.created_at, first.pk)).exists()
        has_older = base.filter(_older_than(last.created_at, last.pk)).exists()
    return Page(
        items=chunk,
        total=base.count() if total is None else total,
        newer=encode_cursor(chunk[0]) if has_newer else None,
        older=encode_cursor(chunk[-1]) if has_older else None,
    )


# --- one item ------------------------------------------------------------------------------------------------


def item(environment_id: str, work_id: str) -> IndexedWork | None:
    """The index's row for one item, or None (never seen, or it left the index: see ``sync.retrieve_fallback``)."""
    return IndexedWork.objects.filter(environment_id=environment_id, work_id=work_id).first()


def as_work_item(row: IndexedWork) -> WorkItem:
    """A row in the shape of the upstream's record, so the stuck rule, the lease health and the templates read
    an indexed item exactly as they read one retrieved from the Work API. ``raw`` holds the fields as stored."""
    raw = {
        "type": "work",
        "id": row.work_id,
        "environment_id": row.environment_id,
        "state": row.state,
        "data": {"type": row.data_type, "id": row.session_id},
        "metadata": dict(row.metadata or {}),
        **{
            name: (moment.isoformat() if moment is not None else None)
            for name, moment in (
                ("created_at", row.created_at),
                ("acknowledged_at", row.acknowledged_at),
                ("started_at", row.started_at),
                ("latest_heartbeat_at", row.latest_heartbeat_at),
                ("stop_requested_at", row.stop_requested_at),
                ("stopped_at", row.stopped_at),
            )
        },
    }
    return WorkItem(
        id=row.work_id,
        environment_id=row.environment_id,
        state=row.state,
        data=WorkData(type=row.data_type, id=row.session_id),
        metadata=dict(row.metadata or {}),
        created_at=row.created_at,
        acknowledged_at=row.acknowledged_at,
        started_at=row.started_at,
        latest_heartbeat_at=row.latest_heartbeat_at,
        stop_requested_at=row.stop_requested_at,
        stopped_at=row.stopped_at,
        secret=None,
        raw=raw,
    )


def timeline(environment_id: str, work_id: str) -> list[WorkEvent]:
    """What the sync saw happen to one item, oldest first."""
    return list(WorkEvent.objects.filter(environment_id=environment_id, work_id=work_id).order_by("at", "id"))


# --- freshness -----------------------------------------------------------------------------------------------


@dataclass
class Freshness:
    """How far the index can be trusted, for a page to say so.

    ``oldest_confirmed_at``: the least recently confirmed live row (None with no live row); ``age_seconds`` its
    age. ``filled``: every environment asked about has been walked once. ``rate_limited_until``: the latest
    pause a 429/529 imposed, if one is still running; ``last_throttle_status`` / ``last_throttle_at``: the most
    recent such answer.
    """

    now: datetime
    oldest_confirmed_at: datetime | None = None
    filled: bool = False
    known: bool = False
    head_read_at: datetime | None = None
    rate_limited_until: datetime | None = None
    last_throttle_status: int | None = None
    last_throttle_at: datetime | None = None

    @property
    def age_seconds(self) -> float | None:
        if self.oldest_confirmed_at is None:
            return None
        return max(0.0, (self.now - self.oldest_confirmed_at).total_seconds())

    @property
    def rate_limited(self) -> bool:
        return self.rate_limited_until is not None and self.rate_limited_until > self.now


def freshness(environment_id: str | None = None, now: datetime | None = None) -> Freshness:
    """How old the oldest live row is, and the state of the sync, for one environment or all of them."""
    now = now or timezone.now()
    rows = IndexedWork.objects.filter(LIVE)
    states = IndexedEnvironment.objects.all()
    if environment_id is not None:
        rows = rows.filter(environment_id=environment_id)
        states = states.filter(environment_id=environment_id)
    result = Freshness(now=now, oldest_confirmed_at=rows.aggregate(m=Min("confirmed_at"))["m"])
    envs = list(states)
    result.known = bool(envs)
    result.filled = bool(envs) and all(e.filled for e in envs)
    heads = [e.head_read_at for e in envs if e.head_read_at is not None]
    result.head_read_at = min(heads) if heads else None
    pauses = [e.rate_limited_until for e in envs if e.rate_limited_until and e.rate_limited_until > now]
    result.rate_limited_until = max(pauses) if pauses else None
    throttled = [e for e in envs if e.rate_limited_at is not None]
    if throttled:
        latest = max(throttled, key=lambda e: e.rate_limited_at or now)
        result.last_throttle_status, result.last_throttle_at = (
            latest.rate_limited_status,
            latest.rate_limited_at,
        )
    return result


def environment_name(environment_id: str) -> str:
    """The environment's name as the upstream last listed it (the live feed's directory read stores it), else its
    id: for breadcrumbs and headings that must not wait on the upstream."""
    from dashboard.index.models import IndexedEnvironment

    name = (
        IndexedEnvironment.objects.filter(environment_id=environment_id)
        .values_list("name", flat=True)
        .first()
    )
    return name or environment_id
