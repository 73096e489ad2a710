"""Metadata patches against the emulator over real HTTP: the form, the diff preview, limits checked before any
upstream call, the warning when the metadata changed upstream since the form was loaded, the merge patch with null
deletes, failures, hostile metadata, and the audit entry of each attempt."""

from __future__ import annotations

import html as html_lib
import json
import re

import pytest
from pages_support import environment, make_user, start_work, worker_client

from dashboard.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    client.force_login(make_user("operator"))
    return client


def url(item) -> str:
    return f"/environments/{item.environment_id}/work/{item.id}/metadata/"


def retrieve(emulator, item):
    with worker_client(emulator) as c:
        return c.beta.environments.work.retrieve(item.id, environment_id=item.environment_id)


def hidden(html: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', html)
    assert match, f"no hidden {name}"
    return html_lib.unescape(match.group(1))


def test_it_previews_then_patches_with_null_deletes(operator, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, metadata={"owner": "dana", "ticket": "OPS-1", "old": "x"})

    form = operator.get(url(item))
    assert form.status_code == 200
    loaded = hidden(form.content.decode(), "loaded")
    assert json.loads(loaded) == {"old": "x", "owner": "dana", "ticket": "OPS-1"}

    upstream.reset_requests()
    preview = operator.post(
        url(item),
        {
            "step": "preview",
            "loaded": loaded,
            "key": ["old", "owner", "ticket", "priority", ""],
            "value": ["x", "erin", "OPS-1", "high", ""],
            "delete": ["old"],
            "reason": "handover",
        },
    )
    assert preview.status_code == 200
    html = preview.content.decode()
    found = re.findall(r'<tr data-change="(\w+)">.*?<code>([^<]*)</code>', html, re.S)
    assert sorted(found) == [
        ("added", "priority"),
        ("changed", "owner"),
        ("removed", "old"),
        ("unchanged", "ticket"),
    ]
    assert upstream.requests()["total"] == 0  # the preview sends nothing
    patch = hidden(html, "patch")
    assert json.loads(patch) == {"old": None, "owner": "erin", "priority": "high"}

    sent = operator.post(url(item), {"step": "send", "loaded": loaded, "patch": patch, "reason": "handover"})

    assert sent.status_code == 302
    assert sent["Location"] == f"/environments/{item.environment_id}/work/{item.id}/"
    # One re-read (has it changed since the form was loaded?) and one merge patch.
    assert upstream.requests()["by_route"] == {"retrieve": 1, "update": 1}
    assert retrieve(upstream, item).metadata == {"owner": "erin", "ticket": "OPS-1", "priority": "high"}
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.username) == ("patch_metadata", "succeeded", "operator")
    assert entry.sent == {"metadata": {"old": None, "owner": "erin", "priority": "high"}}
    assert entry.upstream_status == 200 and entry.request_id
    assert entry.reason == "handover"
    page = operator.get(sent["Location"]).content.decode()
    assert f"Metadata of {item.id} updated: 1 added, 1 changed, 1 removed." in page
    assert 'data-action="patch_metadata" data-outcome="succeeded"' in page


