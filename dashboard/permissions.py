"""Who may do what: three roles held as Django groups, the actions each allows, and the view guard.

Roles rank: a viewer reads, an operator also patches metadata and stops gracefully (one item or in bulk), an admin
also force-stops (one item or in bulk) and configures environment keys. A superuser is an admin. A signed-in user in no role group has no
access at all (closed by default): every page answers 403 to them.

Checks happen in the views through ``require_action`` (or ``can`` inside a view), never only in templates: a
forged POST from someone lacking the role gets 403 and an audit entry with outcome "denied".
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Awaitable, Callable
from inspect import iscoroutinefunction
from typing import Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.template.loader import render_to_string

from workqueue.errors import redact

__all__ = [
    "ACTIONS",
    "Role",
    "adeny",
    "can",
    "capabilities",
    "deny",
    "ensure_roles",
    "require_action",
    "role_of",
]


class Role(enum.IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def group_name(self) -> str:
        return self.name.lower()


# The least role each action needs.
ACTIONS: dict[str, Role] = {
    "view": Role.VIEWER,
    "patch_metadata": Role.OPERATOR,
    "stop": Role.OPERATOR,
    "force_stop": Role.ADMIN,
    # Bulk stops are graceful for operators; a bulk force-stop also needs "force_stop".
    "bulk": Role.OPERATOR,
    "configure": Role.ADMIN,
}

_GROUP_ROLES = {role.group_name: role for role in Role}
_CACHE_ATTR = "_dashboard_role"

AnyUser = AbstractBaseUser | AnonymousUser


def ensure_roles() -> None:
    """Create the three role groups if they are missing (idempotent)."""
    for name in _GROUP_ROLES:
        Group.objects.get_or_create(name=name)


def role_of(user: Any) -> Role | None:
    """The user's highest role, or None (not signed in, inactive, or in no role group)."""
    if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return None
    cached = getattr(user, _CACHE_ATTR, False)
    if cached is not False:
        return cast("Role | None", cached)
    role: Role | None
    if getattr(user, "is_superuser", False):
        role = Role.ADMIN
    else:
        names = user.groups.filter(name__in=list(_GROUP_ROLES)).values_list("name", flat=True)
        role = max((_GROUP_ROLES[name] for name in names), default=None)
    # Several checks per request (the page, then each button) should cost one query.
    setattr(user, _CACHE_ATTR, role)
    return role


def can(user: Any, action: str) -> bool:
    """Whether ``user`` may take ``action`` (one of ``ACTIONS``); an unknown action is never allowed."""
    needed = ACTIONS.get(action)
    if needed is None:
        return False
    role = role_of(user)
    return role is not None and role >= needed


def capabilities(user: Any) -> dict[str, bool]:
    """``{action: allowed}`` for every action: the ``user_can`` context the item-actions partial expects."""
    return {action: can(user, action) for action in ACTIONS}


def _ids_from(kwargs: dict[str, Any]) -> tuple[str, str]:
    return str(kwargs.get("env_id", ""))[:120], str(kwargs.get("work_id", ""))[:120]


# Fields whose values are credentials: never written to the audit log, even from a refused request.
_SECRET_FIELDS = {"csrfmiddlewaretoken", "password", "token", "secret", "api_key", "environment_key"}


DENIED_BYTES = 4096


def _submitted(request: HttpRequest, action: str) -> dict[str, Any]:
    """What a refused request tried to send, bounded, without credentials (the configuration form's "key" field
    is an environment key; anything else shaped like a credential is redacted too)."""
    hidden = _SECRET_FIELDS | ({"key"} if action == "configure" else set())
    # Every field's name, and values only until DENIED_BYTES are used: anyone with a login can send refused
    # requests, and the append-only log must not grow by their size.
    budget = DENIED_BYTES
    submitted: dict[str, Any] = {}
    for key in list(request.POST)[:50]:
        if key in hidden:
            continue
        values: list[str] = []
        for value in request.POST.getlist(key)[:20]:
            text = redact(str(value)[:200])
            if len(text) > budget:
                values.append("…")
                budget = 0
                break
            budget -= len(text)
            values.append(text)
        submitted[key[:100]] = values
    return submitted


def _refuser(request: HttpRequest, user: Any) -> str:
    """Whose refusals these are, for the audit log's allowance: the signed-in person, else the caller's address."""
    if getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    return f"address:{request.META.get('REMOTE_ADDR', '')}"


def deny(
    request: HttpRequest,
    user: Any,
    action: str,
    *,
    environment_id: str = "",
    work_id: str = "",
    sent: dict[str, Any] | None = None,
) -> HttpResponse:
    """A 403 page; for a POST (an attempted action) also an audit entry with outcome "denied"."""
    from dashboard import audit

    if request.method not in ("GET", "HEAD", "OPTIONS"):
        needed = ACTIONS.get(action)
        audit.record_refusal(
            _refuser(request, user),
            user=user,
            action=action,
            outcome="denied",
            environment_id=environment_id,
            work_id=work_id,
            reason=str(request.POST.get("reason", ""))[:500],
            sent=sent if sent is not None else _submitted(request, action),
            error=f"Needs the {needed.group_name if needed else 'unknown'} role.",
            via=audit.via_of(request),
        )
    body = render_to_string(
        "dashboard/actions/denied.html",
        {"action": action, "needed": ACTIONS.get(action), "role": role_of(user)},
        request=request,
    )
    return HttpResponseForbidden(body)


async def adeny(
    request: HttpRequest,
    user: Any,
    action: str,
    *,
    environment_id: str = "",
    work_id: str = "",
    sent: dict[str, Any] | None = None,
) -> HttpResponse:
    return await sync_to_async(deny)(
        request, user, action, environment_id=environment_id, work_id=work_id, sent=sent
    )


V = TypeVar("V", bound=Callable[..., Any])


def require_action(action: str) -> Callable[[V], V]:
    """View decorator: sign-in required, then ``can(user, action)``, else 403 (and a "denied" entry for a POST).

    Works on sync and async views. Inside an async view ``request.user`` is the resolved user, so templates may
    use it without touching the database from the event loop.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")

    def decorator(view: V) -> V:
        if iscoroutinefunction(view):
            async_view = cast("Callable[..., Awaitable[HttpResponse]]", view)

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                user = await request.auser()
                request.user = user
                if not user.is_authenticated:
                    return redirect_to_login(request.get_full_path())
                if not await sync_to_async(can)(user, action):
                    environment_id, work_id = _ids_from(kwargs)
                    return await adeny(request, user, action, environment_id=environment_id, work_id=work_id)
                return await async_view(request, *args, **kwargs)

            return cast("V", async_wrapper)

        @functools.wraps(view)
        def sync_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not can(user, action):
                environment_id, work_id = _ids_from(kwargs)
                return deny(request, user, action, environment_id=environment_id, work_id=work_id)
            return cast("HttpResponse", view(request, *args, **kwargs))

        return cast("V", sync_wrapper)

    return decorator
