"""The dashboard's read pages (overview, environment, work item, stuck work, search) and the health check.

Each page is an async view. Work items, counts, the stuck set and searches come from the work index
(``dashboard.index.queries``), so every page answers the same question with the same number and says how old its
rows are; the Work API is read through ``dashboard.upstream`` for what the index does not hold (environments, queue
figures, an item past the index's retention). An upstream failure never becomes a server error: the page renders with a
banner naming the failure, when it happened and the upstream request-id. Ids in URLs are checked before any
upstream call. A request from htmx for one region of a page (``HX-Target``) gets only that region.

The actions (metadata patch, stop, bulk) live in ``dashboard.actions``, the audit log pages in ``dashboard.auditlog``,
the configuration pages in ``dashboard.configure``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from dashboard import audit, regions, stuck, upstream
from dashboard.index import history, queries
from dashboard.index.models import IndexedWork
from dashboard.live.snapshots import ItemView
from dashboard.models import UserPreference
from dashboard.permissions import capabilities, require_action
from workqueue.client import WorkAPIClient
from workqueue.errors import InvalidID, NotFound, WorkAPIError, redact
from workqueue.ids import validate_environment_id, validate_work_id
from workqueue.records import WORK_STATES, Environment, QueueStats, WorkItem

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Page sizes people may pick on the environment page; anything else is refused (never an unbounded number).
PAGE_SIZE_MIN = 10
PAGE_SIZE_MAX = 100
PAGE_SIZE_DEFAULT = 25
PAGE_SIZE_CHOICES = (10, 25, 50, 100)
# The stuck page counts every stuck item exactly, and lists at most this many (the environment page pages the rest).
STUCK_ROWS_SHOWN = 500
# Overview tiles, stuck counts and search ask every environment at once, but no more than this many calls at a time.
UPSTREAM_CONCURRENCY = 8
ENVIRONMENTS_CACHE_KEY = "dashboard:self-hosted-environments"
ENVIRONMENTS_CACHE_SECONDS = 60
MAX_FIND_LENGTH = 300
MAX_CURSOR_LENGTH = 1000


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


# --- Small helpers -----------------------------------------------------------------------------------------------


@dataclass
class Outcome(Generic[T]):
    """The result of one upstream call: the value, or the failure to show in a banner."""

    value: T | None = None
    error: WorkAPIError | None = None

    @property
    def banner(self) -> dict[str, Any] | None:
        return upstream.failure_banner(self.error) if self.error is not None else None


async def attempt(awaitable: Awaitable[T]) -> Outcome[T]:
    try:
        return Outcome(value=await awaitable)
    except WorkAPIError as exc:
        return Outcome(error=exc)


async def gather_bounded(awaitables: Sequence[Awaitable[T]], limit: int = UPSTREAM_CONCURRENCY) -> list[T]:
    """``asyncio.gather`` with at most ``limit`` running at once, results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(awaitable: Awaitable[T]) -> T:
        async with semaphore:
            return await awaitable

    return list(await asyncio.gather(*(one(a) for a in awaitables)))


async def render_page(
    request: HttpRequest, template: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    # Rendering runs in a thread: the layout reads the user's role and preferences from the database.
    response = await sync_to_async(render)(request, template, context, status=status)
    # The same URL answers a whole page or one region of it, depending on these headers.
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


async def problem(
    request: HttpRequest,
    status: int,
    title: str,
    message: str,
    *,
    failure: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    region: str = "",
) -> HttpResponse:
    """A page that says plainly what is wrong (a malformed id, a bad parameter, something not found).

    Asked for one ``region`` of a page (htmx), it answers that region holding the message, not a whole page.
    """
    ctx = {"title": title, "message": message, "failure": failure, "region": region, **(context or {})}
    template = "dashboard/pages/_problem_region.html" if region else "dashboard/pages/problem.html"
    return await render_page(request, template, ctx, status=status)


def wants_region(request: HttpRequest, region: str) -> bool:
    htmx: HtmxDetails | None = getattr(request, "htmx", None)
    return bool(htmx) and htmx is not None and htmx.target == region and not htmx.history_restore_request


class BadParameter(ValueError):
    """A query parameter outside what the page accepts; the message says what is allowed."""


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:37] + "...")


# --- Environments ------------------------------------------------------------------------------------------------


