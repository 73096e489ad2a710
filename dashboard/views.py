"""The dashboard's read pages (overview, environment, work item, stuck work, search) and the health check.

Each page is an async view: it reads the Work API through ``dashboard.upstream`` (calls that do not depend on each
other go out together), then renders. An upstream failure never becomes a server error: the page renders with a
banner naming the failure, when it happened and the upstream request-id. Ids in URLs are checked before any
upstream call. A request from htmx for one region of a page (``HX-Target``) gets only that region.

The actions (metadata patch, stop, bulk) live in ``dashboard.actions``, the audit log pages in ``dashboard.auditlog``,
the configuration pages in ``dashboard.configure``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from dashboard import audit, regions, stuck, upstream
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
# Filtering, finding and counting read the upstream list page by page (newest first); they stop after this many
# items so one page view can never walk an environment of millions. Pages say when the limit was reached.
SCAN_LIMIT = 2000
SCAN_PAGE_SIZE = 100
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


def work_rows(items: Sequence[WorkItem], now: datetime) -> list[WorkRow]:
    rows = []
    for item in items:
        try:
            validate_work_id(item.id)
            validate_environment_id(item.environment_id)
            linkable = True
        except InvalidID:
            linkable = False
        rows.append(WorkRow(item=item, stuck_reason=stuck.stuck_reason(item, now), linkable=linkable))
    return rows


@dataclass
class Scan:
    """What a page-by-page read of an environment's work list found."""

    matches: list[WorkItem]
    scanned: int
    next_page: str | None  # where to carry on, None when the end of the list was reached
    capped: bool  # stopped because SCAN_LIMIT items were read, not because the list ended


async def scan_work(
    c: WorkAPIClient,
    environment_id: str,
    environment_key: str,
    keep: Callable[[WorkItem], bool],
    *,
    start: str | None = None,
    want: int | None = None,
) -> Scan:
    """Read the work list from ``start`` until ``want`` matches, the end, or ``SCAN_LIMIT`` items read."""
    budget = SCAN_LIMIT
    matches: list[WorkItem] = []
    scanned = 0
    cursor = start
    seen: set[str] = set()
    while True:
        page = await c.list_work(
            environment_id, environment_key=environment_key, limit=SCAN_PAGE_SIZE, page=cursor
        )
        scanned += len(page.data)
        matches.extend(item for item in page.data if keep(item))
        cursor = page.next_page
        if cursor is None or cursor in seen:
            return Scan(matches, scanned, None, capped=False)
        seen.add(cursor)
        if want is not None and len(matches) >= want:
            return Scan(matches, scanned, cursor, capped=False)
        if scanned >= budget:
            return Scan(matches, scanned, cursor, capped=True)


# --- Overview ----------------------------------------------------------------------------------------------------


@dataclass
class Tile:
    """One environment on the overview."""

    environment: Environment
    stats: QueueStats | None = None
    stats_failure: dict[str, Any] | None = None
    has_key: bool = False
    active: int | None = None
    stuck: int | None = None
    scanned: int = 0
    scan_capped: bool = False
    work_failure: dict[str, Any] | None = None
    oldest_queued_seconds: float | None = None

    @property
    def starving(self) -> bool:
        """Work waits and no worker polls (an unknown worker count is not a warning)."""
        return self.stats is not None and self.stats.depth > 0 and self.stats.workers_polling == 0


