"""The actions people take on work items: patch metadata, stop, force-stop, and bulk stops.

Each view checks the role first (``require_action``; a refused POST is audited as "denied"), validates what it can
before any upstream call, calls the Work API through ``dashboard.upstream``, and records the attempt in the audit
log whatever happened. An upstream failure gives the same page again with a banner naming it, never a server error.

Bulk stops run in a thread of their own (``BulkOperation`` keeps their progress in the database, so any instance
can show it, and an operation whose runner died is resumed by the next look at its progress page).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core import signing
from django.db import connections
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard import audit, stopping, upstream
from dashboard.confirm import REASON_MAX, read_reason
from dashboard.index.queries import freshness, stuck_items
from dashboard.index.sync import record_answer
from dashboard.models import BulkItem, BulkOperation
from dashboard.permissions import adeny, can, require_action
from dashboard.stuck import stuck_reason
from dashboard.untrusted import load_json
from workqueue.errors import InvalidID, NotFound, WorkAPIError
from workqueue.ids import validate_environment_id, validate_metadata, validate_work_id
from workqueue.records import WorkItem

logger = logging.getLogger(__name__)

__all__ = [
    "bulk",
    "bulk_progress",
    "bulk_start",
    "metadata_diff",
    "metadata_patch",
    "stop",
    "wait_for_bulk",
]

BLANK_ROWS = 3
_PLAN_SALT = "dashboard.bulk-plan"
_PLAN_MAX_AGE = 3600


# -- Helpers ------------------------------------------------------------------------------------------------------


async def _page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    # Templates read the session, the user's role and preferences through lazy objects: render off the event loop.
    return await sync_to_async(render)(request, template, context, status=status)


def _checked_ids(env_id: str, work_id: str | None = None) -> None:
    try:
        validate_environment_id(env_id)
        if work_id is not None:
            validate_work_id(work_id)
    except InvalidID:
        raise Http404("No such work item") from None


def _item_url(env_id: str, work_id: str) -> str:
    return reverse("work_item", args=[env_id, work_id])


def _failure_status(exc: WorkAPIError) -> int:
    # The page still renders (with the banner); the status tells scripts and monitors the upstream failed.
    return 404 if isinstance(exc, NotFound | InvalidID) else 502


# -- Metadata patch -----------------------------------------------------------------------------------------------


def _metadata_from_json(text: str) -> dict[str, str] | None:
    """The metadata carried by the form (as loaded), or None if it is not a JSON object of strings."""
    if len(text) > 200_000:
        return None
    try:
        value = load_json(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return None
    return value


def _patch_from_json(text: str) -> dict[str, str | None] | None:
    if len(text) > 200_000:
        return None
    try:
        value = load_json(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not value:
        return None
    if not all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in value.items()):
        return None
    return value


def _canonical(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def apply_patch(metadata: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    """What a JSON merge patch (None deletes) does to ``metadata``."""
    merged = dict(metadata)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def metadata_diff(before: dict[str, str], after: dict[str, str]) -> list[dict[str, Any]]:
    """Key by key: ``change`` is "added", "changed", "removed" or "unchanged", with the old and new values."""
    rows = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old is None:
            change = "added"
        elif new is None:
            change = "removed"
        elif old != new:
            change = "changed"
        else:
            change = "unchanged"
        rows.append({"key": key, "change": change, "old": old, "new": new})
    return rows


def _form_rows(loaded: dict[str, str], patch: dict[str, str | None] | None = None) -> list[dict[str, Any]]:
    """Form rows: every loaded key (with its patched value or marked deleted), then new keys, then blank rows."""
    patch = patch or {}
    rows: list[dict[str, Any]] = [
        {
            "key": key,
            "value": loaded[key] if patch.get(key) is None else patch[key],
            "existing": True,
            "deleted": key in patch and patch[key] is None,
        }
        for key in sorted(loaded)
    ]
    rows += [
        {"key": key, "value": value, "existing": False, "deleted": False}
        for key, value in patch.items()
        if key not in loaded and value is not None
    ]
    rows += [{"key": "", "value": "", "existing": False, "deleted": False} for _ in range(BLANK_ROWS)]
    return rows


def _patch_from_form(request: HttpRequest, loaded: dict[str, str]) -> tuple[dict[str, str | None], list[str]]:
    """The merge patch the submitted rows ask for, relative to ``loaded``, and the problems with the form."""
    keys, values = request.POST.getlist("key"), request.POST.getlist("value")
    deletes = set(request.POST.getlist("delete"))
    problems: list[str] = []
    if len(keys) != len(values) or len(keys) > 200:
        return {}, ["The form was not submitted whole; load it again."]
    patch: dict[str, str | None] = {}
    seen: set[str] = set()
    for key, value in zip(keys, values, strict=True):
        if key == "" and value == "":
            continue
        if not key.strip():
            problems.append("A value was given without a key.")
            continue
        if key in seen:
            problems.append(f"The key {key!r} appears twice.")
            continue
        seen.add(key)
        if key in deletes:
            continue
        if loaded.get(key) != value:
            patch[key] = value
    for key in sorted(deletes):
        if key in loaded:
            patch[key] = None
    if not problems and not patch:
        problems.append("Nothing would change: set a value, add a key or mark a key for deletion.")
    return patch, problems


def _metadata_context(
    env_id: str, work_id: str, item: WorkItem | None, loaded: dict[str, str], **extra: Any
) -> dict[str, Any]:
    return {
        "environment_id": env_id,
        "work_id": work_id,
        "item": item,
        "loaded_json": _canonical(loaded),
        "form_action": reverse("metadata_patch", args=[env_id, work_id]),
        "item_url": _item_url(env_id, work_id),
        **extra,
    }


@require_http_methods(["GET", "POST"])
@require_action("patch_metadata")
async def metadata_patch(request: HttpRequest, env_id: str, work_id: str) -> HttpResponse:
    """Edit a work item's metadata: the form, then a preview of the change as a diff, then the patch."""
    _checked_ids(env_id, work_id)
    template = "dashboard/actions/metadata_patch.html"
    step = request.POST.get("step", "") if request.method == "POST" else ""

    if step in ("preview", "edit", "send"):
        loaded = _metadata_from_json(str(request.POST.get("loaded", "")))
        if loaded is None:
            return await _page(
                request,
                template,
                _metadata_context(env_id, work_id, None, {}, rows=[], form_broken=True),
                400,
            )
        reason = str(request.POST.get("reason", "")).strip()[:REASON_MAX]
        if step == "preview":
            return await _preview_metadata(request, env_id, work_id, loaded, reason)
        patch = _patch_from_json(str(request.POST.get("patch", "")))
        if patch is None:
            return await _page(
                request,
                template,
                _metadata_context(env_id, work_id, None, {}, rows=[], form_broken=True),
                400,
            )
        if step == "edit":
            context = _metadata_context(
                env_id, work_id, None, loaded, rows=_form_rows(loaded, patch), reason=reason
            )
            return await _page(request, template, context)
        return await _send_metadata(request, env_id, work_id, loaded, patch, reason)

    async with upstream.client() as api:
        try:
            item = await api.retrieve_work(env_id, work_id)
        except WorkAPIError as exc:
            context = _metadata_context(
                env_id, work_id, None, {}, rows=[], failure=upstream.failure_banner(exc)
            )
            return await _page(request, template, context, _failure_status(exc))
    context = _metadata_context(env_id, work_id, item, item.metadata, rows=_form_rows(item.metadata))
    return await _page(request, template, context)