def _usable(environment: Environment) -> bool:
    if environment.config_type != "self_hosted" or environment.archived_at is not None:
        return False
    try:
        validate_environment_id(environment.id)
    except InvalidID:
        # An id we could not put in a link or a path; say so in the log rather than break the page.
        logger.warning("Skipping an environment with a malformed id from the Work API")
        return False
    return True


async def self_hosted_environments(c: WorkAPIClient) -> list[Environment]:
    """Every live self-hosted environment, by name. Cloud environments have no work queue to show."""
    environments = [env async for env in c.iter_environments(limit=100) if _usable(env)]
    environments.sort(key=lambda env: (env.name.casefold(), env.id))
    return environments


async def cached_self_hosted_environments(c: WorkAPIClient, *, fresh: bool = False) -> list[Environment]:
    """The environment list for search, remembered for a minute (searching must not list environments each time)."""
    if not fresh:
        cached: list[Environment] | None = await cache.aget(ENVIRONMENTS_CACHE_KEY)
        if cached is not None:
            return cached
    environments = await self_hosted_environments(c)
    await cache.aset(ENVIRONMENTS_CACHE_KEY, environments, ENVIRONMENTS_CACHE_SECONDS)
    return environments


# --- Work lists --------------------------------------------------------------------------------------------------


@dataclass
class WorkRow:
    item: WorkItem
    stuck_reason: str | None
    # Whether the ids can go into a link (they come from upstream; a malformed one is shown, not linked).
    linkable: bool
    # When the work index last confirmed the row with the Work API; None for an item read from it just now.
    confirmed_at: datetime | None = None


def _linkable(item: WorkItem) -> bool:
    try:
        validate_work_id(item.id)
        validate_environment_id(item.environment_id)
    except InvalidID:
        return False
    return True


def work_rows(items: Sequence[WorkItem], now: datetime) -> list[WorkRow]:
    """Rows for items read from the Work API just now (a retrieve: the index did not have them)."""
    return [WorkRow(item, stuck.stuck_reason(item, now), _linkable(item)) for item in items]


def index_rows(rows: Iterable[IndexedWork], now: datetime) -> list[WorkRow]:
    """Rows for the work index's rows, judged by the same stuck rule as everything else."""
    result = []
    for row in rows:
        item = queries.as_work_item(row)
        result.append(WorkRow(item, stuck.stuck_reason(item, now), _linkable(item), row.confirmed_at))
    return result


def _is_work_id(text: str) -> bool:
    try:
        validate_work_id(text)
    except InvalidID:
        return False
    return True


# --- Overview ----------------------------------------------------------------------------------------------------


@dataclass
class Tile:
    """One environment's queue figures as the page reads them when no feed has published them yet (the active and
    stuck counts always come from the work index: ``regions``)."""

    environment: Environment
    stats: QueueStats | None = None
    stats_failure: dict[str, Any] | None = None
    has_key: bool = False


async def environment_tile(c: WorkAPIClient, environment: Environment, now: datetime) -> Tile:
    tile = Tile(environment=environment)
    tile.has_key = await upstream.environment_key(environment.id) is not None
    stats = await attempt(c.work_stats(environment.id))
    tile.stats, tile.stats_failure = stats.value, stats.banner
    return tile


@require_GET
@require_action("view")
async def overview(request: HtmxHttpRequest) -> HttpResponse:
    """Every self-hosted environment as a tile: queue figures, active and stuck work, starvation."""
    now = timezone.now()
    async with upstream.client() as c:
        environments = await attempt(self_hosted_environments(c))
        tiles = await regions.tile_snapshots(c, environments.value or [], now)
    context = {
        "nav": "overview",
        "failure": environments.banner,
        **await sync_to_async(regions.overview_context)(tiles, now),
    }
    template = "dashboard/pages/overview.html"
    if wants_region(request, "tiles"):
        template += "#tiles"
    return await render_page(request, template, context, status=502 if environments.error else 200)


