"""The one middleware of the emulator's own process: path segments as the client encoded them, a ``request-id`` on
every response, and JSON always.

Views already answer in the upstream's envelope; this catches what they cannot (a response Django itself built, such
as an error page), so a client never sees HTML or a response without a request id.

Routing by segment: the ASGI ``path`` is percent-decoded, so an id sent as ``work_1%2Fstop`` (the SDK encodes a
``/`` in a path parameter that way) would reach the ``.../work_1/stop`` route and stop ``work_1``. The upstream
routes on the encoded path, where that id is one segment: a work item id that does not exist. So when a decoded
segment of ``raw_path`` holds a ``/``, routing sees a placeholder for that segment and the view gets the decoded id.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from workqueue.emulator import engine
from workqueue.emulator.engine import EmulatorError
from workqueue.emulator.views import JSON, error_response, request_id_of


class EmulatorMiddleware:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request.request_id = engine.new_request_id()  # type: ignore[attr-defined]
        _route_by_encoded_segments(request)
        response = await self.get_response(request)
        content_type = response.get("Content-Type", "")
        if response.status_code >= 400 and not response.has_header("request-id") and JSON not in content_type:
            status = response.status_code
            response = error_response(request, EmulatorError(status, _reason(status)))
        if not response.has_header("request-id"):
            response["request-id"] = request_id_of(request)
        return response

    async def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        # Async, so Django calls it on the loop; the handler calls the view with this same dict.
        segments: dict[str, str] | None = getattr(request, "encoded_segments", None)
        if segments:
            for name, value in kwargs.items():
                if value in segments:
                    kwargs[name] = segments[value]


def _route_by_encoded_segments(request: HttpRequest) -> None:
    raw_path = getattr(request, "scope", {}).get("raw_path")
    if not raw_path or b"%2f" not in raw_path.lower():
        return
    segments = [unquote_to_bytes(part).decode("utf-8", errors="replace") for part in raw_path.split(b"/")]
    if not any("/" in segment for segment in segments):
        return
    marker = secrets.token_hex(8)
    held: dict[str, str] = {}
    routed = []
    for segment in segments:
        if "/" in segment:
            placeholder = f"{marker}-{len(held)}"
            held[placeholder] = segment
            segment = placeholder
        routed.append(segment)
    request.encoded_segments = held  # type: ignore[attr-defined]
    request.path_info = "/".join(routed)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"