async def _preview_metadata(
    request: HttpRequest, env_id: str, work_id: str, loaded: dict[str, str], reason: str
) -> HttpResponse:
    patch, problems = _patch_from_form(request, loaded)
    merged = apply_patch(loaded, patch)
    problems += validate_metadata(merged) if not problems else []
    if problems:
        rows = _form_rows(loaded, patch) if patch else _submitted_rows(request, loaded)
        context = _metadata_context(
            env_id, work_id, None, loaded, rows=rows, problems=problems, reason=reason
        )
        return await _page(request, "dashboard/actions/metadata_patch.html", context, 400)
    context = _metadata_context(
        env_id,
        work_id,
        None,
        loaded,
        diff=metadata_diff(loaded, merged),
        patch_json=_canonical(patch),
        reason=reason,
    )
    return await _page(request, "dashboard/actions/metadata_preview.html", context)


def _submitted_rows(request: HttpRequest, loaded: dict[str, str]) -> list[dict[str, Any]]:
    deletes = set(request.POST.getlist("delete"))
    rows = [
        {"key": key, "value": value, "existing": key in loaded, "deleted": key in deletes}
        for key, value in zip(
            request.POST.getlist("key")[:200], request.POST.getlist("value")[:200], strict=False
        )
        if key or value
    ]
    return rows + [{"key": "", "value": "", "existing": False, "deleted": False} for _ in range(BLANK_ROWS)]