# --- Environment -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkListQuery:
    """The environment page's query parameters, checked."""

    limit: int = PAGE_SIZE_DEFAULT
    state: str = ""
    stuck: bool = False
    find: str = ""
    # Keyset cursors of the work index (``queries.page``): the page just older, or just newer, than a row.
    older: str = ""
    newer: str = ""

    @property
    def filtering(self) -> bool:
        return bool(self.state or self.stuck or self.find)

    @property
    def cursor(self) -> str:
        return self.older or self.newer

    def params(self) -> dict[str, str]:
        """The query string values that reproduce this view (without the cursor)."""
        values = {
            "limit": str(self.limit),
            "state": self.state,
            "stuck": "1" if self.stuck else "",
            "q": self.find,
        }
        if self.limit == PAGE_SIZE_DEFAULT:
            values["limit"] = ""
        return values

    def keeps(self, item: WorkItem, now: datetime) -> bool:
        """Whether an item read from the Work API directly passes the state and stuck filters."""
        if self.state and item.state != self.state:
            return False
        return not self.stuck or stuck.stuck_reason(item, now) is not None


def _checked_cursor(request: HttpRequest, name: str) -> str:
    cursor = request.GET.get(name, "").strip()
    if len(cursor) > MAX_CURSOR_LENGTH or not cursor.isascii() or not cursor.isprintable() or " " in cursor:
        raise BadParameter(
            "The page cursor is not one this dashboard produced; start again from the newest items."
        )
    return cursor


def checked_find(text: str) -> str:
    """A search as typed, refused (``BadParameter``) when too long or when it looks like a credential."""
    find = text.strip()
    if redact(find) != find:
        raise BadParameter(
            "That looks like a credential: it is neither searched for nor shown. Search by id or metadata."
        )
    if len(find) > MAX_FIND_LENGTH:
        raise BadParameter(f"The search text is {len(find)} characters long; at most {MAX_FIND_LENGTH}.")
    try:
        queries.parse_search(find)
    except queries.InvalidSearch as exc:
        raise BadParameter(str(exc)) from None
    return find


def work_list_query(request: HttpRequest) -> WorkListQuery:
    """Check the environment page's parameters; raises ``BadParameter`` saying what is allowed."""
    raw_limit = request.GET.get("limit", "").strip()
    limit = PAGE_SIZE_DEFAULT
    if raw_limit:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise BadParameter(
                f"Page size must be a whole number from {PAGE_SIZE_MIN} to {PAGE_SIZE_MAX}; got {_shown(raw_limit)}."
            ) from None
        if not PAGE_SIZE_MIN <= limit <= PAGE_SIZE_MAX:
            raise BadParameter(f"Page size must be from {PAGE_SIZE_MIN} to {PAGE_SIZE_MAX}; got {limit}.")
    state = request.GET.get("state", "").strip()
    if state and state not in WORK_STATES:
        raise BadParameter(f"State must be one of {', '.join(WORK_STATES)}; got {_shown(state)}.")
    raw_stuck = request.GET.get("stuck", "").strip().lower()
    if raw_stuck not in ("", "0", "1", "on", "true", "false"):
        raise BadParameter(f"The stuck filter must be 1 or 0; got {_shown(raw_stuck)}.")
    find = checked_find(request.GET.get("q", ""))
    older, newer = _checked_cursor(request, "older"), _checked_cursor(request, "newer")
    return WorkListQuery(
        limit=limit,
        state=state,
        stuck=raw_stuck in ("1", "on", "true"),
        find=find,
        older=older,
        newer=newer if not older else "",
    )


def history_window(request: HttpRequest) -> history.Window:
    """The History section's window (``?history=1h|24h|7d``, 1 hour when absent); raises ``BadParameter``."""
    raw = request.GET.get("history", "").strip()
    if not raw:
        return history.DEFAULT_WINDOW
    window = history.window_named(raw)
    if window is None:
        names = ", ".join(w.name for w in history.WINDOWS)
        raise BadParameter(f"The history window must be one of {names}; got {_shown(raw)}.")
    return window


@dataclass
class WorkListing:
    rows: list[WorkRow] = field(default_factory=list)
    # Every row matching the query (not only this page), and the cursors of the neighbouring pages.
    total: int = 0
    newer: str | None = None
    older: str | None = None
    failure: dict[str, Any] | None = None
    # A work id the index does not hold (a stopped item past the retention): read from the Work API directly.
    from_upstream: bool = False


def _index_listing(
    environment_id: str, query: WorkListQuery, now: datetime, *, total: int | None = None
) -> WorkListing:
    rows = queries.work_items(
        environment_id, state=query.state or None, stuck_only=query.stuck, q=query.find, now=now
    )
    found = queries.page(
        rows, older=query.older or None, newer=query.newer or None, limit=query.limit, total=total
    )
    return WorkListing(
        rows=index_rows(found.items, now), total=found.total, newer=found.newer, older=found.older
    )


