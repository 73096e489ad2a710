"""Pages and endpoints of the live layer: wall-display links (admin), the kiosk page, ``/readyz`` and ``/metrics``.

- ``/displays/``: admins create display links (shown once), see who made them and when they were last opened,
  and revoke them. Creating and revoking are audited.
- ``/display/<token>/``: the kiosk page, opened without a login. A forged token is a 404, a revoked one a 403.
  Openings are audited once per link per hour with their count (``display_opened``, via "display"). It shows only
  environments the link was made for, and only what any viewer may see; it has no buttons and no forms.
- ``/readyz``: database, channel layer and upstream, each checked with a short timeout; 503 if one fails.
- ``/metrics``: Prometheus text. With ``METRICS_TOKEN`` set it needs ``Authorization: Bearer <token>``; without it,
  only requests from the loopback address that no proxy forwarded are answered (a scraper on the same host).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
import zoneinfo
from datetime import timedelta
from typing import Any

import segno
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from dashboard import audit, confirm, regions, shown_once, upstream
from dashboard.live import conf, fanout
from dashboard.live.feed import feed_client, group_name, read_cached, read_directory, shared_state
from dashboard.live.forms import DisplayLinkForm
from dashboard.live.models import DisplayLink
from dashboard.live.snapshots import placeholder, template_context
from dashboard.live.sparkline import sparkline
from dashboard.permissions import require_action
from workqueue.errors import WorkAPIError

# Openings of one display link are audited together, once per this period (with their count).
DISPLAY_AUDIT_EVERY = timedelta(hours=1)

# --- Display links (admin) ---------------------------------------------------------------------------------------


async def _directory() -> list[dict[str, str]] | None:
    async with shared_state() as coordinator, feed_client() as client:
        return await read_directory(coordinator, client)


def _directory_sync() -> list[dict[str, str]] | None:
    return async_to_sync(_directory)()


def _time_zones() -> list[str]:
    return sorted(zone for zone in zoneinfo.available_timezones() if "/" in zone or zone == "UTC")


@require_http_methods(["GET", "POST"])
@require_action("configure")
def display_links(request: HttpRequest) -> HttpResponse:
    """List the display links; POST creates one and redirects to the page that shows its address once."""
    directory = _directory_sync() or []
    errors: dict[str, str] = {}
    values: dict[str, Any] = {"name": "", "environments": [], "time_zone": conf.display_time_zone()}
    if request.method == "POST":
        form = DisplayLinkForm(
            request.POST,
            environment_ids=[entry["id"] for entry in directory],
            default_time_zone=conf.display_time_zone(),
        )
        values, errors = form.values(), ({} if form.is_valid() else form.first_errors())
        if not errors:
            link = DisplayLink(
                name=form.cleaned_data["name"],
                environments=sorted(set(form.cleaned_data["environments"])),
                time_zone=form.cleaned_data["time_zone"],
                created_by=request.user if request.user.is_authenticated else None,
            )
            token = link.issue_token()
            link.save()
            audit.record(
                user=request.user,
                action="display_link_created",
                outcome="succeeded",
                sent={
                    "name": link.name,
                    "environments": link.environments or "all",
                    "time_zone": link.time_zone,
                },
                via=audit.via_of(request),
                token_name=link.name,
            )
            _refresh_feeds()
            # Post/redirect/get: a reload of the page that follows shows nothing new and creates nothing.
            shown_once.keep(request, "display_link", {"id": link.pk, "token": token})
            return redirect("display_link_created")
    return _links_page(request, directory, values, errors)


def _links_page(
    request: HttpRequest,
    directory: list[dict[str, str]],
    form: dict[str, Any],
    errors: dict[str, str],
    created: dict[str, Any] | None = None,
) -> HttpResponse:
    """The display-links page: the form, the links, and (just after creating one) its address."""
    names = {entry["id"]: entry["name"] for entry in directory}
    links = list(DisplayLink.objects.select_related("created_by", "revoked_by")[:200])
    for link in links:
        link.labels = [names.get(e, e) for e in link.environments]  # type: ignore[attr-defined]
    context = {
        "nav": "displays",
        "links": links,
        "directory": directory,
        "form": form,
        "errors": errors,
        "created": created,
        "time_zones": _time_zones(),
    }
    return render(request, "live/display_links.html", context, status=400 if errors else 200)


def link_qr_svg(url: str) -> SafeString:
    """The display link as a QR code, an inline SVG (no request leaves the page), for a TV's browser or a phone to
    open: dark modules on white in either colour scheme, as scanners expect, sized by the page's CSS."""
    code = segno.make(url, error="m")
    # segno writes only numbers, fixed colours and the title below into the SVG: nothing of the URL as text.
    return mark_safe(
        code.svg_inline(
            scale=1, border=4, dark="#000", light="#fff", omitsize=True, svgclass="qr-code", title="QR code"
        )
    )


