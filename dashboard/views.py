"""The dashboard's pages and actions."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up: nothing else is checked (see ``readyz``)."""
    return HttpResponse("ok\n", content_type="text/plain")