@dataclass
class EnvironmentReads:
    """Everything the environment page reads from the work index, at one moment."""

    listing: WorkListing
    counts: queries.Counts
    freshness: queries.Freshness


def _environment_reads(environment_id: str, query: WorkListQuery, now: datetime) -> EnvironmentReads:
    counts = queries.environment_counts([environment_id], now).get(environment_id) or queries.Counts(
        environment_id
    )
    return EnvironmentReads(
        # Unfiltered, the listing's total is the environment's count already read: not counted twice.
        listing=_index_listing(environment_id, query, now, total=None if query.filtering else counts.total),
        counts=counts,
        freshness=queries.freshness(environment_id, now),
    )


async def list_environment_work(
    c: WorkAPIClient, environment_id: str, query: WorkListQuery, now: datetime
) -> EnvironmentReads:
    """The page's rows from the work index; a work id it does not hold is retrieved from the Work API (retention)."""
    reads = await sync_to_async(_environment_reads)(environment_id, query, now)
    if reads.listing.rows or query.cursor or not _is_work_id(query.find):
        return reads
    found = await attempt(c.retrieve_work(environment_id, query.find))
    if found.value is not None and query.keeps(found.value, now):
        reads.listing = WorkListing(rows=work_rows([found.value], now), total=1, from_upstream=True)
    elif found.error is not None and not isinstance(found.error, NotFound):
        reads.listing.failure = found.banner
    return reads


@require_GET
@require_action("view")
async def environment(request: HtmxHttpRequest, env_id: str) -> HttpResponse:
    """An environment's work items from the work index, newest first, paged both ways, filtered and searched."""
    try:
        validate_environment_id(env_id)
    except InvalidID as exc:
        return await problem(request, 404, "No such environment", exc.message)
    region = next((r for r in ("work-list", "history") if wants_region(request, r)), "")
    try:
        query = work_list_query(request)
        if query.cursor:
            queries.decode_cursor(query.cursor)  # a cursor the index did not hand out is refused here
        window = history_window(request)
    except (BadParameter, queries.InvalidCursor) as exc:
        return await problem(
            request, 400, "That page cannot be shown", str(exc), context={"env_id": env_id}, region=region
        )
    now = timezone.now()
    # The window's links keep the list's filters, and the list's links keep the window.
    params = {**query.params(), "history": "" if window == history.DEFAULT_WINDOW else window.name}
    if region == "history":
        # The section refreshes itself once a minute, and its window links swap it alone: the index only.
        history_context: dict[str, Any] = {
            "env_id": env_id,
            "history": await sync_to_async(regions.history_region)(env_id, window, now),
            "params": params,
        }
        return await render_page(request, "dashboard/pages/environment.html#history-region", history_context)
    async with upstream.client() as c:
        if region:
            # The list alone (the live page asks for it when the index's counts change): no environment or stats
            # read, so following an environment costs the upstream nothing per refresh.
            env, stats = Outcome[Environment](), Outcome[QueueStats]()
            key, reads = await asyncio.gather(
                upstream.environment_key(env_id), list_environment_work(c, env_id, query, now)
            )
            environment_history = None
        else:
            # The two upstream reads go out at once, and the database reads run while they are on their way.
            env, stats, key, reads, environment_history = await asyncio.gather(
                attempt(c.retrieve_environment(env_id)),
                attempt(c.work_stats(env_id)),
                upstream.environment_key(env_id),
                list_environment_work(c, env_id, query, now),
                sync_to_async(regions.history_region)(env_id, window, now),
            )
    if isinstance(env.error, NotFound):
        return await problem(
            request,
            404,
            "No such environment",
            f"The Work API has no environment {env_id}.",
            failure=env.banner,
        )
    listing = reads.listing
    if key is None and listing.failure is None:
        listing.failure = upstream.missing_key_banner(env_id)
    user_can = await sync_to_async(capabilities)(request.user)
    queue_region = (
        ""
        if region
        else await sync_to_async(_queue_region)(env_id, env.value, stats, reads, key is not None, now)
    )
    context = {
        "nav": "overview",
        "env_id": env_id,
        "queue_region": queue_region,
        "environment": env.value,
        "environment_failure": env.banner,
        "stats": stats.value,
        "stats_failure": stats.banner,
        "has_key": key is not None,
        "listing": listing,
        # A dict: a template reads ``counts.total`` as ``counts["total"]`` first, which ``Counts`` answers per state.
        "counts": {**reads.counts.by_state, "total": reads.counts.total, "stuck": reads.counts.stuck},
        "index_mark": reads.counts.mark,
        "freshness": reads.freshness,
        "query": query,
        "params": params,
        "history": environment_history,
        "states": WORK_STATES,
        "page_sizes": PAGE_SIZE_CHOICES,
        "user_can": user_can,
        "bulk_url": _bulk_url(env_id) if user_can.get("bulk") else "",
        "checked_at": now,
    }
    failed = listing.failure is not None and listing.failure.get("kind") != "no_environment_key"
    template = "dashboard/pages/_work_list.html" if region else "dashboard/pages/environment.html"
    return await render_page(request, template, context, status=502 if failed else 200)