async def _send_metadata(
    request: HttpRequest,
    env_id: str,
    work_id: str,
    loaded: dict[str, str],
    patch: dict[str, str | None],
    reason: str,
) -> HttpResponse:
    preview = "dashboard/actions/metadata_preview.html"
    user = request.user
    async with upstream.client() as api:
        # Re-read first: someone (or a worker) may have changed the metadata since the form was loaded.
        try:
            current = await api.retrieve_work(env_id, work_id)
        except WorkAPIError as exc:
            await _audit_failure(request, "patch_metadata", env_id, work_id, reason, {"metadata": patch}, exc)
            context = _metadata_context(
                env_id,
                work_id,
                None,
                loaded,
                diff=metadata_diff(loaded, apply_patch(loaded, patch)),
                patch_json=_canonical(patch),
                reason=reason,
                failure=upstream.failure_banner(exc),
            )
            return await _page(request, preview, context, _failure_status(exc))
        merged = apply_patch(current.metadata, patch)
        problems = validate_metadata(merged)
        if current.metadata != loaded or problems:
            # Show the diff against what is there now and ask again; nothing has been sent.
            context = _metadata_context(
                env_id,
                work_id,
                current,
                current.metadata,
                diff=metadata_diff(current.metadata, merged),
                patch_json=_canonical(patch),
                reason=reason,
                changed_upstream=current.metadata != loaded,
                problems=problems,
                can_send=not problems,
            )
            return await _page(request, preview, context, 409 if not problems else 400)
        with upstream.capture_response() as seen:
            try:
                updated = await api.update_work_metadata(env_id, work_id, patch)
            except WorkAPIError as exc:
                await _audit_failure(
                    request, "patch_metadata", env_id, work_id, reason, {"metadata": patch}, exc
                )
                context = _metadata_context(
                    env_id,
                    work_id,
                    current,
                    loaded,
                    diff=metadata_diff(loaded, merged),
                    patch_json=_canonical(patch),
                    reason=reason,
                    failure=upstream.failure_banner(exc),
                )
                return await _page(request, preview, context, _failure_status(exc))
    await sync_to_async(record_answer)(updated)
    await audit.arecord(
        user=user,
        action="patch_metadata",
        outcome="succeeded",
        environment_id=env_id,
        work_id=work_id,
        reason=reason,
        sent={"metadata": patch},
        upstream_status=seen["status"],
        request_id=seen["request_id"],
        via=audit.via_of(request),
    )
    diff = metadata_diff(current.metadata, updated.metadata)
    counts = {
        change: sum(1 for row in diff if row["change"] == change)
        for change in ("added", "changed", "removed")
    }
    await sync_to_async(messages.success)(
        request,
        f"Metadata of {work_id} updated: {counts['added']} added, {counts['changed']} changed, "
        f"{counts['removed']} removed.",
    )
    return HttpResponseRedirect(_item_url(env_id, work_id))


async def _audit_failure(
    request: HttpRequest,
    action: str,
    env_id: str,
    work_id: str,
    reason: str,
    sent: dict[str, Any],
    exc: WorkAPIError,
) -> None:
    await audit.arecord(
        user=request.user,
        action=action,
        outcome="failed",
        environment_id=env_id,
        work_id=work_id,
        reason=reason,
        sent=sent,
        upstream_status=exc.status,
        request_id=exc.request_id or "",
        error=stopping.error_text(exc),
        via=audit.via_of(request),
    )


# -- Stop and force-stop ------------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@require_action("stop")
async def stop(request: HttpRequest, env_id: str, work_id: str) -> HttpResponse:
    """Stop one work item gracefully (operators), after a confirmation with a reason."""
    _checked_ids(env_id, work_id)
    source = request.POST if request.method == "POST" else request.GET
    if "force" in source:
        # Force-stop has an address (and a permission) of its own; a graceful stop is never silently made one,
        # nor the other way round.
        context = {
            "status": 400,
            "title": "Force-stop has its own address",
            "message": f"To end {work_id} at once, use {reverse('force_stop', args=[env_id, work_id])} "
            "(admins only). Nothing was sent.",
        }
        return await _page(request, "dashboard/pages/problem.html", context, 400)
    return await _stop(request, env_id, work_id, force=False)


@require_http_methods(["GET", "POST"])
@require_action("force_stop")
async def force_stop(request: HttpRequest, env_id: str, work_id: str) -> HttpResponse:
    """End one work item at once (admins), after a confirmation with a reason."""
    _checked_ids(env_id, work_id)
    return await _stop(request, env_id, work_id, force=True)


async def _stop(request: HttpRequest, env_id: str, work_id: str, *, force: bool) -> HttpResponse:
    user = request.user
    action = "force_stop" if force else "stop"
    template = "dashboard/actions/stop_confirm.html"
    context: dict[str, Any] = {
        "environment_id": env_id,
        "work_id": work_id,
        "force": force,
        "item": None,
        "item_url": _item_url(env_id, work_id),
        "form_action": reverse(action, args=[env_id, work_id]),
        "stuck_reason": None,
    }

    async with upstream.client() as api:
        # The item is read fresh first: what the page confirms and what is sent follow its state now.
        try:
            item = await api.retrieve_work(env_id, work_id)
        except WorkAPIError as exc:
            if request.method == "POST":
                # Kept in the form for another try, and in the audit entry of the failed attempt.
                reason = context["reason"] = read_reason(request.POST)[0]
                await _audit_failure(request, action, env_id, work_id, reason, {"force": force}, exc)
            context["failure"] = upstream.failure_banner(exc)
            return await _page(request, template, context, _failure_status(exc))
        context.update(item=item, stuck_reason=stuck_reason(item, timezone.now()))
        if item.state == "stopping" and not force:
            # A graceful stop of an item already stopping ends it at once: a force-stop in effect, with its role,
            # its confirmation and its audit action.
            if not await sync_to_async(can)(user, "force_stop"):
                return await adeny(request, user, "force_stop", environment_id=env_id, work_id=work_id)
            force, action = True, "force_stop"
            context.update(force=True, already_stopping=True)
        if request.method == "GET":
            return await _page(request, template, context)

        reason, problem = read_reason(request.POST)
        context["reason"] = reason
        if problem:
            context["problems"] = [problem]
            return await _page(request, template, context, 400)

        sent = {"force": force}
        answer: WorkItem | WorkAPIError
        with upstream.capture_response() as seen:
            try:
                answer = await api.stop_work(env_id, work_id, force=True if force else None)
            except WorkAPIError as exc:
                answer = exc
    result = await sync_to_async(stopping.settle)(
        stopping.outcome(answer, status=seen["status"], request_id=seen["request_id"])
    )
    await audit.arecord(
        user=user,
        action=action,
        environment_id=env_id,
        work_id=work_id,
        reason=reason,
        sent=sent,
        via=audit.via_of(request),
        **result.audit_fields(),
    )
    if result.already_stopped:
        await sync_to_async(messages.info)(request, f"{work_id} had already stopped: nothing to do.")
        return HttpResponseRedirect(_item_url(env_id, work_id))
    if result.item is None:
        assert result.failure is not None
        context["failure"] = upstream.failure_banner(result.failure)
        return await _page(request, template, context, _failure_status(result.failure))
    verb = "Force-stopped" if force else "Stop requested for"
    await sync_to_async(messages.success)(request, f"{verb} {work_id}: it is now {result.item.state}.")
    return HttpResponseRedirect(_item_url(env_id, work_id))


