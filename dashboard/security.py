"""Response headers Django does not set itself.

The Content-Security-Policy allows scripts, styles and connections only from this origin (websockets to this host
alone), no inline script or style, no framing, no ``<base>``, and forms that post only here. ``X-Robots-Tag``
(with ``robots.txt``, served by ``dashboard.views``) keeps crawlers out of an ops tool that may be reachable from
the internet. HSTS, the referrer policy, ``nosniff`` and ``X-Frame-Options`` come from Django's settings.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse

__all__ = ["SecurityHeadersMiddleware", "content_security_policy"]

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