def _queue_region(
    env_id: str,
    environment: Environment | None,
    stats: Outcome[QueueStats],
    reads: EnvironmentReads,
    has_key: bool,
    now: datetime,
) -> str:
    """The environment page's queue panel: the partial the feed's frames render (``live/_environment.html``), drawn
    from this page's own read of the stats and of the work index (the counts the list shows, not read again)."""
    from django.template.loader import render_to_string

    from dashboard.live import conf
    from dashboard.live.snapshots import template_context

    name = environment.name if environment is not None else env_id
    snapshot = regions.snapshot_of_stats(env_id, name, stats.value, stats.banner, now)
    figures = regions.figures_of(reads.counts, filled=reads.freshness.filled)
    regions.apply_index_figures(snapshot, figures, has_key=has_key)
    return render_to_string(
        "live/_environment.html", {**template_context(snapshot, conf.feed_interval()), "oob": False}
    )


def _bulk_url(env_id: str) -> str:
    # The bulk action belongs to dashboard.actions; until its route exists the page simply offers no bulk form.
    try:
        return reverse("bulk", args=[env_id])
    except Exception:
        return ""


# --- Work item ---------------------------------------------------------------------------------------------------


def _audit_entries(work_id: str) -> list[Any]:
    return list(audit.entries_for_work(work_id)[:200])


@dataclass
class ItemReads:
    """The item page's reads of the database: the index's row (None when it does not hold the item), its
    timeline, the audit trail, and how fresh the index is."""

    row: IndexedWork | None
    timeline: list[Any]
    audit_entries: list[Any]
    freshness: queries.Freshness


def _item_reads(env_id: str, work_id: str, now: datetime) -> ItemReads:
    return ItemReads(
        row=queries.item(env_id, work_id),
        timeline=queries.timeline(env_id, work_id),
        audit_entries=_audit_entries(work_id),
        freshness=queries.freshness(env_id, now),
    )


async def _retrieved(
    c: WorkAPIClient, env_id: str, work_id: str, row: IndexedWork | None
) -> Outcome[WorkItem]:
    if row is not None:
        return Outcome(value=queries.as_work_item(row))
    return await attempt(c.retrieve_work(env_id, work_id))