# -- Bulk stops ---------------------------------------------------------------------------------------------------


def _bulk_limit() -> int:
    return int(settings.BULK_MAX_ITEMS)


def _stuck_in_index(env_id: str) -> list[dict[str, Any]]:
    now = timezone.now()
    rows = stuck_items(env_id, now)
    return [
        {"work_id": row.work_id, "state": row.state, "stuck_reason": stuck_reason(row, now)}
        for row in rows[: _bulk_limit() + 1]
    ]


async def _stuck_items(env_id: str) -> tuple[list[dict[str, Any]], int, dict[str, Any] | None]:
    """Every stuck item of the environment, exactly the set the stuck page shows (the work index's), the count
    of all of them, and a failure to show (no environment key: the index cannot read the environment)."""
    key = await upstream.environment_key(env_id)
    if key is None:
        return [], 0, upstream.missing_key_banner(env_id)
    count = await sync_to_async(lambda: stuck_items(env_id).count())()
    return await sync_to_async(_stuck_in_index)(env_id), count, None


async def _confirmation_phrase(env_id: str) -> tuple[str, str]:
    """(environment name for the page, the text to type to confirm a force-stop)."""
    async with upstream.client() as api:
        try:
            environment = await api.retrieve_environment(env_id)
        except WorkAPIError:
            return env_id, "FORCE"
    name = environment.name.strip()
    # A name nobody can type reliably (very long, or with control characters) falls back to FORCE.
    if not name or len(name) > 80 or not name.isprintable():
        return environment.name, "FORCE"
    return name, name


@require_http_methods(["GET", "POST"])
@require_action("bulk")
async def bulk(request: HttpRequest, env_id: str) -> HttpResponse:
    """Count preview of a bulk stop: the selected items (POSTed ``work_ids``) or every stuck item
    (``selection=stuck``), with one form to stop them gracefully and one to force-stop them (typed confirmation).
    """
    _checked_ids(env_id)
    source = request.POST if request.method == "POST" else request.GET
    selection = "stuck" if source.get("selection") == "stuck" else "selected"
    limit = _bulk_limit()
    context: dict[str, Any] = {
        "environment_id": env_id,
        "selection": selection,
        "may_force": await sync_to_async(can)(request.user, "force_stop"),
        "limit": limit,
        "environment_url": reverse("environment", args=[env_id]),
        "problems": [],
    }
    template = "dashboard/actions/bulk_confirm.html"
    items: list[dict[str, Any]]
    if selection == "stuck":
        items, count, failure = await _stuck_items(env_id)
        # The selection is the work index's: the page says how old its rows are, as the stuck page does.
        context.update(failure=failure, freshness=await sync_to_async(freshness)(env_id), env_id=env_id)
        if failure is not None:
            return await _page(request, template, context)
        if count > limit:
            context["over_limit"] = count
            items = items[:limit]
    else:
        submitted = source.getlist("work_ids") + source.getlist("work_id")
        ids = list(dict.fromkeys(str(value) for value in submitted))
        invalid = [value for value in ids if not _valid_work_id(value)]
        if invalid:
            context["problems"].append(
                f"{len(invalid)} selected value(s) are not work ids and were left out."
            )
        items = [{"work_id": value} for value in ids if value not in invalid]
        if len(items) > limit:
            context["problems"].append(f"{len(items)} items are selected; a bulk stop takes at most {limit}.")
            context["items"] = items
            return await _page(request, template, context, 400)
    if not items:
        context["problems"].append(
            "No stuck items to stop in this environment."
            if selection == "stuck"
            else "Select at least one item."
        )
        return await _page(request, template, context, 400 if selection == "selected" else 200)
    environment_name, phrase = await _confirmation_phrase(env_id)
    user = request.user
    plan = {
        "env": env_id,
        "ids": [item["work_id"] for item in items],
        "selection": selection,
        "phrase": phrase,
        "user": user.pk,
    }
    context.update(
        items=items,
        environment_name=environment_name,
        confirmation_phrase=phrase,
        plan=signing.dumps(plan, salt=_PLAN_SALT, compress=True),
        form_action=reverse("bulk_start", args=[env_id]),
    )
    return await _page(request, template, context)