async def environment_tile(c: WorkAPIClient, environment: Environment, now: datetime) -> Tile:
    tile = Tile(environment=environment)
    key = await upstream.environment_key(environment.id)
    tile.has_key = key is not None

    async def counts() -> Outcome[Scan]:
        if key is None:
            return Outcome()
        return await attempt(scan_work(c, environment.id, key, lambda item: item.state != "stopped"))

    stats, scan = await asyncio.gather(attempt(c.work_stats(environment.id)), counts())
    tile.stats, tile.stats_failure = stats.value, stats.banner
    if tile.stats is not None and tile.stats.oldest_queued_at is not None:
        tile.oldest_queued_seconds = max(0.0, (now - tile.stats.oldest_queued_at).total_seconds())
    tile.work_failure = scan.banner
    if scan.value is not None:
        live = scan.value.matches
        tile.active = sum(1 for item in live if item.state == "active")
        tile.stuck = sum(1 for item in live if stuck.stuck_reason(item, now) is not None)
        tile.scanned, tile.scan_capped = scan.value.scanned, scan.value.capped
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
        "tiles": tiles,
        "failure": environments.banner,
        "checked_at": now,
        "scan_limit": SCAN_LIMIT,
        "starving_count": sum(1 for tile in tiles if tile.starving),
        "stuck_total": sum(tile.stuck or 0 for tile in tiles),
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
    cursor: str = ""

    @property
    def filtering(self) -> bool:
        return bool(self.state or self.stuck or self.find)

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
        if self.state and item.state != self.state:
            return False
        if self.stuck and stuck.stuck_reason(item, now) is None:
            return False
        return not self.find or _found(item, self.find)


def _found(item: WorkItem, find: str) -> bool:
    """A session id matches ``data.id``; ``key=value`` matches a metadata entry exactly."""
    if item.data.id == find or item.id == find:
        return True
    key, sep, value = find.partition("=")
    return bool(sep) and item.metadata.get(key.strip()) == value.strip()


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
    find = request.GET.get("q", "").strip()
    if redact(find) != find:
        raise BadParameter(
            "That looks like a credential: it is neither searched for nor shown. Search by id or metadata."
        )
    if len(find) > MAX_FIND_LENGTH:
        raise BadParameter(f"The search text is {len(find)} characters long; at most {MAX_FIND_LENGTH}.")
    cursor = request.GET.get("page", "").strip()
    if len(cursor) > MAX_CURSOR_LENGTH or not cursor.isascii() or not cursor.isprintable() or " " in cursor:
        raise BadParameter(
            "The page cursor is not one this dashboard produced; start again from the newest items."
        )
    return WorkListQuery(
        limit=limit, state=state, stuck=raw_stuck in ("1", "on", "true"), find=find, cursor=cursor
    )


@dataclass
class WorkListing:
    rows: list[WorkRow] = field(default_factory=list)
    next_page: str | None = None
    scanned: int | None = None  # set when the page filtered or searched (read more than one upstream page)
    capped: bool = False
    failure: dict[str, Any] | None = None
    # Finding by work id asks the item directly (no environment key needed), so it is exact and unbounded.
    exact_lookup: bool = False


async def list_environment_work(
    c: WorkAPIClient, environment_id: str, key: str | None, query: WorkListQuery, now: datetime
) -> WorkListing:
    if query.find.startswith("work_"):
        try:
            validate_work_id(query.find)
        except InvalidID:
            return WorkListing(exact_lookup=True)
        found = await attempt(c.retrieve_work(environment_id, query.find))
        if isinstance(found.error, NotFound):
            return WorkListing(exact_lookup=True)
        if found.value is None:
            return WorkListing(failure=found.banner, exact_lookup=True)
        rows = work_rows([found.value], now) if query.keeps(found.value, now) else []
        return WorkListing(rows=rows, exact_lookup=True)
    if key is None:
        return WorkListing(failure=upstream.missing_key_banner(environment_id))
    if not query.filtering:
        page = await attempt(
            c.list_work(environment_id, environment_key=key, limit=query.limit, page=query.cursor or None)
        )
        if page.value is None:
            return WorkListing(failure=page.banner)
        return WorkListing(rows=work_rows(page.value.data, now), next_page=page.value.next_page)
    scan = await attempt(
        scan_work(
            c,
            environment_id,
            key,
            lambda item: query.keeps(item, now),
            start=query.cursor or None,
            want=query.limit,
        )
    )
    if scan.value is None:
        return WorkListing(failure=scan.banner)
    return WorkListing(
        rows=work_rows(scan.value.matches, now),
        next_page=scan.value.next_page,
        scanned=scan.value.scanned,
        capped=scan.value.capped,
    )