@require_GET
@require_action("view")
async def work_item(request: HtmxHttpRequest, env_id: str, work_id: str) -> HttpResponse:
    """Every field of one work item (the index's row; a direct retrieve when the index no longer holds it), its
    lease health, timeline, metadata, audit trail, and the actions the user may take."""
    try:
        validate_environment_id(env_id)
        validate_work_id(work_id)
    except InvalidID as exc:
        return await problem(request, 404, "No such work item", exc.message)
    now = timezone.now()
    async with upstream.client() as c:
        # The environment's retrieve goes out while the database is read; the item is retrieved only when the index
        # does not hold it.
        environment_read = asyncio.ensure_future(attempt(c.retrieve_environment(env_id)))
        try:
            reads = await sync_to_async(_item_reads)(env_id, work_id, now)
        except BaseException:
            environment_read.cancel()
            raise
        item, env = await asyncio.gather(_retrieved(c, env_id, work_id, reads.row), environment_read)
    if isinstance(item.error, NotFound):
        return await problem(
            request,
            404,
            "No such work item",
            f"Environment {env_id} has no work item {work_id}.",
            failure=item.banner,
            context={"audit_entries": reads.audit_entries, "env_id": env_id},
        )
    context: dict[str, Any] = {
        "nav": "overview",
        "env_id": env_id,
        "work_id": work_id,
        "environment": env.value,
        "environment_failure": env.banner if not isinstance(env.error, NotFound) else None,
        "item": item.value,
        "item_failure": item.banner,
        "from_upstream": reads.row is None,
        "confirmed_at": reads.row.confirmed_at if reads.row is not None else now,
        "timeline": reads.timeline,
        "freshness": reads.freshness,
        "audit_entries": reads.audit_entries,
        "user_can": await sync_to_async(capabilities)(request.user),
        "checked_at": now,
    }
    if item.value is not None:
        context["stuck_reason"] = stuck.stuck_reason(item.value, now)
        context["lease"] = stuck.lease_health(item.value, now)
        # Everything known of it, for the curious; the secret is only ever sent to workers, never shown here.
        context["raw_fields"] = sorted(
            (key, json.dumps(value, ensure_ascii=False))
            for key, value in item.value.raw.items()
            if key != "secret"
        )
        # The header's state, the lease panel and the item's mark: the partials the feed's frames render, from the
        # same ItemView (live/_item.html).
        context["item_view"] = ItemView.of(work_id, item.value, now)
        context["item_mark"] = context["item_view"].mark
        context["live_interval"] = f"{float(settings.FEED_INTERVAL_SECONDS):g}"
    template = "dashboard/pages/work_item.html"
    if wants_region(request, "item-body"):
        template += "#item-body"
    return await render_page(request, template, context, status=502 if item.error else 200)


# --- Stuck work --------------------------------------------------------------------------------------------------


@dataclass
class StuckInEnvironment:
    environment: Environment
    has_key: bool
    # Exact: every stuck item of the environment in the index (``rows`` may show fewer, see STUCK_ROWS_SHOWN).
    count: int = 0
    rows: list[WorkRow] = field(default_factory=list)


@dataclass
class StuckReads:
    counts: dict[str, int]
    rows: list[IndexedWork]
    freshness: queries.Freshness
    mark: str = ""


def _stuck_reads(environment_ids: list[str], now: datetime) -> StuckReads:
    rows = queries.stuck_items(now=now).filter(environment_id__in=environment_ids)
    return StuckReads(
        counts=queries.stuck_counts(environment_ids, now),
        rows=list(rows[:STUCK_ROWS_SHOWN]),
        freshness=queries.freshness(now=now),
        mark=queries.stuck_mark(now),
    )


async def stuck_sections(
    environments: Sequence[Environment], now: datetime
) -> tuple[list[StuckInEnvironment], queries.Freshness, str]:
    """Every stuck item of every environment shown, as the work index has them (exact, whatever the history)."""
    reads = await sync_to_async(_stuck_reads)([env.id for env in environments], now)
    by_environment: dict[str, list[IndexedWork]] = {}
    for row in reads.rows:
        by_environment.setdefault(row.environment_id, []).append(row)
    # Which environments have a key, in one read (not one thread hop and query per environment).
    keyed = await upstream.keyed_environments()
    sections = []
    for env in environments:
        sections.append(
            StuckInEnvironment(
                environment=env,
                has_key=env.id in keyed,
                count=reads.counts.get(env.id, 0),
                rows=index_rows(by_environment.get(env.id, []), now),
            )
        )
    return sections, reads.freshness, reads.mark


def stuck_context(sections: list[StuckInEnvironment], freshness: queries.Freshness) -> dict[str, Any]:
    """What the stuck page's live region shows (the page's GET and the feed render the same partial)."""
    total = sum(section.count for section in sections)
    return {
        "sections": sections,
        "total": total,
        "shown": sum(len(section.rows) for section in sections),
        "rows_shown_max": STUCK_ROWS_SHOWN,
        "without_key": [section for section in sections if not section.has_key],
        "thresholds": stuck.thresholds(),
        "freshness": freshness,
    }