def _valid_work_id(value: str) -> bool:
    try:
        validate_work_id(value)
    except InvalidID:
        return False
    return True


@require_POST
@require_action("bulk")
async def bulk_start(request: HttpRequest, env_id: str) -> HttpResponse:
    """Start a confirmed bulk stop and go to its progress page."""
    _checked_ids(env_id)
    user = request.user
    force = request.POST.get("mode") == "force_stop"
    action = "bulk_force_stop" if force else "bulk_stop"
    # The role first: an operator's bulk force-stop is refused (and audited) whatever the plan says.
    if force and not await sync_to_async(can)(user, "force_stop"):
        return await adeny(request, user, action, environment_id=env_id)
    try:
        plan = signing.loads(str(request.POST.get("plan", "")), salt=_PLAN_SALT, max_age=_PLAN_MAX_AGE)
    except signing.BadSignature:
        plan = None
    if not isinstance(plan, dict) or plan.get("env") != env_id or plan.get("user") != user.pk:
        messages.error(request, "That confirmation has expired or was not for this environment: start again.")
        return HttpResponseRedirect(reverse("environment", args=[env_id]))
    reason, problem = read_reason(request.POST)
    problems = [problem] if problem else []
    if force and str(request.POST.get("confirm", "")).strip() != plan["phrase"]:
        problems.append(f"Type {plan['phrase']} to confirm a force-stop.")
    if problems:
        context = {
            "environment_id": env_id,
            "failed_mode": "force_stop" if force else "stop",
            "selection": plan["selection"],
            "limit": _bulk_limit(),
            "environment_url": reverse("environment", args=[env_id]),
            "items": [{"work_id": work_id} for work_id in plan["ids"]],
            "environment_name": plan["phrase"] if plan["phrase"] != "FORCE" else env_id,
            "confirmation_phrase": plan["phrase"],
            "plan": request.POST["plan"],
            "form_action": reverse("bulk_start", args=[env_id]),
            "problems": problems,
            "reason": reason,
            "may_force": await sync_to_async(can)(user, "force_stop"),
        }
        return await _page(request, "dashboard/actions/bulk_confirm.html", context, 400)
    operation = await sync_to_async(_create_operation)(user, env_id, plan, force, reason)
    await audit.arecord(
        user=user,
        action=action,
        outcome="succeeded",
        environment_id=env_id,
        reason=reason,
        sent={
            "force": force,
            "selection": plan["selection"],
            "count": len(plan["ids"]),
            "work_ids": plan["ids"],
            "bulk_operation": str(operation.pk),
        },
        via=audit.via_of(request),
    )
    start_bulk(operation.pk)
    return HttpResponseRedirect(reverse("bulk_progress", args=[env_id, operation.pk]))


def _create_operation(
    user: Any, env_id: str, plan: dict[str, Any], force: bool, reason: str
) -> BulkOperation:
    operation = BulkOperation.objects.create(
        environment_id=env_id,
        force=force,
        reason=reason,
        selection=plan["selection"],
        created_by=user,
        username=user.get_username(),
    )
    pairs = plan.get("items") or [[env_id, work_id] for work_id in plan["ids"]]
    BulkItem.objects.bulk_create(
        BulkItem(
            operation=operation,
            position=position,
            environment_id=item_env if not env_id else "",
            work_id=work_id,
        )
        for position, (item_env, work_id) in enumerate(pairs)
    )
    return operation


@require_GET
@require_action("bulk")
async def bulk_progress(request: HttpRequest, env_id: str, operation_id: uuid.UUID) -> HttpResponse:
    """Progress and per-item results of a bulk stop; htmx polls the fragment every second while it runs."""
    _checked_ids(env_id)
    context = await sync_to_async(_progress_context)(env_id, operation_id)
    template = "dashboard/actions/bulk_progress.html"
    if getattr(request, "htmx", False):
        template = "dashboard/actions/_bulk_progress.html"
    return await _page(request, template, context)


def _progress_context(env_id: str | None, operation_id: uuid.UUID) -> dict[str, Any]:
    """The progress page's context; ``env_id`` None for ``/bulk/<id>/`` (any operation, in one environment or
    across several)."""
    operations = BulkOperation.objects.filter(pk=operation_id)
    if env_id is not None:
        operations = operations.filter(environment_id=env_id)
    operation = operations.first()
    if operation is None:
        raise Http404("No such bulk operation")
    if operation.status == BulkOperation.Status.RUNNING and _runner_missing(operation):
        start_bulk(operation.pk, resume_from=operation.heartbeat_at)
    items = list(operation.items.all())
    counts = dict.fromkeys(("pending", "stopped", "stopping", "already_stopped", "failed"), 0)
    for item in items:
        counts[item.status] = counts.get(item.status, 0) + 1
    across = operation.across_environments
    return {
        "environment_id": operation.environment_id,
        "operation": operation,
        "items": items,
        "counts": counts,
        "total": len(items),
        "done": len(items) - counts["pending"],
        "running": operation.status == BulkOperation.Status.RUNNING,
        "progress_url": (
            reverse("bulk_progress", args=[env_id, operation.pk])
            if env_id is not None
            else reverse("bulk_operation", args=[operation.pk])
        ),
        "environment_url": reverse("stuck")
        if across
        else reverse("environment", args=[operation.environment_id]),
        "across": across,
    }