@require_GET
@require_action("view")
async def environment(request: HtmxHttpRequest, env_id: str) -> HttpResponse:
    """An environment's work items, newest first, paged through the upstream cursors, filtered and searched."""
    try:
        validate_environment_id(env_id)
    except InvalidID as exc:
        return await problem(request, 404, "No such environment", exc.message)
    try:
        query = work_list_query(request)
    except BadParameter as exc:
        region = "work-list" if wants_region(request, "work-list") else ""
        return await problem(
            request, 400, "That page cannot be shown", str(exc), context={"env_id": env_id}, region=region
        )
    now = timezone.now()
    key = await upstream.environment_key(env_id)
    async with upstream.client() as c:
        env, stats, listing = await asyncio.gather(
            attempt(c.retrieve_environment(env_id)),
            attempt(c.work_stats(env_id)),
            list_environment_work(c, env_id, key, query, now),
        )
    if isinstance(env.error, NotFound):
        return await problem(
            request,
            404,
            "No such environment",
            f"The Work API has no environment {env_id}.",
            failure=env.banner,
        )
    user_can = await sync_to_async(capabilities)(request.user)
    context = {
        "nav": "overview",
        "env_id": env_id,
        "environment": env.value,
        "environment_failure": env.banner,
        "stats": stats.value,
        "stats_failure": stats.banner,
        "has_key": key is not None,
        "listing": listing,
        "query": query,
        "params": query.params(),
        "states": WORK_STATES,
        "page_sizes": PAGE_SIZE_CHOICES,
        "scan_limit": SCAN_LIMIT,
        "user_can": user_can,
        "bulk_url": _bulk_url(env_id) if user_can.get("bulk") else "",
        "checked_at": now,
    }
    failed = listing.failure is not None and listing.failure.get("kind") != "no_environment_key"
    template = (
        "dashboard/pages/_work_list.html"
        if wants_region(request, "work-list")
        else "dashboard/pages/environment.html"
    )
    return await render_page(request, template, context, status=502 if failed else 200)


def _bulk_url(env_id: str) -> str:
    # The bulk action belongs to dashboard.actions; until its route exists the page simply offers no bulk form.
    try:
        return reverse("bulk", args=[env_id])
    except Exception:
        return ""


# --- Work item ---------------------------------------------------------------------------------------------------


def _audit_entries(work_id: str) -> list[Any]:
    return list(audit.entries_for_work(work_id)[:200])


@require_GET
@require_action("view")
async def work_item(request: HtmxHttpRequest, env_id: str, work_id: str) -> HttpResponse:
    """Every field of one work item, its lease health, metadata, audit trail, and the actions the user may take."""
    try:
        validate_environment_id(env_id)
        validate_work_id(work_id)
    except InvalidID as exc:
        return await problem(request, 404, "No such work item", exc.message)
    now = timezone.now()
    async with upstream.client() as c:
        item, env = await asyncio.gather(
            attempt(c.retrieve_work(env_id, work_id)), attempt(c.retrieve_environment(env_id))
        )
    entries = await sync_to_async(_audit_entries)(work_id)
    if isinstance(item.error, NotFound):
        return await problem(
            request,
            404,
            "No such work item",
            f"Environment {env_id} has no work item {work_id}.",
            failure=item.banner,
            context={"audit_entries": entries, "env_id": env_id},
        )
    context: dict[str, Any] = {
        "nav": "overview",
        "env_id": env_id,
        "work_id": work_id,
        "environment": env.value,
        "environment_failure": env.banner if not isinstance(env.error, NotFound) else None,
        "item": item.value,
        "item_failure": item.banner,
        "audit_entries": entries,
        "user_can": await sync_to_async(capabilities)(request.user),
        "checked_at": now,
    }
    if item.value is not None:
        context["stuck_reason"] = stuck.stuck_reason(item.value, now)
        context["lease"] = stuck.lease_health(item.value, now)
        # Everything the API sent, for the curious; the secret is only ever sent to workers, never shown here.
        context["raw_fields"] = sorted(
            (key, json.dumps(value, ensure_ascii=False))
            for key, value in item.value.raw.items()
            if key != "secret"
        )
    return await render_page(
        request, "dashboard/pages/work_item.html", context, status=502 if item.error else 200
    )


