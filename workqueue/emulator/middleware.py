"""The one middleware of the emulator's own process: a ``request-id`` on every response, and JSON always.

Views already answer in the upstream's envelope; this catches what they cannot (a response Django itself built, such
as an error page), so a client never sees HTML or a response without a request id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus

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
        response = await self.get_response(request)
        content_type = response.get("Content-Type", "")
        if response.status_code >= 400 and not response.has_header("request-id") and JSON not in content_type:
            status = response.status_code
            response = error_response(request, EmulatorError(status, _reason(status)))
        if not response.has_header("request-id"):
            response["request-id"] = request_id_of(request)
        return response


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"
