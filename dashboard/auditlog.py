"""The audit log page and its CSV and JSON exports, filtered by user, action, environment, work id and outcome.

Every role may read the audit log (viewers included): knowing who did what is part of reading the dashboard, and
nothing in an entry is secret (keys appear masked only). Nobody can change it from here, or anywhere in the app.
Exports stream in batches, so a long log neither fills memory nor holds one huge query open.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from dashboard.models import HASHED_FIELDS, OUTCOMES, AuditEntry
from dashboard.permissions import ACTIONS, require_action

__all__ = ["audit_log", "export_csv", "export_json"]

PAGE_SIZE = 50
EXPORT_BATCH = 500
FILTERS = ("user", "action", "environment", "work_id", "outcome")
# Everything that is hashed, then the chain links themselves, so an export can be checked offline.
EXPORT_FIELDS = (*HASHED_FIELDS, "prev_hash", "hash")
# Actions recorded by the dashboard itself; entries from elsewhere (the gateway) add theirs to the filter list.
KNOWN_ACTIONS = (
    "patch_metadata",
    "stop",
    "force_stop",
    "bulk_stop",
    "bulk_force_stop",
    "configure_key_set",
    "configure_key_remove",
)


def _filters(request: HttpRequest) -> dict[str, str]:
    return {name: str(request.GET.get(name, "")).strip()[:150] for name in FILTERS}


def _filtered(filters: dict[str, str]) -> QuerySet[AuditEntry]:
    entries = AuditEntry.objects.order_by("-sequence")
    if filters["user"]:
        entries = entries.filter(username=filters["user"])
    if filters["action"]:
        entries = entries.filter(action=filters["action"])
    if filters["environment"]:
        entries = entries.filter(environment_id=filters["environment"])
    if filters["work_id"]:
        entries = entries.filter(work_id=filters["work_id"])
    if filters["outcome"]:
        entries = entries.filter(outcome=filters["outcome"])
    return entries


def _query_string(filters: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode({name: value for name, value in filters.items() if value})


@require_GET
@require_action("view")
def audit_log(request: HttpRequest) -> HttpResponse:
    """Audit entries, newest first, 50 a page."""
    filters = _filters(request)
    page = Paginator(_filtered(filters), PAGE_SIZE).get_page(request.GET.get("page"))
    actions = sorted(
        set(KNOWN_ACTIONS) | set(AuditEntry.objects.values_list("action", flat=True).distinct()[:100])
    )
    context = {
        "nav": "audit_log",
        "page": page,
        "audit_entries": page.object_list,
        "filters": filters,
        "filtering": any(filters.values()),
        "query_string": _query_string(filters),
        "actions": actions,
        "outcomes": OUTCOMES,
        "usernames": list(
            AuditEntry.objects.exclude(username="")
            .order_by("username")
            .values_list("username", flat=True)
            .distinct()[:200]
        ),
        "role_actions": ACTIONS,
    }
    return render(request, "dashboard/audit/log.html", context)


def _row(entry: AuditEntry) -> dict[str, Any]:
    row = {name: getattr(entry, name) for name in EXPORT_FIELDS}
    row["created_at"] = entry.created_at.isoformat()
    return row


def _batches(filters: dict[str, str]) -> Iterator[list[dict[str, Any]]]:
    """The filtered entries in batches, newest first, by keyset (each batch one short query)."""
    before: int | None = None
    while True:
        entries = _filtered(filters)
        if before is not None:
            entries = entries.filter(sequence__lt=before)
        batch = [_row(entry) for entry in entries[:EXPORT_BATCH]]
        if not batch:
            return
        yield batch
        before = batch[-1]["sequence"]


def _next_batch(batches: Iterator[list[dict[str, Any]]]) -> list[dict[str, Any]] | None:
    return next(batches, None)


def _streamed(request: HttpRequest, chunks: Any) -> Any:
    """Serve ``chunks`` (a function of one batch) synchronously, or asynchronously under ASGI."""
    filters = _filters(request)
    head, render_batch, tail = chunks

    if isinstance(request, ASGIRequest):

        async def async_content() -> AsyncIterator[str]:
            yield head
            batches = _batches(filters)
            first = True
            while (batch := await sync_to_async(_next_batch)(batches)) is not None:
                yield render_batch(batch, first)
                first = False
            yield tail

        return async_content()

    def sync_content() -> Iterator[str]:
        yield head
        for index, batch in enumerate(_batches(filters)):
            yield render_batch(batch, index == 0)
        yield tail

    return sync_content()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = (
        json.dumps(value, sort_keys=True, ensure_ascii=False)
        if isinstance(value, dict | list)
        else str(value)
    )
    # A cell starting with = + - @ is a formula to a spreadsheet; metadata and reasons are typed by anyone.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    return text


def _csv_batch(batch: list[dict[str, Any]], first: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in batch:
        writer.writerow([_csv_cell(row[name]) for name in EXPORT_FIELDS])
    return buffer.getvalue()


def _csv_head() -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(EXPORT_FIELDS)
    return buffer.getvalue()


def _json_batch(batch: list[dict[str, Any]], first: bool) -> str:
    body = ",\n".join(json.dumps(row, ensure_ascii=False) for row in batch)
    return body if first else ",\n" + body


def _filename(extension: str) -> str:
    return f"audit-log-{timezone.now():%Y%m%d-%H%M%S}.{extension}"


@require_GET
@require_action("view")
def export_csv(request: HttpRequest) -> StreamingHttpResponse:
    """The filtered audit log as CSV, newest first, with each entry's hash and the previous hash."""
    response = StreamingHttpResponse(
        _streamed(request, (_csv_head(), _csv_batch, "")), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{_filename("csv")}"'
    return response


@require_GET
@require_action("view")
def export_json(request: HttpRequest) -> StreamingHttpResponse:
    """The filtered audit log as a JSON array of entries, newest first."""
    response = StreamingHttpResponse(
        _streamed(request, ("[\n", _json_batch, "\n]\n")), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="{_filename("json")}"'
    return response
