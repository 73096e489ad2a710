"""Stop and force-stop against the emulator over real HTTP: the confirmation naming the item, the required reason,
force for admins only, "already stopped" as a notice, upstream failures as a banner, and the audit entry of each."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from pages_support import environment, make_user, start_work, worker_client

from dashboard.models import AuditEntry

pytestmark = pytest.mark.django_db


def url(item) -> str:
    return f"/environments/{item.environment_id}/work/{item.id}/stop/"


def force_url(item) -> str:
    return f"/environments/{item.environment_id}/work/{item.id}/force-stop/"


def state_of(emulator, item) -> str:
    with worker_client(emulator) as c:
        return c.beta.environments.work.retrieve(item.id, environment_id=item.environment_id).state


def as_role(client, role):
    client.force_login(make_user(role))
    return client


def test_the_confirmation_names_the_item_and_asks_for_a_reason(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    as_role(client, "operator")

    response = client.get(url(item))

    assert response.status_code == 200
    html = response.content.decode()
    assert f"<code data-work-id>{item.id}</code>" in html
    assert f"<code data-data-id>{item.data.id}</code>" in html
    assert "data-state>active</span>" in html
    assert '<textarea id="stop-reason" name="reason" rows="3" maxlength="1000" required autofocus>' in html
    assert 'name="force"' not in html
    assert state_of(upstream, item) == "active"


def test_an_operator_stops_gracefully(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    as_role(client, "operator")
    upstream.reset_requests()

    response = client.post(url(item), {"reason": "worker wedged"})

    assert response.status_code == 302
    assert response["Location"] == f"/environments/{env['id']}/work/{item.id}/"
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        f"Stop requested for {item.id}: it is now stopping."
    ]
    # Read fresh first, then stopped.
    assert upstream.requests()["by_route"] == {"retrieve": 1, "stop": 1}
    assert state_of(upstream, item) == "stopping"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.username, entry.environment_id, entry.work_id) == (
        "stop",
        "succeeded",
        "operator",
        env["id"],
        item.id,
    )
    assert entry.sent == {"force": False}
    assert entry.reason == "worker wedged"
    assert entry.upstream_status == 200 and entry.request_id
    # The item page says what happened and shows the entry in its trail.
    page = client.get(response["Location"]).content.decode()
    assert f"Stop requested for {item.id}: it is now stopping." in page
    assert f'data-audit-entry="{entry.sequence}" data-action="stop" data-outcome="succeeded"' in page


def test_a_reason_is_required(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    as_role(client, "operator")
    upstream.reset_requests()

    response = client.post(url(item), {"reason": "   "})

    assert response.status_code == 400
    assert "Say why: the reason goes into the audit log." in response.content.decode()
    assert "stop" not in upstream.requests()["by_route"]
    assert state_of(upstream, item) == "active"
    assert not AuditEntry.objects.exists()


def test_a_reason_longer_than_the_audit_log_keeps_is_refused(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    as_role(client, "operator")
    upstream.reset_requests()

    response = client.post(url(item), {"reason": "x" * 1001})

    assert response.status_code == 400
    assert "The reason is 1001 characters long (at most 1000)." in response.content.decode()
    assert "stop" not in upstream.requests()["by_route"]
    assert state_of(upstream, item) == "active"
    assert not AuditEntry.objects.exists()


def test_an_operator_cannot_force_stop(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    as_role(client, "operator")
    upstream.reset_requests()

    assert client.get(force_url(item)).status_code == 403
    response = client.post(force_url(item), {"reason": "now"})

    assert response.status_code == 403
    assert upstream.requests()["total"] == 0
    assert state_of(upstream, item) == "active"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.username) == ("force_stop", "denied", "operator")
    assert entry.reason == "now"
    assert entry.error == "Needs the admin role."


def test_an_admin_force_stops(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    as_role(client, "admin")

    page = client.get(force_url(item))
    assert page.status_code == 200
    assert f'action="{force_url(item)}"' in page.content.decode()
    response = client.post(force_url(item), {"reason": "runaway"})

    assert response.status_code == 302
    assert state_of(upstream, item) == "stopped"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.sent) == ("force_stop", "succeeded", {"force": True})


def test_already_stopped_is_a_notice_not_an_error(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    with worker_client(upstream) as c:
        c.beta.environments.work.stop(item.id, environment_id=env["id"], force=True)
    as_role(client, "operator")
    upstream.reset_requests()

    response = client.post(url(item), {"reason": "again"})

    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        f"{item.id} had already stopped: nothing to do."
    ]
    assert upstream.requests()["by_route"] == {"retrieve": 1, "stop": 1}  # a 409 is not retried
    entry = AuditEntry.objects.get()
    assert (entry.outcome, entry.upstream_status, entry.error) == ("succeeded", 409, "already stopped")
    assert entry.already_stopped


def test_the_confirmation_of_a_stopped_item_says_so(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    with worker_client(upstream) as c:
        c.beta.environments.work.stop(item.id, environment_id=env["id"], force=True)
    as_role(client, "operator")

    html = client.get(url(item)).content.decode()

    assert "has already stopped: there is nothing to stop." in html
    assert "data-stop-form" not in html


@pytest.mark.parametrize(
    ("fault", "kind", "title"),
    [
        ({"status": 500}, "server_error", "The Work API had an internal error"),
        ({"status": 529}, "overloaded", "The Work API is overloaded"),
        ({"status": 429, "retry_after": 7}, "rate_limited", "The Work API is rate limiting the dashboard"),
        (
            {"status": 200, "body": "{not json", "content_type": "application/json"},
            "malformed",
            "The Work API sent an answer that could not be understood",
        ),
    ],
)
def test_upstream_failures_show_a_banner_never_a_server_error(client, upstream, fault, kind, title):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    as_role(client, "operator")
    upstream.set_fault(route="stop", **fault)

    response = client.post(url(item), {"reason": "wedged"})

    assert response.status_code == 502
    html = response.content.decode()
    assert f'data-failure-kind="{kind}"' in html
    assert title in html
    assert "Traceback" not in html and upstream.api_key not in html
    assert "wedged</textarea>" in html  # the reason is kept for another try
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome) == ("stop", "failed")
    assert entry.error.startswith(kind + ": ")
    if fault["status"] != 200:
        assert entry.upstream_status == fault["status"]
        assert entry.request_id and f"request-id <code>{entry.request_id}</code>" in html
    if kind == "rate_limited":
        assert "the API asked to wait 7 s" in html


def test_a_refused_connection_is_a_banner(client, upstream, settings):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    as_role(client, "operator")
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:9"  # nothing listens on the discard port

    response = client.post(url(item), {"reason": "wedged"})

    assert response.status_code == 502
    assert 'data-failure-kind="connection"' in response.content.decode()
    entry = AuditEntry.objects.get()
    assert (entry.outcome, entry.upstream_status) == ("failed", None)


def test_a_timeout_is_a_banner(client, upstream, settings):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    as_role(client, "operator")
    settings.UPSTREAM_TIMEOUT_SECONDS = 0.3
    upstream.set_fault(route="stop", latency_ms=2000, count=1)

    response = client.post(url(item), {"reason": "wedged"})

    assert response.status_code == 502
    assert 'data-failure-kind="timeout"' in response.content.decode()
    assert AuditEntry.objects.get().error.startswith("timeout: ")


def test_an_operator_cannot_end_a_stopping_item_with_a_second_stop(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, state="stopping")
    as_role(client, "operator")

    page = client.get(f"/environments/{env['id']}/work/{item.id}/").content.decode()
    assert 'data-action="stop"' not in page and "only an admin can end it at once" in page
    response = client.post(url(item), {"reason": "again"})

    assert response.status_code == 403
    assert state_of(upstream, item) == "stopping"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome) == ("force_stop", "denied")


def test_an_admins_second_stop_of_a_stopping_item_is_a_force_stop(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, state="stopping")
    as_role(client, "admin")

    confirm = client.get(url(item)).content.decode()
    # Confirmed at the graceful address (the item's state makes it a force-stop there, for admins only).
    assert "data-already-stopping" in confirm and f'action="{url(item)}"' in confirm
    response = client.post(url(item), {"reason": "worker gone"})

    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        f"Force-stopped {item.id}: it is now stopped."
    ]
    assert state_of(upstream, item) == "stopped"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.sent) == ("force_stop", "succeeded", {"force": True})


def test_a_graceful_stop_on_a_dead_worker_stays_stuck_and_offers_force(client, upstream, settings):
    from pages_support import fill_index

    settings.STUCK_HEARTBEAT_SECONDS = 0
    settings.STUCK_STOPPING_SECONDS = 3600
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, state="stopping")
    fill_index(upstream, env["id"], key)
    as_role(client, "admin")

    stuck = client.get("/stuck/").content.decode()
    assert f'data-work-id="{item.id}"' in stuck
    assert "Graceful stop cannot complete: no heartbeat for" in stuck
    page = client.get(f"/environments/{env['id']}/work/{item.id}/").content.decode()
    assert 'data-lease-status="stuck"' in page
    assert "the worker is gone" in page and "Threshold (heartbeat)" in page
    assert 'data-action="force_stop"' in page
    bulk = client.get(f"/environments/{env['id']}/bulk/", {"selection": "stuck"}).content.decode()
    assert item.id in bulk and "Graceful stop cannot complete" in bulk


def test_a_force_sent_to_the_graceful_address_is_refused_and_nothing_is_sent(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    as_role(client, "admin")
    upstream.reset_requests()

    response = client.post(url(item), {"reason": "now", "force": "1"})

    assert response.status_code == 400
    assert "Force-stop has its own address" in response.content.decode()
    assert force_url(item) in response.content.decode()
    assert upstream.requests()["total"] == 0
    assert state_of(upstream, item) == "active"


def test_the_breadcrumbs_name_the_environment_as_the_index_knows_it(client, upstream):
    from dashboard.index.models import IndexedEnvironment

    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    as_role(client, "operator")
    crumb = f'<a href="/environments/{env["id"]}/" data-breadcrumb-environment>'

    assert crumb + f"{env['id']}</a>" in client.get(url(item)).content.decode()  # not listed yet: the id
    IndexedEnvironment.objects.create(environment_id=env["id"])
    IndexedEnvironment.remember_names([{"id": env["id"], "name": "East <payments>"}])
    assert crumb + "East &lt;payments&gt;</a>" in client.get(url(item)).content.decode()
    metadata = client.get(f"/environments/{env['id']}/work/{item.id}/metadata/").content.decode()
    assert crumb + "East &lt;payments&gt;</a>" in metadata
