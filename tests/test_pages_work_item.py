"""The work item page against the emulator over real HTTP: every field, lease health, metadata, the audit trail, the
actions each role gets, malformed and unknown ids, upstream failures and hostile metadata."""

from __future__ import annotations

import re

import pytest
from pages_support import environment, fill_index, make_user, start_work

from dashboard import audit

pytestmark = pytest.mark.django_db


def field(html: str, name: str) -> str:
    match = re.search(rf"<dt>{name}</dt><dd>(.*?)</dd>", html, re.S)
    assert match, f"no field {name}"
    return match.group(1)


def test_it_shows_every_field_lease_health_and_metadata(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, state="active", metadata={"owner": "dana", "ticket": "OPS-1"})
    client.force_login(make_user("viewer"))

    response = client.get(f"/environments/{env['id']}/work/{item.id}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert field(html, "Work id") == f"<code>{item.id}</code>"
    assert env["id"] in field(html, "Environment") and "east" in field(html, "Environment")
    assert "active" in field(html, "State")
    assert field(html, "Data type") == "session"
    assert item.data.id in field(html, "Data id")
    for name in ("Created", "Acknowledged", "Started", "Last heartbeat"):
        assert "<time datetime=" in field(html, name), name
    assert field(html, "Stop requested") == "—"
    assert field(html, "Stopped") == "—"
    assert 'data-lease-status="healthy"' in html
    assert "last heartbeat" in html
    assert "<dt><code>owner</code></dt><dd>dana</dd>" in html
    assert "<dt><code>ticket</code></dt><dd>OPS-1</dd>" in html
    assert "secret" not in html.split("Everything the Work API sent")[1].split("</details>")[0]


def test_a_stuck_item_says_why(client, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, state="active")
    client.force_login(make_user("viewer"))

    html = client.get(f"/environments/{env['id']}/work/{item.id}/").content.decode()

    assert 'data-lease-status="stuck"' in html
    assert re.search(r"data-stuck-reason>No heartbeat for \d+ s while active", html)


def test_it_shows_the_audit_trail_of_the_item(client, upstream):
    env, key = environment(upstream, "east")
    item = upstream.enqueue(env["id"])
    operator = make_user("operator")
    audit.record(
        user=operator,
        action="stop",
        outcome="succeeded",
        environment_id=env["id"],
        work_id=item["id"],
        reason="<b>runaway</b> session",
        upstream_status=200,
        request_id="req_abc",
    )
    audit.record(
        user=operator, action="stop", outcome="succeeded", environment_id=env["id"], work_id="work_other"
    )
    client.force_login(make_user("viewer"))

    html = client.get(f"/environments/{env['id']}/work/{item['id']}/").content.decode()

    assert html.count("data-audit-entry=") == 1
    assert "&lt;b&gt;runaway&lt;/b&gt; session" in html
    assert "req_abc" in html


@pytest.mark.parametrize(
    ("role", "actions"),
    [
        ("viewer", []),
        ("operator", ["patch_metadata", "stop"]),
        ("admin", ["patch_metadata", "stop", "force_stop"]),
    ],
)
def test_each_role_sees_only_its_actions(client, upstream, role, actions):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, state="active")
    client.force_login(make_user(role))

    html = client.get(f"/environments/{env['id']}/work/{item.id}/").content.decode()

    assert re.findall(r'data-action="(\w+)"', html) == actions


@pytest.mark.parametrize(
    "path",
    [
        "/environments/env_ok/work/work_/",
        "/environments/env_ok/work/session_123/",
        "/environments/nope/work/work_123/",
        "/environments/env_ok/work/work_%3Cscript%3E/",
    ],
)
def test_malformed_ids_are_a_clear_404_without_upstream_calls(client, upstream, path):
    client.force_login(make_user("viewer"))
    upstream.reset_requests()

    response = client.get(path)

    assert response.status_code == 404
    html = response.content.decode()
    assert "is not a valid" in html or "is empty" in html
    assert "<script>" not in html
    assert upstream.requests()["total"] == 0


def test_an_unknown_item_is_a_404_that_says_so(client, upstream):
    env, _ = environment(upstream, "east")
    client.force_login(make_user("viewer"))

    response = client.get(f"/environments/{env['id']}/work/work_missing/")

    assert response.status_code == 404
    assert f"Environment {env['id']} has no work item work_missing." in response.content.decode()


def test_an_upstream_failure_shows_a_banner_not_an_error(client, upstream):
    env, _ = environment(upstream, "east")
    item = upstream.enqueue(env["id"])
    upstream.set_fault(route="retrieve", status=500)
    client.force_login(make_user("viewer"))

    response = client.get(f"/environments/{env['id']}/work/{item['id']}/")

    assert response.status_code == 502
    html = response.content.decode()
    assert 'data-failure-kind="server_error"' in html
    assert "HTTP 500" in html
    assert re.search(r"request-id <code>req_\w+</code>", html)
    assert "data-audit-empty" in html  # the trail is the dashboard's own and still shows


def test_hostile_metadata_renders_inert(client, upstream):
    env, _ = environment(upstream, "east")
    item = upstream.enqueue(env["id"], metadata={"note": "<script>alert(1)</script>", "<i>k</i>": "v"})
    client.force_login(make_user("viewer"))

    html = client.get(f"/environments/{env['id']}/work/{item['id']}/").content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<i>k</i>" not in html


def test_it_reads_the_item_from_the_index_with_its_timeline(client, upstream):
    env, key = environment(upstream, "indexed")
    item = start_work(upstream, env["id"], key, state="active", metadata={"owner": "dana"})
    fill_index(upstream, env["id"], key)
    client.force_login(make_user("viewer"))
    upstream.reset_requests()

    html = client.get(f"/environments/{env['id']}/work/{item.id}/").content.decode()

    assert "active" in field(html, "State")
    assert "<dt><code>owner</code></dt><dd>dana</dd>" in html
    assert "Confirmed with the Work API" in html
    assert re.findall(r'data-event="(\w+)"', html) == ["queued", "acknowledged", "first_heartbeat"]
    assert upstream.requests()["by_route"].get("retrieve", 0) == 0


def test_an_item_past_the_retention_is_read_directly(client, upstream):
    env, key = environment(upstream, "pruned")
    fill_index(upstream, env["id"], key)
    item = upstream.enqueue(env["id"])["id"]  # the index does not hold it, as after the retention
    client.force_login(make_user("viewer"))
    upstream.reset_requests()

    html = client.get(f"/environments/{env['id']}/work/{item}/").content.decode()

    assert "queued" in field(html, "State")
    assert "the work index does not hold it" in html
    assert upstream.requests()["by_route"].get("retrieve") == 1


def test_a_stop_shows_on_the_item_page_at_once(client, upstream):
    env, key = environment(upstream, "stopper")
    item = start_work(upstream, env["id"], key, state="active")
    fill_index(upstream, env["id"], key)
    client.force_login(make_user("admin"))

    response = client.post(f"/environments/{env['id']}/work/{item.id}/force-stop/", {"reason": "runaway"})
    html = client.get(response["Location"]).content.decode()

    assert "stopped" in field(html, "State")
    assert "Stop…" not in html and "Force-stop…" not in html