# -- Bulk stops across environments (chosen on the stuck page) ------------------------------------------------

# A stuck page row's checkbox value: "<environment id>:<work id>".
_PAIR_SEPARATOR = ":"


def _pairs_from(values: list[str]) -> tuple[list[tuple[str, str]], int]:
    """The (environment id, work id) pairs of the checked rows, without repeats, and how many values were not."""
    pairs: dict[tuple[str, str], None] = {}
    invalid = 0
    for value in values:
        env_id, _, work_id = str(value).partition(_PAIR_SEPARATOR)
        try:
            validate_environment_id(env_id)
            validate_work_id(work_id)
        except InvalidID:
            invalid += 1
            continue
        pairs[(env_id, work_id)] = None
    return list(pairs), invalid


async def _environment_names() -> dict[str, str]:
    """Environment names as the stuck page listed them (its remembered list), for the preview's rows."""
    from dashboard.views import cached_self_hosted_environments

    async with upstream.client() as api:
        try:
            return {env.id: env.name for env in await cached_self_hosted_environments(api)}
        except WorkAPIError:
            return {}


def _describe_pairs(pairs: list[tuple[str, str]], known: dict[str, str]) -> list[dict[str, Any]]:
    """Each selected item as the work index has it now: its environment's name, state and why it is stuck."""
    from dashboard.index.models import IndexedWork
    from dashboard.index.queries import environment_name

    now = timezone.now()
    rows = {
        (row.environment_id, row.work_id): row
        for env_id in {env for env, _ in pairs}
        for row in IndexedWork.objects.filter(
            environment_id=env_id, work_id__in=[w for e, w in pairs if e == env_id]
        )
    }
    names: dict[str, str] = {}
    described = []
    for env_id, work_id in pairs:
        if env_id not in names:
            names[env_id] = known.get(env_id) or environment_name(env_id)
        row = rows.get((env_id, work_id))
        described.append(
            {
                "environment_id": env_id,
                "environment_name": names[env_id],
                "work_id": work_id,
                "state": row.state if row is not None else "",
                "stuck_reason": (stuck_reason(row, now) or "no longer stuck") if row is not None else "",
            }
        )
    return described


def _across_context(request: HttpRequest, may_force: bool) -> dict[str, Any]:
    return {
        "across": True,
        "environment_id": "",
        "selection": "stuck_page",
        "may_force": may_force,
        "limit": _bulk_limit(),
        "environment_url": reverse("stuck"),
        "form_action": reverse("bulk_across_start"),
        "confirmation_phrase": ACROSS_PHRASE,
        "problems": [],
    }


# Across environments no one name fits: a force-stop is confirmed by typing this.
ACROSS_PHRASE = "FORCE"


@require_POST
@require_action("bulk")
async def bulk_across(request: HttpRequest) -> HttpResponse:
    """Count preview of a bulk stop of stuck items checked on the stuck page, in any environments: the same
    forms, caps and confirmation as an environment's bulk stop."""
    user = request.user
    context = _across_context(request, await sync_to_async(can)(user, "force_stop"))
    template = "dashboard/actions/bulk_confirm.html"
    pairs, invalid = _pairs_from(request.POST.getlist("items"))
    if invalid:
        context["problems"].append(f"{invalid} selected value(s) are not work items and were left out.")
    limit = context["limit"]
    if len(pairs) > limit:
        context["problems"].append(f"{len(pairs)} items are selected; a bulk stop takes at most {limit}.")
        return await _page(request, template, context, 400)
    if not pairs:
        context["problems"].append("Select at least one item.")
        return await _page(request, template, context, 400)
    items = await sync_to_async(_describe_pairs)(pairs, await _environment_names())
    plan = {
        "env": "",
        "ids": [work_id for _, work_id in pairs],
        "items": [list(pair) for pair in pairs],
        "selection": "stuck_page",
        "phrase": ACROSS_PHRASE,
        "user": user.pk,
    }
    context.update(
        items=items,
        environments=sorted({item["environment_name"] for item in items}),
        plan=signing.dumps(plan, salt=_PLAN_SALT, compress=True),
    )
    return await _page(request, template, context)


