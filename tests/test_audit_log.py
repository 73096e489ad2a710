"""The audit log page and its exports: every role reads it, filters by user, action, environment, work id and
outcome, pages of 50, CSV and JSON exports honouring the filters (with hashes), formula cells neutralised, hostile
text escaped, and the work item's trail partial."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.template.loader import render_to_string
from django.test import AsyncClient
from pages_support import make_user

from dashboard import audit
from dashboard.models import AuditEntry

pytestmark = pytest.mark.django_db


def seed():
    dana, erin = make_user("operator", "dana"), make_user("admin", "erin")
    audit.record(
        user=dana, action="stop", outcome="succeeded", environment_id="env_a", work_id="work_1", reason="r1"
    )
    audit.record(
        user=dana,
        action="patch_metadata",
        outcome="failed",
        environment_id="env_a",
        work_id="work_2",
        upstream_status=503,
        request_id="req_x",
        error="unavailable: down",
    )
    audit.record(
        user=erin, action="force_stop", outcome="succeeded", environment_id="env_b", work_id="work_1"
    )
    audit.record(
        user=None,
        username="mallory",
        action="stop",
        outcome="denied",
        environment_id="env_b",
        work_id="work_3",
        reason='=HYPERLINK("http://evil")',
    )


def listed(html: str) -> list[str]:
    return re.findall(r'data-audit-entry="(\d+)"', html)


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_every_role_reads_the_audit_log(client, role):
    seed()
    client.force_login(make_user(role, f"reader-{role}"))

    response = client.get("/audit/")

    assert response.status_code == 200
    assert listed(response.content.decode()) == ["4", "3", "2", "1"]
    # The table scrolls sideways on narrow screens: its region takes keyboard focus, so arrows can scroll it.
    assert re.search(r'<div class="table-wrap" tabindex="0">\s*<table', response.content.decode())


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("user=dana", ["2", "1"]),
        ("action=stop", ["4", "1"]),
        ("environment=env_b", ["4", "3"]),
        ("work_id=work_1", ["3", "1"]),
        ("outcome=denied", ["4"]),
        ("user=dana&outcome=failed", ["2"]),
        ("user=nobody", []),
    ],
)
def test_filters(client, query, expected):
    seed()
    client.force_login(make_user("viewer", "reader"))

    html = client.get(f"/audit/?{query}").content.decode()

    assert listed(html) == expected


def test_pages_of_fifty(client):
    for n in range(60):
        audit.record(user=None, action="stop", outcome="succeeded", work_id=f"work_{n}")
    client.force_login(make_user("viewer"))

    first = client.get("/audit/").content.decode()
    second = client.get("/audit/?page=2").content.decode()
    beyond = client.get("/audit/?page=999999999999").content.decode()

    assert len(listed(first)) == 50 and listed(first)[0] == "60"
    assert listed(second) == [str(n) for n in range(10, 0, -1)]
    assert listed(beyond) == listed(second)  # out of range → the last page, never an error
    assert "Page 1 of 2" in first


def test_the_csv_export_honours_the_filters_and_neutralises_formulas(client):
    seed()
    client.force_login(make_user("viewer", "reader"))

    response = client.get("/audit/export.csv?environment=env_b")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="audit-log-\d{8}-\d{6}\.csv"', response["Content-Disposition"])
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["sequence"] for row in rows] == ["4", "3"]
    assert rows[0]["reason"] == '\'=HYPERLINK("http://evil")'
    assert rows[0]["username"] == "mallory" and rows[0]["outcome"] == "denied"
    stored = AuditEntry.objects.get(sequence=4)
    assert rows[0]["hash"] == stored.hash and rows[0]["prev_hash"] == stored.prev_hash


def test_the_json_export_honours_the_filters(client):
    seed()
    client.force_login(make_user("viewer", "reader"))

    response = client.get("/audit/export.json?user=dana")

    entries = json.loads(b"".join(response.streaming_content))
    assert [entry["sequence"] for entry in entries] == [2, 1]
    assert entries[0]["upstream_status"] == 503 and entries[0]["request_id"] == "req_x"
    assert entries[0]["error"] == "unavailable: down"
    assert set(entries[0]) >= {"created_at", "username", "action", "sent", "outcome", "hash", "prev_hash"}
    assert json.loads(b"".join(client.get("/audit/export.json?user=nobody").streaming_content)) == []


async def test_the_exports_stream_under_asgi(transactional_db):
    from asgiref.sync import sync_to_async

    await sync_to_async(seed)()
    user = await sync_to_async(make_user)("viewer", "reader")
    client = AsyncClient()
    await client.aforce_login(user)

    response = await client.get("/audit/export.json?work_id=work_1")

    body = b"".join([chunk async for chunk in response.streaming_content])  # type: ignore[attr-defined]
    assert [entry["sequence"] for entry in json.loads(body)] == [3, 1]


def test_the_trail_escapes_hostile_text():
    audit.record(
        user=None,
        action="stop",
        outcome="failed",
        work_id="work_1",
        reason="<script>x()</script>",
        error="<b>bad</b>",
        sent={"metadata": {"<i>": "</td>"}},
    )

    html = render_to_string(
        "dashboard/audit/_trail.html", {"audit_entries": audit.entries_for_work("work_1")}
    )

    assert "<script>" not in html and "<b>bad" not in html and "<i>" not in html
    assert "&lt;script&gt;x()&lt;/script&gt;" in html
    assert (
        render_to_string("dashboard/audit/_trail.html", {"audit_entries": []})
        .strip()
        .endswith('<p class="subtle" data-audit-empty>Nothing recorded yet.</p>')
    )


def test_environment_by_name_in_part_work_id_in_part_and_a_time_range(client):
    from datetime import timedelta

    from django.utils import timezone

    from dashboard.index.models import IndexedEnvironment

    seed()
    IndexedEnvironment.objects.create(environment_id="env_b", name="Payments")
    hour_ago = timezone.now() - timedelta(hours=1)
    client.force_login(make_user("viewer", "reader"))

    assert listed(client.get("/audit/?environment=paym").content.decode()) == ["4", "3"]
    assert listed(client.get("/audit/?environment=env_").content.decode()) == ["4", "3", "2", "1"]
    assert listed(client.get("/audit/?work_id=rk_2").content.decode()) == ["2"]
    now = timezone.now()
    assert listed(client.get(f"/audit/?since={hour_ago:%Y-%m-%dT%H:%M}").content.decode()) == [
        "4",
        "3",
        "2",
        "1",
    ]
    # "To" a minute includes that whole minute; a range ending before the entries finds none.
    assert listed(client.get(f"/audit/?until={now:%Y-%m-%dT%H:%M}").content.decode()) == ["4", "3", "2", "1"]
    assert listed(client.get(f"/audit/?until={hour_ago:%Y-%m-%d %H:%M}").content.decode()) == []
    tomorrow = now + timedelta(days=1)
    assert listed(client.get(f"/audit/?since={tomorrow:%Y-%m-%d}").content.decode()) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=yesterday", "“From” is not a time: use YYYY-MM-DD HH:MM (UTC)."),
        ("until=2026-13-40", "“To” is not a time: use YYYY-MM-DD HH:MM (UTC)."),
        ("since=2026-05-02&until=2026-05-01", "The time range ends before it starts."),
        ("outcome=maybe", "The outcome must be one of: succeeded, failed, denied."),
    ],
)
def test_unreadable_filters_are_a_400_that_says_why_and_keeps_what_was_typed(client, query, message):
    from html import unescape

    seed()
    client.force_login(make_user("viewer", "reader"))

    response = client.get(f"/audit/?{query}&user=dana")
    html = unescape(response.content.decode())

    assert response.status_code == 400
    assert message in html
    assert listed(html) == []
    assert '<option value="dana" selected>' in html
    export = client.get(f"/audit/export.csv?{query}")
    assert export.status_code == 400 and message in export.content.decode()


def test_actions_in_words_link_to_what_they_concern_and_paging_keeps_the_filters(client):
    from dashboard.index.models import IndexedEnvironment

    IndexedEnvironment.objects.create(environment_id="env_a", name="Payments")
    operation = "5b2a4c1e-8f39-4d5e-9a77-1c2d3e4f5a6b"
    for n in range(55):
        audit.record(
            user=None,
            username="dana",
            action="force_stop",
            outcome="succeeded",
            environment_id="env_a",
            work_id=f"work_{n}",
            sent={"force": True, "bulk_operation": operation},
            via="bulk",
        )
    audit.record(user=None, username="dana", action="stop", outcome="succeeded", work_id="work_x/evil")
    client.force_login(make_user("viewer", "reader"))

    html = client.get("/audit/?action=force_stop&environment=Paym").content.decode()

    assert '<span title="force_stop" data-action-words>Force-stopped</span>' in html
    assert '<a href="/environments/env_a/work/work_54/" data-work-link>' in html
    assert f'<a href="/bulk/{operation}/" data-bulk-link>' in html
    assert re.search(r'href="/environments/env_a/" data-environment-link>Payments</a>', html)
    assert 'href="?action=force_stop&amp;environment=Paym&amp;page=2" rel="next"' in html
    second = client.get("/audit/?action=force_stop&environment=Paym&page=2").content.decode()
    assert len(listed(second)) == 5
    # An id that cannot be part of an address is shown, not linked (and is no error).
    plain = client.get("/audit/?work_id=evil").content.decode()
    assert "<code>work_x/evil</code>" in plain and "data-work-link" not in plain