# --- Stuck work --------------------------------------------------------------------------------------------------


@dataclass
class StuckInEnvironment:
    environment: Environment
    has_key: bool
    rows: list[WorkRow] = field(default_factory=list)
    scanned: int = 0
    capped: bool = False
    failure: dict[str, Any] | None = None


async def stuck_in_environment(
    c: WorkAPIClient, environment: Environment, now: datetime
) -> StuckInEnvironment:
    key = await upstream.environment_key(environment.id)
    result = StuckInEnvironment(environment=environment, has_key=key is not None)
    if key is None:
        return result
    scan = await attempt(scan_work(c, environment.id, key, lambda item: stuck.is_stuck(item, now)))
    result.failure = scan.banner
    if scan.value is not None:
        result.rows = work_rows(scan.value.matches, now)
        result.scanned, result.capped = scan.value.scanned, scan.value.capped
    return result


@require_GET
@require_action("view")
async def stuck_work(request: HtmxHttpRequest) -> HttpResponse:
    """Every stuck work item in every self-hosted environment, with counts per environment."""
    now = timezone.now()
    async with upstream.client() as c:
        environments = await attempt(self_hosted_environments(c))
        sections = (
            await gather_bounded([stuck_in_environment(c, env, now) for env in environments.value])
            if environments.value is not None
            else []
        )
    context = {
        "nav": "stuck",
        "sections": sections,
        "failure": environments.banner,
        "total": sum(len(section.rows) for section in sections),
        "without_key": [section for section in sections if not section.has_key],
        "thresholds": stuck.thresholds(),
        "scan_limit": SCAN_LIMIT,
        "checked_at": now,
        "user_can": await sync_to_async(capabilities)(request.user),
    }
    return await render_page(
        request, "dashboard/pages/stuck.html", context, status=502 if environments.error else 200
    )


# --- Search ------------------------------------------------------------------------------------------------------


@require_GET
@require_action("view")
async def search(request: HtmxHttpRequest) -> HttpResponse:
    """Go to the work item (or environment) with a pasted id, wherever it lives."""
    q = request.GET.get("q", "").strip()
    # Kept in the search box to fix a typo, unless it looks like a credential pasted into the wrong box.
    context: dict[str, Any] = {"search_query": q[:MAX_FIND_LENGTH] if redact(q) == q else ""}
    if not q:
        return await problem(
            request, 400, "Nothing to find", "Paste a work id (work_…) to go to it.", context=context
        )
    if q.startswith("env_"):
        try:
            validate_environment_id(q)
        except InvalidID as exc:
            return await problem(request, 400, "Not a valid id", exc.message, context=context)
        return HttpResponseRedirect(reverse("environment", args=[q]))
    try:
        validate_work_id(q)
    except InvalidID as exc:
        return await problem(request, 400, "Not a valid work id", exc.message, context=context)
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


@require_GET
def robots_txt(request: HttpRequest) -> HttpResponse:
    """Keep crawlers out of an ops tool, whatever else is in front of it."""
    return HttpResponse("User-agent: *\nDisallow: /\n", content_type="text/plain")


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up: nothing else is checked (see ``readyz``)."""
    return HttpResponse("ok\n", content_type="text/plain")