@require_POST
@require_action("bulk")
async def bulk_across_start(request: HttpRequest) -> HttpResponse:
    """Start a confirmed bulk stop across environments and go to its progress page."""
    user = request.user
    force = request.POST.get("mode") == "force_stop"
    action = "bulk_force_stop" if force else "bulk_stop"
    if force and not await sync_to_async(can)(user, "force_stop"):
        return await adeny(request, user, action)
    try:
        plan = signing.loads(str(request.POST.get("plan", "")), salt=_PLAN_SALT, max_age=_PLAN_MAX_AGE)
    except signing.BadSignature:
        plan = None
    if not isinstance(plan, dict) or plan.get("env") != "" or plan.get("user") != user.pk:
        messages.error(request, "That confirmation has expired or was not yours: select the items again.")
        return HttpResponseRedirect(reverse("stuck"))
    reason, problem = read_reason(request.POST)
    problems = [problem] if problem else []
    if force and str(request.POST.get("confirm", "")).strip() != plan["phrase"]:
        problems.append(f"Type {plan['phrase']} to confirm a force-stop.")
    pairs = [(str(env_id), str(work_id)) for env_id, work_id in plan["items"]]
    if problems:
        context = _across_context(request, await sync_to_async(can)(user, "force_stop"))
        items = await sync_to_async(_describe_pairs)(pairs, await _environment_names())
        context.update(
            failed_mode="force_stop" if force else "stop",
            items=items,
            environments=sorted({item["environment_name"] for item in items}),
            plan=request.POST["plan"],
            problems=problems,
            reason=reason,
        )
        return await _page(request, "dashboard/actions/bulk_confirm.html", context, 400)
    operation = await sync_to_async(_create_operation)(user, "", plan, force, reason)
    await audit.arecord(
        user=user,
        action=action,
        outcome="succeeded",
        reason=reason,
        sent={
            "force": force,
            "selection": plan["selection"],
            "count": len(pairs),
            "environments": sorted({env_id for env_id, _ in pairs}),
            "work_ids": [work_id for _, work_id in pairs],
            "bulk_operation": str(operation.pk),
        },
        via=audit.via_of(request),
    )
    start_bulk(operation.pk)
    return HttpResponseRedirect(reverse("bulk_operation", args=[operation.pk]))


@require_GET
@require_action("view")
async def bulk_operation(request: HttpRequest, operation_id: uuid.UUID) -> HttpResponse:
    """Progress and per-item results of any bulk operation (the bulk history links here); viewers may read it,
    as they read the audit log."""
    context = await sync_to_async(_progress_context)(None, operation_id)
    template = "dashboard/actions/bulk_progress.html"
    if getattr(request, "htmx", False):
        template = "dashboard/actions/_bulk_progress.html"
    return await _page(request, template, context)


# The runners of this process, by operation id.
_runners: dict[uuid.UUID, threading.Thread] = {}
_runners_lock = threading.Lock()


def _stale_after() -> timedelta:
    # One item can take a whole timeout plus the retry budget; only silence well beyond that means a dead runner.
    seconds = 2 * (settings.UPSTREAM_TIMEOUT_SECONDS + settings.UPSTREAM_RETRY_TOTAL_SECONDS) + 15
    return timedelta(seconds=seconds)


def _runner_missing(operation: BulkOperation) -> bool:
    with _runners_lock:
        runner = _runners.get(operation.pk)
    if runner is not None and runner.is_alive():
        return False
    return timezone.now() - operation.heartbeat_at > _stale_after()


def start_bulk(operation_id: uuid.UUID, resume_from: Any = None) -> bool:
    """Run the operation's pending items in a background thread; False if another runner has it.

    ``resume_from`` (the stale heartbeat seen) claims an interrupted operation: only one claimer can move the
    heartbeat from that value, whichever instance it runs in.
    """
    if resume_from is not None:
        claimed = BulkOperation.objects.filter(
            pk=operation_id, status=BulkOperation.Status.RUNNING, heartbeat_at=resume_from
        ).update(heartbeat_at=timezone.now())
        if not claimed:
            return False
    with _runners_lock:
        existing = _runners.get(operation_id)
        if existing is not None and existing.is_alive():
            return False
        runner = threading.Thread(
            target=_run_bulk, args=(operation_id,), name=f"bulk-{operation_id}", daemon=True
        )
        _runners[operation_id] = runner
    runner.start()
    return True


# Set when this process shuts down: its runners stop after the item in hand and their operations are handed over.
_handing_over = threading.Event()


def resume_interrupted_bulk() -> list[uuid.UUID]:
    """Claim and resume every running operation whose runner is gone (its instance died or was restarted): the
    live runtime of every instance calls this every few seconds, so an operation finishes without a page visit.
    The claim moves the heartbeat from the stale value seen, so one instance wins."""
    if _handing_over.is_set():
        return []
    stale = timezone.now() - _stale_after()
    resumed = []
    for operation in BulkOperation.objects.filter(
        status=BulkOperation.Status.RUNNING, heartbeat_at__lt=stale
    ):
        if _runner_missing(operation) and start_bulk(operation.pk, resume_from=operation.heartbeat_at):
            logger.info("Resumed bulk operation %s, interrupted on another runner", operation.pk)
            resumed.append(operation.pk)
    return resumed