@require_GET
@require_action("view")
async def stuck_work(request: HtmxHttpRequest) -> HttpResponse:
    """Every stuck work item in every self-hosted environment, with exact counts per environment."""
    now = timezone.now()
    region = wants_region(request, "stuck-region")
    async with upstream.client() as c:
        # The region reads itself again when the live feed's mark of the stuck set changes, from the work index:
        # the environments list it names comes from the remembered copy then, so it costs the upstream nothing.
        environments = await attempt(
            cached_self_hosted_environments(c) if region else self_hosted_environments(c)
        )
    sections, freshness, mark = await stuck_sections(environments.value or [], now)
    context = {
        "nav": "stuck",
        "failure": environments.banner,
        "checked_at": now,
        "stuck_mark": mark,
        "bulk_limit": int(settings.BULK_MAX_ITEMS),
        "user_can": await sync_to_async(capabilities)(request.user),
        **stuck_context(sections, freshness),
    }
    template = "dashboard/pages/stuck.html"
    if region:
        template += "#stuck-region"
    return await render_page(request, template, context, status=502 if environments.error else 200)


# --- Bulk operations ---------------------------------------------------------------------------------------------

BULK_HISTORY_PAGE_SIZE = 25


def _bulk_history_page(number: str | None) -> Any:
    from django.core.paginator import Paginator
    from django.db.models import Count, Q

    from dashboard.index.models import IndexedEnvironment
    from dashboard.models import BulkItem, BulkOperation

    operations = BulkOperation.objects.order_by("-created_at", "-pk").annotate(
        total=Count("items"),
        **{
            f"n_{status}": Count("items", filter=Q(items__status=status))
            for status in (
                BulkItem.Status.PENDING,
                BulkItem.Status.STOPPED,
                BulkItem.Status.STOPPING,
                BulkItem.Status.ALREADY_STOPPED,
                BulkItem.Status.FAILED,
            )
        },
    )
    page = Paginator(operations, BULK_HISTORY_PAGE_SIZE).get_page(number)
    rows = list(page.object_list)
    names = dict(
        IndexedEnvironment.objects.filter(
            environment_id__in={op.environment_id for op in rows if op.environment_id}
        )
        .exclude(name="")
        .values_list("environment_id", "name")
    )
    across = {
        op.pk: sorted(set(op.items.exclude(environment_id="").values_list("environment_id", flat=True)))
        for op in rows
        if op.across_environments
    }
    for op in rows:
        op.environment_name = names.get(op.environment_id, "")
        op.environments = across.get(op.pk, [])
    return page, rows


@require_GET
@require_action("view")
async def bulk_history(request: HtmxHttpRequest) -> HttpResponse:
    """Recent bulk stops in every environment, newest first: who, when, how, why, and what became of the items;
    each links to its own page. Any role may read it, as the audit log."""
    page, operations = await sync_to_async(_bulk_history_page)(request.GET.get("page"))
    context = {"nav": "bulk_history", "page": page, "operations": operations}
    return await render_page(request, "dashboard/pages/bulk_history.html", context)


# --- Search ------------------------------------------------------------------------------------------------------


def _search_reads(find: str, older: str, newer: str, now: datetime) -> tuple[queries.Page, queries.Freshness]:
    rows = queries.work_items(None, q=find, now=now)
    return (
        queries.page(rows, older=older or None, newer=newer or None, limit=PAGE_SIZE_DEFAULT),
        queries.freshness(now=now),
    )


@require_GET
@require_action("view")
async def search(request: HtmxHttpRequest) -> HttpResponse:
    """Find work in every environment: a work id goes to its item, anything else (a session id, ``key=value``,
    words of the metadata) lists what matches, from the work index."""
    raw = request.GET.get("q", "").strip()
    # Kept in the search box to fix a typo, unless it looks like a credential pasted into the wrong box.
    context: dict[str, Any] = {"search_query": raw[:MAX_FIND_LENGTH] if redact(raw) == raw else ""}
    if not raw:
        return await problem(
            request,
            400,
            "Nothing to find",
            "Type a work id (work_…), a session id, key=value or words of the metadata.",
            context=context,
        )
    if raw.startswith("env_") and " " not in raw:
        try:
            validate_environment_id(raw)
        except InvalidID as exc:
            return await problem(request, 400, "Not a valid id", exc.message, context=context)
        return HttpResponseRedirect(reverse("environment", args=[raw]))
    if raw.startswith("work_") and " " not in raw:
        # Something typed as a work id that is not one gets told so, not an empty list of matches.
        try:
            validate_work_id(raw)
        except InvalidID as exc:
            return await problem(request, 400, "Not a valid id", exc.message, context=context)
    try:
        q = checked_find(raw)
        older, newer = _checked_cursor(request, "older"), _checked_cursor(request, "newer")
        now = timezone.now()
        found, freshness = await sync_to_async(_search_reads)(q, older, newer, now)
    except (BadParameter, queries.InvalidCursor, queries.InvalidSearch) as exc:
        return await problem(request, 400, "That search cannot be run", str(exc), context=context)
    if _is_work_id(q) and not older and not newer:
        exact = [row for row in found.items if row.work_id == q]
        if exact:
            return HttpResponseRedirect(reverse("work_item", args=[exact[0].environment_id, q]))
        return await _find_work_upstream(request, q, context)
    context.update(
        {
            "nav": "",
            "q": q,
            "rows": index_rows(found.items, now),
            "found": found,
            "params": {"q": q},
            "freshness": freshness,
            "checked_at": now,
        }
    )
    return await render_page(request, "dashboard/pages/search.html", context)