def test_it_checks_the_limits_before_any_upstream_call(operator, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, metadata={f"k{i}": "v" for i in range(15)})
    loaded = hidden(operator.get(url(item)).content.decode(), "loaded")
    upstream.reset_requests()

    response = operator.post(
        url(item),
        {
            "step": "preview",
            "loaded": loaded,
            "key": ["new1", "new2", "x" * 65],
            "value": ["a", "b" * 513, "c"],
        },
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert "Nothing was sent." in html
    assert "Too many metadata keys: 18 (at most 16)." in html
    assert "is 513 characters long (at most 512)." in html
    assert "is 65 characters long (at most 64)." in html
    assert upstream.requests()["total"] == 0
    assert not AuditEntry.objects.exists()


def test_a_forged_patch_over_the_limits_is_refused_without_an_update(operator, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    patch = json.dumps({f"k{i}": "v" for i in range(17)})
    upstream.reset_requests()

    response = operator.post(url(item), {"step": "send", "loaded": "{}", "patch": patch})

    assert response.status_code == 400
    assert "Too many metadata keys: 17 (at most 16)." in response.content.decode()
    assert "update" not in upstream.requests()["by_route"]
    assert retrieve(upstream, item).metadata == {}


def test_it_warns_when_the_metadata_changed_upstream_since_the_form_was_loaded(operator, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, metadata={"owner": "dana"})
    loaded = hidden(operator.get(url(item)).content.decode(), "loaded")
    with worker_client(upstream) as c:
        c.beta.environments.work.update(
            item.id, environment_id=env["id"], metadata={"owner": "someone-else", "ticket": "OPS-9"}
        )
    upstream.reset_requests()

    response = operator.post(
        url(item), {"step": "send", "loaded": loaded, "patch": json.dumps({"owner": "erin"})}
    )

    assert response.status_code == 409
    html = response.content.decode()
    assert "The metadata changed since you loaded the form." in html
    assert re.search(r'data-change="changed">.*?<code>owner</code>.*?someone-else.*?erin', html, re.S)
    assert upstream.requests()["by_route"] == {"retrieve": 1}  # re-read only, nothing sent
    assert retrieve(upstream, item).metadata == {"owner": "someone-else", "ticket": "OPS-9"}
    assert not AuditEntry.objects.exists()

    # Confirming again (the form now carries what is there now) sends the patch.
    again = operator.post(
        url(item), {"step": "send", "loaded": hidden(html, "loaded"), "patch": hidden(html, "patch")}
    )
    assert again.status_code == 302
    assert retrieve(upstream, item).metadata == {"owner": "erin", "ticket": "OPS-9"}
    assert AuditEntry.objects.get().outcome == "succeeded"


def test_hostile_metadata_is_escaped_everywhere(operator, upstream):
    env, key = environment(upstream, "east")
    hostile = '<script>alert("x")</script>'
    item = start_work(upstream, env["id"], key, metadata={hostile: hostile})

    form = operator.get(url(item)).content.decode()
    loaded = hidden(form, "loaded")
    preview = operator.post(
        url(item),
        {"step": "preview", "loaded": loaded, "key": [hostile, "b"], "value": [hostile + "!", hostile]},
    ).content.decode()

    for html in (form, preview):
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_an_upstream_failure_shows_a_banner_and_is_audited(operator, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, metadata={"owner": "dana"})
    loaded = hidden(operator.get(url(item)).content.decode(), "loaded")
    upstream.set_fault(route="update", status=503)

    response = operator.post(
        url(item), {"step": "send", "loaded": loaded, "patch": json.dumps({"owner": "erin"})}
    )

    assert response.status_code == 502
    html = response.content.decode()
    assert 'data-failure-kind="unavailable"' in html
    assert "The Work API is unavailable" in html
    assert "HTTP 503" in html and "request-id <code>" in html
    assert "Traceback" not in html and upstream.api_key not in html
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.upstream_status) == ("patch_metadata", "failed", 503)
    assert entry.request_id and entry.request_id in html
    assert entry.error.startswith("unavailable: ")
    assert retrieve(upstream, item).metadata == {"owner": "dana"}


def test_an_unknown_item_is_404_with_a_banner(operator, upstream):
    env, _ = environment(upstream, "east")

    response = operator.get(f"/environments/{env['id']}/work/work_doesnotexist/metadata/")

    assert response.status_code == 404
    assert 'data-failure-kind="not_found"' in response.content.decode()


def test_an_invalid_id_in_the_url_is_404_before_any_call(operator, upstream):
    upstream.reset_requests()

    response = operator.get("/environments/env_x/work/not-a-work-id/metadata/")

    assert response.status_code == 404
    assert upstream.requests()["total"] == 0


def test_a_viewer_cannot_patch(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, metadata={"owner": "dana"})
    client.force_login(make_user("viewer"))
    upstream.reset_requests()

    assert client.get(url(item)).status_code == 403
    response = client.post(
        url(item), {"step": "send", "loaded": "{}", "patch": json.dumps({"owner": "mallory"})}
    )

    assert response.status_code == 403
    assert upstream.requests()["total"] == 0
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.username, entry.work_id) == (
        "patch_metadata",
        "denied",
        "viewer",
        item.id,
    )
    assert entry.sent == {"step": ["send"], "loaded": ["{}"], "patch": ['{"owner": "mallory"}']}
    assert retrieve(upstream, item).metadata == {"owner": "dana"}
