"""Response headers Django does not set itself.

The Content-Security-Policy allows scripts, styles and connections only from this origin (websockets to this host
alone), no inline script or style, no framing, no ``<base>``, and forms that post only here. ``X-Robots-Tag``
(with ``robots.txt``, served by ``dashboard.views``) keeps crawlers out of an ops tool that may be reachable from
the internet. HSTS, the referrer policy, ``nosniff`` and ``X-Frame-Options`` come from Django's settings.

``WebsocketOriginValidator`` is the websockets' counterpart of Django's CSRF origin check: a handshake is accepted
only from this site's own origin or a trusted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth import logout
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port, validate_host

__all__ = [
    "SecurityHeadersMiddleware",
    "WebsocketOriginValidator",
    "content_security_policy",
    "websocket_origin_allowed",
]

_FIXED_DIRECTIVES = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "object-src 'none'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'self'",
)


def content_security_policy(request: HttpRequest) -> str:
    """The policy for one response; ``connect-src`` names this host's websocket URL explicitly.

    CSP level 3 lets ``'self'`` cover same-host websockets, but older browsers need the ws(s) origin spelled out;
    naming the host (rather than any ``ws:``/``wss:``) keeps the page from opening sockets anywhere else.
    """
    try:
        host = request.get_host()
    except DisallowedHost:
        host = ""
    connect = ["'self'"]
    if host:
        connect.append(f"wss://{host}")
        if not request.is_secure():
            connect.append(f"ws://{host}")
    return "; ".join((*_FIXED_DIRECTIVES, "connect-src " + " ".join(connect)))


class SecurityHeadersMiddleware:
    """Adds the CSP, ``X-Robots-Tag`` and a restrictive ``Permissions-Policy`` to every response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = content_security_policy(request)
        response.setdefault("X-Robots-Tag", "noindex, nofollow")
        response.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
        return response


# --- Idle sessions -------------------------------------------------------------------------------------------

# When the session last saw a request of its person (seconds since the epoch), renewed at most once a minute.
IDLE_KEY = "dashboard_seen_at"


class IdleSessionMiddleware:
    """Signs a person out after ``SESSION_IDLE_MINUTES`` without a request (a page's own refreshes count), so a
    browser left signed in on a shared console does not stay so for the session's whole life."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        if session is not None and "_auth_user_id" in session:
            now = int(time.time())
            seen = session.get(IDLE_KEY)
            if isinstance(seen, int) and now - seen > int(settings.SESSION_IDLE_MINUTES) * 60:
                logout(request)
            elif not isinstance(seen, int) or now - seen >= 60:
                session[IDLE_KEY] = now
        return self.get_response(request)


# --- Websocket origins -----------------------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(origin: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin such as ``https://dash.example:8443``; None if it is not one."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.username is not None or parts.query or parts.fragment:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _trusted(origin: tuple[str, str, int], trusted: list[str]) -> bool:
    """Whether ``origin`` is one of ``CSRF_TRUSTED_ORIGINS`` (Django's ``https://*.example.com`` form included)."""
    scheme, host, port = origin
    for entry in trusted:
        wildcard = "://*." in entry
        candidate = _origin_tuple(entry.replace("://*.", "://", 1) if wildcard else entry)
        if candidate is None or candidate[0] != scheme or candidate[2] != port:
            continue
        if host == candidate[1] or (wildcard and host.endswith("." + candidate[1])):
            return True
    return False


def websocket_origin_allowed(scope: dict[str, Any]) -> bool:
    """A websocket handshake comes from a page of this site: its ``Origin`` is the request's own origin (scheme,
    host and port, all three) or one of ``CSRF_TRUSTED_ORIGINS``, and its ``Host`` is an allowed host.

    Comparing host names alone would let any page served from another port of the same host (or over plain http
    when the site is https) read live data with a viewer's cookie.
    """
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    host_header = headers.get("host", "")
    origin = _origin_tuple(headers.get("origin", ""))
    if origin is None or not host_header:
        return False
    domain, port_text = split_domain_port(host_header)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        forwarded = headers.get(name.removeprefix("HTTP_").replace("_", "-").lower())
        if forwarded is not None:
            scheme = "https" if forwarded.split(",")[0].strip() == secure_value else "http"
    try:
        port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
    except ValueError:
        return False
    if origin == (scheme, domain.strip("[]").lower(), port):
        return True
    return _trusted(origin, list(settings.CSRF_TRUSTED_ORIGINS))


class WebsocketOriginValidator:
    """ASGI middleware: a websocket whose origin is not this site's is refused at the handshake (HTTP 403)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not websocket_origin_allowed(scope):
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)