@never_cache
@require_GET
@require_action("configure")
def display_link_created(request: HttpRequest) -> HttpResponse:
    """The new link's address, this once (never cached); afterwards the plain list of links."""
    kept = shown_once.take(request, "display_link")
    link = DisplayLink.objects.filter(pk=int(kept.get("id", 0))).first() if kept else None
    if link is None or kept is None:
        return redirect("display_links")
    url = request.build_absolute_uri(f"/display/{kept.get('token', '')}/")
    form = {"name": "", "environments": [], "time_zone": conf.display_time_zone()}
    response = _links_page(
        request, _directory_sync() or [], form, {}, {"link": link, "url": url, "qr": link_qr_svg(url)}
    )
    response["Cache-Control"] = "no-store"
    # The page holds the link's token: never let it travel further in a Referer.
    response["Referrer-Policy"] = "no-referrer"
    return response


@require_http_methods(["GET", "POST"])
@require_action("configure")
def revoke_display_link(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke a display link after a confirmation with a reason; screens showing it go dark at once."""
    link = get_object_or_404(DisplayLink, pk=pk)
    if link.revoked_at is not None:
        return redirect("display_links")
    reason, problem = confirm.read_reason(request.POST)
    problems = [problem] if problem and request.method == "POST" else []
    if request.method == "GET" or problems:
        return confirm.confirm_page(
            request,
            title=f"Revoke the display link “{link.name}”",
            facts=[
                ("Created", link.created_at.strftime("%Y-%m-%d %H:%M UTC")),
                (
                    "Last opened",
                    link.last_opened_at.strftime("%Y-%m-%d %H:%M UTC") if link.last_opened_at else "never",
                ),
            ],
            consequence="Every screen showing this link goes dark now; a revoked link cannot be restored.",
            button="Revoke the display link",
            cancel_url=reverse("display_links"),
            nav="displays",
            problems=problems,
            reason=reason,
        )
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.revoked_by = request.user if request.user.is_authenticated else None
        link.save(update_fields=["revoked_at", "revoked_by"])
        audit.record(
            user=request.user,
            action="display_link_revoked",
            outcome="succeeded",
            reason=reason,
            sent={"name": link.name},
            via=audit.via_of(request),
            token_name=link.name,
        )
        # Open screens showing this link close their socket now rather than at their next reconnect.
        async_to_sync(fanout.group_send)(group_name("display", str(link.pk)), {"type": "display.revoked"})
        _refresh_feeds()
    return redirect("display_links")


def _refresh_feeds() -> None:
    from dashboard.live.feed import current_runtime

    current = current_runtime()
    if current is not None and not current.stopped:
        # The runtime lives on the server's event loop; this view runs in a worker thread.
        current.loop.call_soon_threadsafe(current.refresh_displays)


# --- The kiosk page ----------------------------------------------------------------------------------------------


def _open_link(token: str) -> DisplayLink | None:
    link = DisplayLink.for_token(token)
    if link is not None and link.revoked_at is None:
        now = timezone.now()
        with transaction.atomic():
            locked = DisplayLink.objects.select_for_update().get(pk=link.pk)
            openings = locked.openings_unaudited + 1
            due = locked.last_audited_at is None or now - locked.last_audited_at >= DISPLAY_AUDIT_EVERY
            DisplayLink.objects.filter(pk=link.pk).update(
                last_opened_at=now,
                openings_unaudited=0 if due else openings,
                last_audited_at=now if due else locked.last_audited_at,
            )
            if due:
                # Anyone holding the link can open it: one entry per link per hour, with the count, so reloads
                # cannot grow the append-only log.
                audit.record(
                    user=None,
                    action="display_opened",
                    outcome="succeeded",
                    via="display",
                    token_name=link.name,
                    sent={"environments": link.environments or "all", "openings": openings},
                )
        link.last_opened_at = now
    return link


@require_GET
async def display(request: HttpRequest, token: str) -> HttpResponse:
    """The wall display: large tiles, no login, no buttons."""
    link = await sync_to_async(_open_link)(token)
    if link is None:
        raise Http404("No such display")
    if link.revoked_at is not None:
        body = await sync_to_async(render_to_string)("live/display_revoked.html", {"link": link})
        return HttpResponse(body, status=403)
    async with shared_state() as coordinator, feed_client() as client:
        directory = await read_directory(coordinator, client) or []
        environments = [entry for entry in directory if link.shows(entry["id"])]
        cached = await read_cached(coordinator, [entry["id"] for entry in environments])
    figures = await sync_to_async(regions.index_figures)(
        [entry["id"] for entry in environments], timezone.now()
    )
    tiles = []
    for entry, payload in zip(environments, cached, strict=True):
        if payload and payload.get("wall"):
            tiles.append(payload["wall"])
        else:
            # Before the feed's first frame: the queue figures are unknown, the counts are the index's already.
            snapshot = regions.apply_index_figures(
                placeholder(entry["id"], entry["name"]), figures.get(entry["id"])
            )
            context = {**template_context(snapshot, conf.feed_interval()), "oob": False}
            context["sparkline"] = sparkline([], snapshot.published_at)
            tiles.append(await sync_to_async(render_to_string)("live/_wall_tile.html", context))
    context = {
        "link": link,
        "tiles": tiles,
        "environment_ids": [entry["id"] for entry in environments],
        "directory_known": bool(directory),
        "token": token,
        "time_zone": link.time_zone,
        "label": getattr(settings, "DASHBOARD_LABEL", ""),
        "interval": f"{conf.feed_interval():g}",
    }
    body = await sync_to_async(render_to_string)("live/display.html", context, request)
    response = HttpResponse(body)
    # The token is in the URL: never let it travel further in a Referer.
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    return response


# --- Health ------------------------------------------------------------------------------------------------------

_UPSTREAM_CHECK_CACHE_SECONDS = 5.0
_upstream_checked: tuple[float, dict[str, Any]] | None = None


def _database_check() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _check(name: str, check: Any, timeout: float) -> dict[str, Any]:
    try:
        await asyncio.wait_for(check(), timeout=timeout)
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {timeout:g} s"}
    except WorkAPIError as exc:
        return {"ok": False, "error": exc.kind, "status": exc.status, "request_id": exc.request_id or ""}
    except Exception as exc:
        # The exception's class says what failed; its text may name hosts or users, so it stays in the log.
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


async def _channel_layer_check() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel("readyz.")
    await layer.send(channel, {"type": "readyz.ping"})
    message = await layer.receive(channel)
    if message.get("type") != "readyz.ping":
        raise RuntimeError("channel layer returned another message")


async def _upstream_check() -> None:
    # Through the door, so the probe sees what pages see (the same pool, TLS context and budget). A spent budget is
    # not a reason to take this instance out of the load balancer: the upstream was not asked, and will be again.
    async with upstream.client(timeout=2.0, retry_total=0) as client:
        try:
            await client.list_environments(limit=1)
        except WorkAPIError as exc:
            if exc.kind != "budget_exhausted":
                raise


async def _upstream_status() -> dict[str, Any]:
    # Probes come every few seconds from every load balancer; the upstream is asked at most every 5 s.
    global _upstream_checked
    now = time.monotonic()
    if _upstream_checked is not None and now - _upstream_checked[0] < _UPSTREAM_CHECK_CACHE_SECONDS:
        return _upstream_checked[1]
    result = await _check("upstream", _upstream_check, 3.0)
    _upstream_checked = (now, result)
    return result


@require_GET
async def readyz(request: HttpRequest) -> HttpResponse:
    """Ready to serve: the database, the channel layer and the upstream answer."""
    database, layer, upstream_ = await asyncio.gather(
        _check("database", sync_to_async(_database_check), 3.0),
        _check("channel_layer", _channel_layer_check, 3.0),
        _upstream_status(),
    )
    checks = {"database": database, "channel_layer": layer, "upstream": upstream_}
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse({"ready": ready, "checks": checks}, status=200 if ready else 503)


# --- Metrics -----------------------------------------------------------------------------------------------------


def _metrics_allowed(request: HttpRequest) -> bool:
    token = conf.metrics_token()
    if token:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    # A reverse proxy on the same host makes every request look local; one that says it forwarded the request
    # (as proxies do) is not trusted to be local. Deployments behind a proxy set METRICS_TOKEN.
    if any(header in request.headers for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP")):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _metrics_allowed(request):
        response = HttpResponse(
            "Metrics need a bearer token (METRICS_TOKEN).\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
