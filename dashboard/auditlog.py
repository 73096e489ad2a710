"""The audit log page and its CSV and JSON exports, filtered by user, action, environment (name or id, in part),
work id (in part), outcome and a time range (UTC). A filter value that cannot be read is answered with a 400 and the
reason, the form keeping what was typed.

Every role may read the audit log (viewers included): knowing who did what is part of reading the dashboard, and
nothing in an entry is secret (keys appear masked only). Nobody can change it from here, or anywhere in the app.
Exports stream in batches, so a long log neither fills memory nor holds one huge query open.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django import forms
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from dashboard.index.models import IndexedEnvironment
from dashboard.models import HASHED_FIELDS, Action, AuditEntry, Outcome, action_words
from dashboard.permissions import ACTIONS, require_action

__all__ = ["audit_log", "export_csv", "export_json"]

PAGE_SIZE = 50
EXPORT_BATCH = 500
FILTERS = ("user", "action", "environment", "work_id", "outcome", "since", "until")
# What <input type="datetime-local"> sends, and the ISO forms people paste.
TIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]
# Everything that is hashed, then the chain links themselves, so an export can be checked offline.
EXPORT_FIELDS = (*HASHED_FIELDS, "prev_hash", "hash")
# Actions recorded by the dashboard itself; entries from elsewhere (the gateway) add theirs to the filter list.
KNOWN_ACTIONS = (
    Action.PATCH_METADATA,
    Action.STOP,
    Action.FORCE_STOP,
    Action.BULK_STOP,
    Action.BULK_FORCE_STOP,
    Action.CONFIGURE_KEY_SET,
    Action.CONFIGURE_KEY_REMOVE,
)


class AuditFilters(forms.Form):
    user = forms.CharField(required=False, max_length=150)
    action = forms.CharField(required=False, max_length=40)
    environment = forms.CharField(required=False, max_length=150)
    work_id = forms.CharField(required=False, max_length=150)
    outcome = forms.ChoiceField(
        required=False,
        choices=[("", "Any"), *Outcome.choices],
        error_messages={"invalid_choice": "The outcome must be one of: " + ", ".join(Outcome.values) + "."},
    )
    since = forms.DateTimeField(
        required=False,
        input_formats=TIME_FORMATS,
        error_messages={"invalid": "“From” is not a time: use YYYY-MM-DD HH:MM (UTC)."},
    )
    until = forms.DateTimeField(
        required=False,
        input_formats=TIME_FORMATS,
        error_messages={"invalid": "“To” is not a time: use YYYY-MM-DD HH:MM (UTC)."},
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            raise forms.ValidationError("The time range ends before it starts.")
        return cleaned


def _filters(request: HttpRequest) -> AuditFilters:
    return AuditFilters({name: str(request.GET.get(name, "")).strip() for name in FILTERS})


def _through_minute(moment: datetime) -> datetime:
    """The end of a range given to the minute (or as a date) covers that minute (or day): to 12:30 takes 12:30:59."""
    if moment.second or moment.microsecond:
        return moment
    if moment.hour == 0 and moment.minute == 0:
        return moment + timedelta(days=1)
    return moment + timedelta(minutes=1)


def _filtered(filters: dict[str, Any]) -> QuerySet[AuditEntry]:
    entries = AuditEntry.objects.order_by("-sequence")
    if filters.get("user"):
        entries = entries.filter(username=filters["user"])
    if filters.get("action"):
        entries = entries.filter(action=filters["action"])
    if filters.get("environment"):
        text = filters["environment"]
        named = IndexedEnvironment.objects.filter(name__icontains=text).values_list(
            "environment_id", flat=True
        )
        entries = entries.filter(Q(environment_id__icontains=text) | Q(environment_id__in=list(named[:500])))
    if filters.get("work_id"):
        entries = entries.filter(work_id__icontains=filters["work_id"])
    if filters.get("outcome"):
        entries = entries.filter(outcome=filters["outcome"])
    if filters.get("since"):
        entries = entries.filter(created_at__gte=filters["since"])
    if filters.get("until"):
        entries = entries.filter(created_at__lt=_through_minute(filters["until"]))
    return entries


def _problems(form: AuditFilters) -> list[str]:
    return [str(message) for messages in form.errors.values() for message in messages]


def _query_string(filters: dict[str, Any]) -> str:
    from urllib.parse import urlencode

    return urlencode({name: value for name, value in filters.items() if value})


@require_GET
@require_action("view")
def audit_log(request: HttpRequest) -> HttpResponse:
    """Audit entries, newest first, 50 a page; links from each to the work item, environment and bulk operation it
    concerns, environments by name where the index knows it."""
    form = _filters(request)
    typed = dict(form.data)
    problems = [] if form.is_valid() else _problems(form)
    entries = AuditEntry.objects.none() if problems else _filtered(form.cleaned_data)
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    audit_entries = list(page.object_list)
    names = dict(
        IndexedEnvironment.objects.filter(
            environment_id__in={entry.environment_id for entry in audit_entries if entry.environment_id}
        )
        .exclude(name="")
        .values_list("environment_id", "name")
    )
    for entry in audit_entries:
        entry.environment_name = names.get(entry.environment_id, "")
    codes = set(KNOWN_ACTIONS) | set(AuditEntry.objects.values_list("action", flat=True).distinct()[:100])
    actions = sorted(((str(code), action_words(code)) for code in codes), key=lambda pair: pair[1].lower())
    context = {
        "nav": "audit_log",
        "page": page,
        "audit_entries": audit_entries,
        "filters": typed,
        "problems": problems,
        "filtering": any(typed.values()),
        "query_string": _query_string(typed),
        "actions": actions,
        "outcomes": Outcome.values,
        "usernames": list(
            AuditEntry.objects.exclude(username="")
            .order_by("username")
            .values_list("username", flat=True)
            .distinct()[:200]
        ),
        "role_actions": ACTIONS,
    }
    return render(request, "dashboard/audit/log.html", context, status=400 if problems else 200)


def _row(entry: AuditEntry) -> dict[str, Any]:
    row = {name: getattr(entry, name) for name in EXPORT_FIELDS}
    row["created_at"] = entry.created_at.isoformat()
    return row


def _batches(filters: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
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
    form = _filters(request)
    filters = (
        form.cleaned_data if form.is_valid() else {}
    )  # the export views refused unreadable filters already
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


def _refused_filters(request: HttpRequest) -> HttpResponse | None:
    """A 400 naming what is wrong with the filters, or None when they can be read."""
    form = _filters(request)
    if form.is_valid():
        return None
    return HttpResponse(
        "\n".join(_problems(form)) + "\n", status=400, content_type="text/plain; charset=utf-8"
    )


def _filename(extension: str) -> str:
    return f"audit-log-{timezone.now():%Y%m%d-%H%M%S}.{extension}"


@require_GET
@require_action("view")
def export_csv(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """The filtered audit log as CSV, newest first, with each entry's hash and the previous hash."""
    if refused := _refused_filters(request):
        return refused
    response = StreamingHttpResponse(
        _streamed(request, (_csv_head(), _csv_batch, "")), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{_filename("csv")}"'
    return response


@require_GET
@require_action("view")
def export_json(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """The filtered audit log as a JSON array of entries, newest first."""
    if refused := _refused_filters(request):
        return refused
    response = StreamingHttpResponse(
        _streamed(request, ("[\n", _json_batch, "\n]\n")), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="{_filename("json")}"'
    return response
