"""The token pages: create a personal access token (shown once), list yours, revoke one; admins see and revoke all.

Anyone with a role may hold tokens; a token can never do more than its owner's role allows (the gateway checks the
role at each call, so a demoted person's tokens are demoted with them). Creation and revocation are audited.
"""

from __future__ import annotations

from typing import Any, Final

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from dashboard import audit, confirm, shown_once
from dashboard.gateway import tokens
from dashboard.gateway.forms import TokenForm
from dashboard.gateway.models import PersonalAccessToken
from dashboard.permissions import Role, require_action, role_of

# Enough for every script a person runs; a bound keeps a runaway form-poster from filling the table.
MAX_ACTIVE_TOKENS_PER_USER: Final = 25


def _is_admin(user: Any) -> bool:
    role = role_of(user)
    return role is not None and role >= Role.ADMIN


def _page(
    request: HttpRequest,
    form: TokenForm,
    *,
    created: PersonalAccessToken | None = None,
    secret: str = "",
    status: int = 200,
) -> HttpResponse:
    user: Any = request.user
    context = {
        "nav": "tokens",
        "form": form,
        "created": created,
        "secret": secret,
        "own_tokens": PersonalAccessToken.objects.filter(user_id=user.pk).select_related("revoked_by"),
        "is_admin": _is_admin(user),
        "all_tokens": (
            PersonalAccessToken.objects.exclude(user_id=user.pk).select_related("user", "revoked_by")
            if _is_admin(user)
            else None
        ),
        "gateway_base_url": request.build_absolute_uri("/gateway"),
    }
    return render(request, "gateway/tokens.html", context, status=status)


@never_cache
@require_GET
@require_action("view")
def token_list(request: HttpRequest) -> HttpResponse:
    """Your tokens (and, for an admin, everyone's), with the form to create one."""
    return _page(request, TokenForm())


@never_cache
@require_http_methods(["POST"])
@require_action("view")
def token_create(request: HttpRequest) -> HttpResponse:
    """Create a token and show its secret this once; the response is never cached."""
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    active = PersonalAccessToken.objects.active_for(request.user).count()
    if active >= MAX_ACTIVE_TOKENS_PER_USER:
        form.add_error(None, f"You already have {active} active tokens; revoke one you no longer use first.")
        return _page(request, form, status=400)
    token, secret = tokens.mint(request.user, form.cleaned_data["name"], form.cleaned_data["expires_in_days"])
    audit.record(
        user=request.user,
        action="token_create",
        outcome="succeeded",
        sent={
            "name": token.name,
            "prefix": token.prefix,
            "expires_at": token.expires_at.isoformat(),
        },
        via=audit.via_of(request),
        token_name=token.name,
    )
    # Post/redirect/get: a reload of the page that follows shows nothing new and mints nothing.
    shown_once.keep(request, "token", {"id": token.pk, "secret": secret})
    return redirect("token_created")


@never_cache
@require_GET
@require_action("view")
def token_created(request: HttpRequest) -> HttpResponse:
    """The new token's secret, this once (never cached); afterwards the plain token list."""
    kept = shown_once.take(request, "token")
    token = None
    if kept is not None:
        token = PersonalAccessToken.objects.filter(
            pk=int(kept.get("id", 0)), user_id=int(request.user.pk or 0)
        ).first()
    if token is None:
        return redirect("tokens")
    response = _page(request, TokenForm(), created=token, secret=str(kept.get("secret", "")) if kept else "")
    response["Cache-Control"] = "no-store"
    return response


@require_http_methods(["GET", "POST"])
@require_action("view")
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of your tokens, or (an admin) anyone's, after a confirmation with a reason.

    Someone else's token is simply not found.
    """
    token = get_object_or_404(PersonalAccessToken.objects.select_related("user"), pk=token_id)
    if token.user_id != request.user.pk and not _is_admin(request.user):
        raise Http404("No such token.")
    reason, problem = confirm.read_reason(request.POST)
    problems = [problem] if problem and request.method == "POST" else []
    if request.method == "GET" or problems or token.status != "active":
        if token.status != "active":
            return redirect("tokens")
        return confirm.confirm_page(
            request,
            title=f"Revoke the token “{token.name}”",
            facts=[
                ("Owner", token.user.get_username()),
                ("Token", f"{token.prefix}…"),
                ("Expires", token.expires_at.strftime("%Y-%m-%d %H:%M UTC")),
            ],
            consequence="Every script using this token is refused from now on; a revoked token cannot be restored.",
            button="Revoke the token",
            cancel_url=reverse("tokens"),
            nav="tokens",
            problems=problems,
            reason=reason,
        )
    if tokens.revoke(token, request.user):
        audit.record(
            user=request.user,
            action="token_revoke",
            outcome="succeeded",
            reason=reason,
            sent={"owner": token.user.get_username(), "name": token.name, "prefix": token.prefix},
            via=audit.via_of(request),
            token_name=token.name,
        )
    return redirect("tokens")
