"""Admin configuration: the environment keys the dashboard uses to list each environment's work.

An admin adds, replaces or removes a key here; it is stored encrypted and shown only masked (``sk-ant-…abcd``). The
key never goes back to a browser: the form's key field is always empty when rendered. Keys given by the deployment
(``ENVIRONMENT_KEYS``) are listed too, read-only; a key entered here takes precedence over one of those. Every
change is an audit entry (with the masked key only).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from dashboard import audit, confirm, upstream
from dashboard.models import EnvironmentKey, mask_key
from dashboard.permissions import require_action
from workqueue.errors import InvalidID, WorkAPIError
from workqueue.ids import validate_environment_id

__all__ = ["configure", "remove_key"]

KEY_MIN, KEY_MAX = 16, 500


def _key_rows() -> list[dict[str, Any]]:
    stored = {key.environment_id: key for key in EnvironmentKey.objects.all()}
    deployed: dict[str, str] = getattr(settings, "ENVIRONMENT_KEYS", {})
    rows = []
    for environment_id in sorted(set(stored) | set(deployed)):
        key = stored.get(environment_id)
        rows.append(
            {
                "environment_id": environment_id,
                "name": key.name if key else "",
                "masked": key.masked if key else mask_key(deployed[environment_id]),
                "source": "dashboard" if key else "deployment",
                "updated_at": key.updated_at if key else None,
                "updated_by": key.updated_by if key else "",
                # A deployment key stays behind a removed dashboard key: say so on the remove button.
                "shadows_deployment": key is not None and environment_id in deployed,
            }
        )
    return rows


async def _environments() -> tuple[list[Any], dict[str, Any] | None]:
    async with upstream.client() as api:
        try:
            page = await api.list_environments(limit=100)
        except WorkAPIError as exc:
            return [], upstream.failure_banner(exc)
    return [environment for environment in page.data if environment.config_type == "self_hosted"], None


def _problems(environment_id: str, key: str, name: str) -> list[str]:
    problems = []
    try:
        validate_environment_id(environment_id)
    except InvalidID as exc:
        problems.append(str(exc))
    if not key:
        problems.append("Paste the environment key.")
    elif any(ch.isspace() for ch in key) or not key.isprintable():
        problems.append("An environment key has no spaces or line breaks: paste it again.")
    elif not KEY_MIN <= len(key) <= KEY_MAX:
        problems.append(
            f"That is not an environment key: it should be {KEY_MIN} to {KEY_MAX} characters long."
        )
    if len(name) > 200:
        problems.append("The name is too long (at most 200 characters).")
    return problems


def _save_key(environment_id: str, name: str, key: str, username: str) -> bool:
    stored, created = EnvironmentKey.objects.get_or_create(
        environment_id=environment_id, defaults={"name": name, "updated_by": username}
    )
    stored.name = name
    stored.updated_by = username
    stored.set_key(key)
    stored.save()
    return not created


async def _audit_key_set(
    request: HttpRequest, form: dict[str, str], key: str, outcome: str, *, replaced: bool, error: str = ""
) -> None:
    """The audit entry of an attempt to add or replace a key (the key masked)."""
    await audit.arecord(
        user=request.user,
        action="configure_key_set",
        outcome=outcome,
        environment_id=form["environment_id"],
        sent={"name": form["name"], "key": mask_key(key), "replaced": replaced},
        error=error,
        via=audit.via_of(request),
    )


@require_http_methods(["GET", "POST"])
@require_action("configure")
async def configure(request: HttpRequest) -> HttpResponse:
    """List the environment keys (masked) and add or replace one."""
    user = request.user
    problems: list[str] = []
    form = {"environment_id": "", "name": ""}
    if request.method == "POST":
        form = {
            "environment_id": str(request.POST.get("environment_id", "")).strip(),
            "name": str(request.POST.get("name", "")).strip(),
        }
        key = str(request.POST.get("key", "")).strip()
        problems = _problems(form["environment_id"], key, form["name"])
        refusal = "" if problems else await _check_key(form["environment_id"], key)
        anyway = request.POST.get("save_anyway") == "1"
        if refusal and not anyway:
            # The key is tried before it is saved: one the Work API refuses never replaces one that works.
            kept = await sync_to_async(
                EnvironmentKey.objects.filter(environment_id=form["environment_id"]).exists
            )()
            problems = [
                f"Not saved: {refusal}"
                + (" The key in use is kept." if kept else "")
                + " Paste it again and tick “Save it anyway” to save it all the same."
            ]
            await _audit_key_set(request, form, key, "failed", replaced=False, error=refusal[:500])
            form["offer_anyway"] = "1"
        elif not problems:
            replaced = await sync_to_async(_save_key)(
                form["environment_id"], form["name"], key, user.get_username()
            )
            await _audit_key_set(request, form, key, "succeeded", replaced=replaced)
            verb = "replaced" if replaced else "added"
            await sync_to_async(messages.success)(
                request, f"Environment key for {form['environment_id']} {verb} ({mask_key(key)})."
            )
            if refusal:
                await sync_to_async(messages.warning)(request, f"Saved, but {refusal}")
            return HttpResponseRedirect(reverse("configure"))
    environments, failure = await _environments()
    rows = await sync_to_async(_key_rows)()
    configured = {row["environment_id"] for row in rows}
    context = {
        "nav": "configure",
        "rows": rows,
        "environments": environments,
        "environments_without_key": [env for env in environments if env.id not in configured],
        "failure": failure,
        "problems": problems,
        "form": form,
    }
    return await sync_to_async(render)(
        request, "dashboard/configure/keys.html", context, status=400 if problems else 200
    )


async def _check_key(environment_id: str, key: str) -> str:
    """Why the Work API does not accept the key for listing work (empty when it does)."""
    async with upstream.client() as api:
        try:
            await api.list_work(environment_id, environment_key=key, limit=1)
        except WorkAPIError as exc:
            banner = upstream.failure_banner(exc)
            request_id = f" (request-id {banner['request_id']})" if banner["request_id"] else ""
            return f"listing the work of {environment_id} with it failed: {banner['message']}{request_id}."
    return ""


def _remove_key(environment_id: str) -> str | None:
    stored = EnvironmentKey.objects.filter(environment_id=environment_id).first()
    if stored is None:
        return None
    masked = stored.masked
    stored.delete()
    return masked


@require_http_methods(["GET", "POST"])
@require_action("configure")
def remove_key(request: HttpRequest, env_id: str) -> HttpResponse:
    """Remove the dashboard's key for one environment after a confirmation with a reason.

    A deployment key, if any, applies again.
    """
    stored = EnvironmentKey.objects.filter(environment_id=env_id).first()
    reason, problem = confirm.read_reason(request.POST)
    problems = [problem] if problem and request.method == "POST" else []
    if stored is not None and (request.method == "GET" or problems):
        deployed = env_id in getattr(settings, "ENVIRONMENT_KEYS", {})
        return confirm.confirm_page(
            request,
            title=f"Remove the key of {stored.name or env_id}",
            facts=[("Environment", env_id), ("Key", stored.masked)],
            consequence=(
                "The deployment's key (ENVIRONMENT_KEYS) applies again."
                if deployed
                else "The dashboard can no longer list this environment's work until a key is entered again."
            ),
            button="Remove the key",
            cancel_url=reverse("configure"),
            nav="configure",
            problems=problems,
            reason=reason,
        )
    masked = _remove_key(env_id)
    if masked is None:
        messages.info(request, f"There was no key for {env_id} to remove.")
        return HttpResponseRedirect(reverse("configure"))
    audit.record(
        user=request.user,
        action="configure_key_remove",
        outcome="succeeded",
        environment_id=env_id,
        reason=reason,
        sent={"key": masked},
        via=audit.via_of(request),
    )
    messages.success(request, f"Environment key for {env_id} removed.")
    return HttpResponseRedirect(reverse("configure"))
