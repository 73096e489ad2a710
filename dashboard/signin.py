"""How people sign in: the password form (unless ``PASSWORD_LOGIN=off``) and the identity provider (``OIDC_*``).

- ``sign_in``: the login page; it offers "Sign in with <provider>" when OIDC is configured, and refuses password
  posts when password sign-in is off.
- ``begin_provider_sign_in`` / ``provider_callback``: the two ends of the authorization code flow, mozilla-django-oidc's
  views with the endpoints from discovery; every refusal is a page saying why (``dashboard.oidc.SignInRefused``).

What is checked, and how people and roles are matched, lives in ``dashboard.oidc``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django.views.generic import View
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from dashboard.oidc import SignInRefused, provider_metadata, provider_name

logger = logging.getLogger("dashboard.signin")


class SignInView(auth_views.LoginView):
    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["password_login"] = settings.PASSWORD_LOGIN
        context["provider_name"] = provider_name() if settings.OIDC_ISSUER else ""
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.PASSWORD_LOGIN:
            response = self.get(request, *args, **kwargs)
            response.status_code = 403
            return response
        return super().post(request, *args, **kwargs)


sign_in = SignInView.as_view()


def _refused(request: HttpRequest, refusal: SignInRefused) -> HttpResponse:
    logger.warning("sign-in through the identity provider refused: %s", refusal)
    return render(
        request,
        "registration/sign_in_refused.html",
        {
            "message": str(refusal),
            "provider_name": provider_name(),
            "password_login": settings.PASSWORD_LOGIN,
        },
        status=refusal.status,
    )


class _Begin(OIDCAuthenticationRequestView):
    OIDC_OP_AUTH_ENDPOINT = ""

    def __init__(self, **kwargs: Any) -> None:
        View.__init__(self, **kwargs)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID


class _Callback(OIDCAuthenticationCallbackView):
    def login_failure(self) -> HttpResponse:
        error = str(self.request.GET.get("error", ""))[:100]
        if error:
            raise SignInRefused(f"The identity provider did not sign you in ({error}).", status=403)
        raise SignInRefused(
            "This sign-in was not started in this browser, or was finished already: start again from the sign-in page."
        )


@require_GET
def begin_provider_sign_in(request: HttpRequest) -> HttpResponse:
    """Off to the provider, with a fresh state, nonce and PKCE challenge kept in this browser's session."""
    if not settings.OIDC_ISSUER:
        raise Http404("Sign-in through an identity provider is not configured.")
    try:
        metadata = provider_metadata()
    except SignInRefused as refusal:
        return _refused(request, refusal)
    response: HttpResponse = _Begin.as_view(OIDC_OP_AUTH_ENDPOINT=metadata.authorization_endpoint)(request)
    return response


@require_GET
def provider_callback(request: HttpRequest) -> HttpResponse:
    """The provider sends the browser back here with a code and the state it was given."""
    if not settings.OIDC_ISSUER:
        raise Http404("Sign-in through an identity provider is not configured.")
    # RFC 9207: a provider that names itself in the answer must be the one configured (a mix-up otherwise).
    answered_by = request.GET.get("iss")
    if answered_by is not None and answered_by != settings.OIDC_ISSUER:
        return _refused(
            request,
            SignInRefused(f"The answer comes from {answered_by[:200]!r}, not {settings.OIDC_ISSUER}."),
        )
    try:
        response: HttpResponse = _Callback.as_view()(request)
    except SuspiciousOperation:
        # The state matches none this session started: forged, replayed, or from another browser.
        return _refused(
            request,
            SignInRefused(
                "This sign-in was not started in this browser, or was finished already: start again from the sign-in page."
            ),
        )
    except SignInRefused as refusal:
        return _refused(request, refusal)
    return response