def hand_over_bulk(timeout: float = 15.0) -> list[uuid.UUID]:
    """At shutdown: let this process's runners finish the item in hand, then mark their operations as free to
    take at once (a heartbeat older than the stale window), so another instance resumes them within seconds."""
    _handing_over.set()
    with _runners_lock:
        running = {operation_id: runner for operation_id, runner in _runners.items() if runner.is_alive()}
    deadline = timezone.now() + timedelta(seconds=timeout)
    for runner in running.values():
        runner.join(max(0.0, (deadline - timezone.now()).total_seconds()))
    handed = [op for op, runner in running.items() if not runner.is_alive()]
    try:
        free = timezone.now() - _stale_after() - timedelta(seconds=1)
        BulkOperation.objects.filter(pk__in=handed, status=BulkOperation.Status.RUNNING).update(
            heartbeat_at=free
        )
        connections.close_all()
    finally:
        # A runner still busy past the timeout keeps its operation (its heartbeat says so); the process ends next.
        _handing_over.clear()
    return handed


def wait_for_bulk(operation_id: uuid.UUID, timeout: float = 60.0) -> bool:
    """Block until this process's runner of the operation ends; True if it did (for tests and shutdown)."""
    with _runners_lock:
        runner = _runners.get(operation_id)
    if runner is None:
        return True
    runner.join(timeout)
    return not runner.is_alive()


def _run_bulk(operation_id: uuid.UUID) -> None:
    try:
        operation = BulkOperation.objects.get(pk=operation_id)
        user = (
            get_user_model().objects.filter(pk=operation.created_by_id).first()
            if operation.created_by_id
            else None
        )
        # The database is read and written here, in the runner's thread; each stop is sent on the thread's own
        # event loop, through the pooled client that the loop's calls share.
        with upstream.thread_loop() as loop:
            for item in operation.items.filter(status=BulkItem.Status.PENDING).order_by("position"):
                if _handing_over.is_set():
                    return  # this instance is shutting down: another resumes the pending items (hand_over_bulk)
                env_id = item.environment_id or operation.environment_id
                answer, seen = loop.run(_send_stop(env_id, item.work_id, force=operation.force))
                _record_stop(operation, item, user, answer, seen)
                BulkOperation.objects.filter(pk=operation_id).update(heartbeat_at=timezone.now())
        BulkOperation.objects.filter(pk=operation_id).update(
            status=BulkOperation.Status.FINISHED, finished_at=timezone.now(), heartbeat_at=timezone.now()
        )
    except Exception:
        # Left "running": another instance's live runtime (or the progress page) resumes the pending items once
        # the stale window has passed.
        logger.exception("bulk operation %s stopped unexpectedly", operation_id)
    finally:
        connections.close_all()


ALREADY_STOPPING = "Already stopping: left as it is (ending it at once is a force-stop)."


async def _send_stop(
    env_id: str, work_id: str, *, force: bool
) -> tuple[WorkItem | WorkAPIError | None, dict[str, Any]]:
    """One bulk stop upstream: the stop's answer (None: the item was already stopping, and a graceful operation
    leaves it so), with the status and request-id of the last answer seen."""
    async with upstream.client() as api:
        with upstream.capture_response() as seen:
            try:
                if not force and (await api.retrieve_work(env_id, work_id)).state == "stopping":
                    # A second graceful stop would end it at once: that is a force-stop, not this operation's to do.
                    return None, seen
                return await api.stop_work(env_id, work_id, force=True if force else None), seen
            except WorkAPIError as exc:
                return exc, seen


def _record_stop(
    operation: BulkOperation,
    item: BulkItem,
    user: Any,
    answer: WorkItem | WorkAPIError | None,
    seen: dict[str, Any],
) -> None:
    """What one bulk stop did, in the item's row, the work index and the audit log."""
    force = operation.force
    if answer is None:
        item.status, item.detail = BulkItem.Status.FAILED, ALREADY_STOPPING
        item.upstream_status, item.request_id = seen["status"], seen["request_id"]
        outcome, error = "failed", "already stopping"
    else:
        result = stopping.settle(
            stopping.outcome(answer, status=seen["status"], request_id=seen["request_id"])
        )
        if result.item is not None:
            item.status = (
                BulkItem.Status.STOPPED if result.item.state == "stopped" else BulkItem.Status.STOPPING
            )
            item.detail = f"now {result.item.state}"
        elif result.already_stopped:
            item.status, item.detail = BulkItem.Status.ALREADY_STOPPED, stopping.ALREADY_STOPPED
        else:
            assert result.failure is not None
            banner = upstream.failure_banner(result.failure)
            item.status, item.detail = BulkItem.Status.FAILED, f"{banner['title']}: {banner['message']}"
        item.upstream_status, item.request_id = result.upstream_status, result.request_id
        outcome, error = result.outcome, result.error
    item.finished_at = timezone.now()
    item.save(update_fields=["status", "detail", "upstream_status", "request_id", "finished_at"])
    audit.record(
        user=user,
        username=operation.username,
        action="force_stop" if force else "stop",
        outcome=outcome,
        environment_id=item.environment_id or operation.environment_id,
        work_id=item.work_id,
        reason=operation.reason,
        sent={"force": force, "bulk_operation": str(operation.pk)},
        upstream_status=item.upstream_status,
        request_id=item.request_id,
        error=error,
        via="bulk",
    )