async def _find_work_upstream(request: HttpRequest, q: str, context: dict[str, Any]) -> HttpResponse:
    """A work id the index does not hold (stopped past the retention, or not synced yet): ask every environment."""
    async with upstream.client() as c:
        environments = await attempt(cached_self_hosted_environments(c))
        if environments.value is None:
            return await problem(
                request,
                502,
                "Could not search",
                "The list of environments could not be read.",
                failure=environments.banner,
                context=context,
            )
        found, failures = await _find_work(c, environments.value, q)
        if found is None and not failures:
            # The remembered list may predate a new environment: look once more with a fresh one.
            known = {env.id for env in environments.value}
            fresh = await attempt(cached_self_hosted_environments(c, fresh=True))
            newer = [env for env in fresh.value or [] if env.id not in known]
            if newer:
                found, failures = await _find_work(c, newer, q)
    if found is not None:
        return HttpResponseRedirect(reverse("work_item", args=[found.environment_id, found.id]))
    if failures:
        names = ", ".join(env.name for env, _ in failures[:5])
        return await problem(
            request,
            502,
            "Could not search every environment",
            f"{q} was not found in the environments that answered; {len(failures)} did not answer ({names}).",
            failure=upstream.failure_banner(failures[0][1]),
            context=context,
        )
    return await problem(
        request,
        404,
        "Work item not found",
        f"No self-hosted environment holds {q}. It may have been removed, or the id may be mistyped.",
        context=context,
    )


async def _find_work(
    c: WorkAPIClient, environments: Sequence[Environment], work_id: str
) -> tuple[WorkItem | None, list[tuple[Environment, WorkAPIError]]]:
    outcomes = await gather_bounded([attempt(c.retrieve_work(env.id, work_id)) for env in environments])
    failures: list[tuple[Environment, WorkAPIError]] = []
    for env, outcome in zip(environments, outcomes, strict=True):
        if outcome.value is not None:
            return outcome.value, []
        if outcome.error is not None and not isinstance(outcome.error, NotFound):
            failures.append((env, outcome.error))
    return None, failures


# --- Preferences, robots, health ---------------------------------------------------------------------------------


@require_POST
@require_action("view")
async def time_preference(request: HttpRequest) -> HttpResponse:
    """Remember whether this person reads times in their browser's time zone (sent by static/app.js)."""
    local_time = request.POST.get("local_time") == "1"
    await UserPreference.objects.aupdate_or_create(
        user_id=request.user.pk, defaults={"local_time": local_time}
    )
    return HttpResponse(status=204)


THEMES = ("auto", "light", "dark")


@require_POST
@require_action("view")
async def theme_preference(request: HttpRequest) -> HttpResponse:
    """Remember this person's colours (the system's setting, light or dark), then back to the page they were on."""
    theme = str(request.POST.get("theme", ""))
    if theme not in THEMES:
        return HttpResponse(
            f"The colours must be one of: {', '.join(THEMES)}.", status=400, content_type="text/plain"
        )
    await UserPreference.objects.aupdate_or_create(user_id=request.user.pk, defaults={"theme": theme})
    back = str(request.POST.get("next", ""))
    safe = url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=False)
    return HttpResponseRedirect(back if back.startswith("/") and safe else reverse("overview"))


@require_GET
def robots_txt(request: HttpRequest) -> HttpResponse:
    """Keep crawlers out of an ops tool, whatever else is in front of it."""
    return HttpResponse("User-agent: *\nDisallow: /\n", content_type="text/plain")


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up: nothing else is checked (see ``readyz``)."""
    return HttpResponse("ok\n", content_type="text/plain")
