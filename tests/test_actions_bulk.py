"""Bulk stops against the emulator over real HTTP: selected items or every stuck item, the count preview, the typed
confirmation for force, the background run with per-item results, progress polled by htmx (or refreshed without
JavaScript), resuming an interrupted run, the cap, admins only, and the audit entries."""

from __future__ import annotations

import html as html_lib
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from pages_support import environment, fill_index, make_user, start_work, worker_client

from dashboard import actions
from dashboard.models import AuditEntry, BulkItem, BulkOperation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin(client):
    client.force_login(make_user("admin"))
    return client


@pytest.fixture
def stuck_now(settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0  # every active item is stuck at once
    settings.STUCK_QUEUED_SECONDS = 3600
    settings.STUCK_STOPPING_SECONDS = 3600


def states(emulator, env_id, ids):
    with worker_client(emulator) as c:
        return [c.beta.environments.work.retrieve(work_id, environment_id=env_id).state for work_id in ids]


def hidden(page: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', page)
    assert match, f"no hidden {name}"
    return html_lib.unescape(match.group(1))


def run(client, env_id, plan, **fields):
    response = client.post(f"/environments/{env_id}/bulk/start/", {"plan": plan, **fields})
    if response.status_code != 302:
        return response, None
    operation = BulkOperation.objects.get()
    assert response["Location"] == f"/environments/{env_id}/bulk/{operation.pk}/"
    assert actions.wait_for_bulk(operation.pk, timeout=60)
    return response, operation


def test_an_admin_force_stops_every_stuck_item(admin, upstream, stuck_now):
    env, key = environment(upstream, "east")
    stuck = [start_work(upstream, env["id"], key).id for _ in range(3)]
    queued = upstream.enqueue(env["id"])["id"]
    fill_index(upstream, env["id"], key)

    confirm = admin.get(f"/environments/{env['id']}/bulk/?selection=stuck")

    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert 'data-count="3">3 work items will be stopped' in page
    assert sorted(
        re.findall(r"<tr data-bulk-item>\s*<td class=\"id\"><code>(work_[\w-]+)</code>", page)
    ) == sorted(stuck)
    assert queued not in page
    assert 'data-confirm-match="east"' in page
    plan = hidden(page, "plan")
    upstream.reset_requests()

    response, operation = run(admin, env["id"], plan, mode="force_stop", reason="incident 42", confirm="east")

    assert operation is not None and operation.force
    assert states(upstream, env["id"], stuck) == ["stopped"] * 3
    assert states(upstream, env["id"], [queued]) == ["queued"]
    assert upstream.requests()["by_route"]["stop"] == 3
    progress = admin.get(response["Location"])
    assert progress.status_code == 200
    body = progress.content.decode()
    assert 'data-bulk-status="finished"' in body
    assert "<strong data-progress>3 of 3</strong> done" in body
    assert sorted(re.findall(r'data-bulk-item="(work_[\w-]+)" data-result="stopped"', body)) == sorted(stuck)
    assert "hx-trigger" not in body  # finished: no more polling
    assert f'<a href="/environments/{env["id"]}/" data-breadcrumb-environment>{env["id"]}</a>' in body
    entries = list(AuditEntry.objects.order_by("sequence"))
    assert [(e.action, e.outcome, e.via) for e in entries] == [("bulk_force_stop", "succeeded", "page")] + [
        ("force_stop", "succeeded", "bulk")
    ] * 3
    started = entries[0].sent
    assert started is not None and started["count"] == 3 and sorted(started["work_ids"]) == sorted(stuck)
    # The audit log links the start to its progress page.
    assert started["bulk_operation"] == str(operation.pk)
    assert {e.work_id for e in entries[1:]} == set(stuck)
    assert all(e.reason == "incident 42" and e.username == "admin" for e in entries)
    assert all(e.upstream_status == 200 and e.request_id for e in entries[1:])
    assert all(e.sent == {"force": True, "bulk_operation": str(operation.pk)} for e in entries[1:])
    # Each stop's answer is in the work index at once: the stuck page no longer lists them, before any sync.
    assert "<span data-stuck-total>0</span>" in admin.get("/stuck/").content.decode()


def test_force_needs_the_typed_confirmation(admin, upstream, stuck_now):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key).id
    fill_index(upstream, env["id"], key)
    plan = hidden(admin.get(f"/environments/{env['id']}/bulk/?selection=stuck").content.decode(), "plan")
    upstream.reset_requests()

    response, _ = run(admin, env["id"], plan, mode="force_stop", reason="incident", confirm="EAST")

    assert response.status_code == 400
    assert "Type east to confirm a force-stop." in response.content.decode()
    assert upstream.requests()["total"] == 0
    assert not BulkOperation.objects.exists() and not AuditEntry.objects.exists()
    assert states(upstream, env["id"], [item]) == ["active"]


def test_selected_items_stop_gracefully_item_by_item(admin, upstream):
    env, key = environment(upstream, "east")
    active = start_work(upstream, env["id"], key).id
    gone = start_work(upstream, env["id"], key).id
    with worker_client(upstream) as c:
        c.beta.environments.work.stop(gone, environment_id=env["id"], force=True)
    queued = upstream.enqueue(env["id"])["id"]  # last: a worker's poll would take it

    confirm = admin.post(
        f"/environments/{env['id']}/bulk/", {"selection": "selected", "work_ids": [active, queued, gone]}
    )
    assert confirm.status_code == 200
    assert 'data-count="3">3 work items will be stopped' in confirm.content.decode()

    _, operation = run(
        admin, env["id"], hidden(confirm.content.decode(), "plan"), mode="stop", reason="drain"
    )

    assert not operation.force
    results = dict(BulkItem.objects.values_list("work_id", "status"))
    assert results == {active: "stopping", queued: "stopped", gone: "already_stopped"}
    assert states(upstream, env["id"], [active, queued, gone]) == ["stopping", "stopped", "stopped"]
    body = admin.get(f"/environments/{env['id']}/bulk/{operation.pk}/").content.decode()
    assert f'data-bulk-item="{gone}" data-result="already_stopped"' in body
    assert "already stopped" in body
    gone_entry = AuditEntry.objects.get(work_id=gone)
    assert (gone_entry.action, gone_entry.outcome, gone_entry.upstream_status) == ("stop", "succeeded", 409)


def test_failures_are_reported_per_item(admin, upstream):
    env, key = environment(upstream, "east")
    ids = [start_work(upstream, env["id"], key).id for _ in range(2)]
    confirm = admin.post(f"/environments/{env['id']}/bulk/", {"work_ids": ids})
    upstream.set_fault(route="stop", status=503, count=1)

    _, operation = run(
        admin, env["id"], hidden(confirm.content.decode(), "plan"), mode="stop", reason="drain"
    )

    items = list(operation.items.order_by("position"))
    assert [item.status for item in items] == ["failed", "stopping"]
    assert items[0].upstream_status == 503 and items[0].request_id
    assert items[0].detail.startswith("The Work API is unavailable: ")
    failed = AuditEntry.objects.get(work_id=ids[0])
    assert (failed.outcome, failed.upstream_status, failed.request_id) == ("failed", 503, items[0].request_id)


def test_the_progress_fragment_polls_while_running_and_the_page_refreshes_without_javascript(admin, upstream):
    env, _ = environment(upstream, "east")
    user = User.objects.get(username="admin")
    operation = BulkOperation.objects.create(
        environment_id=env["id"], reason="r", selection="selected", created_by=user, username="admin"
    )
    BulkItem.objects.create(operation=operation, position=0, work_id="work_pending1")
    url = f"/environments/{env['id']}/bulk/{operation.pk}/"

    fragment = admin.get(url, headers={"HX-Request": "true"}).content.decode()
    page = admin.get(url).content.decode()

    assert fragment.lstrip().startswith('<section id="bulk-progress"')
    assert f'hx-get="{url}" hx-trigger="every 1s" hx-swap="outerHTML"' in fragment
    assert "<strong data-progress>0 of 1</strong>" in fragment
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page
    assert f'<a href="{url}">Reload</a>' in page
    assert "<html" in page and "<html" not in fragment


def test_an_interrupted_run_is_resumed_by_the_progress_page(admin, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key).id
    operation = _operation(env["id"], [item], stale=True)

    admin.get(f"/environments/{env['id']}/bulk/{operation.pk}/")
    assert actions.wait_for_bulk(operation.pk, timeout=60)

    operation.refresh_from_db()
    assert operation.status == "finished"
    assert operation.items.get().status == "stopped"
    assert states(upstream, env["id"], [item]) == ["stopped"]


def test_the_selection_is_capped(admin, upstream, settings):
    settings.BULK_MAX_ITEMS = 2
    env, _ = environment(upstream, "east")

    response = admin.post(f"/environments/{env['id']}/bulk/", {"work_ids": ["work_a", "work_b", "work_c"]})

    assert response.status_code == 400
    assert "3 items are selected; a bulk stop takes at most 2." in response.content.decode()
    assert 'name="plan"' not in response.content.decode()


def test_every_stuck_item_is_capped_with_a_warning(admin, upstream, settings, stuck_now):
    settings.BULK_MAX_ITEMS = 2
    env, key = environment(upstream, "east")
    for _ in range(3):
        start_work(upstream, env["id"], key)
    fill_index(upstream, env["id"], key)

    page = admin.get(f"/environments/{env['id']}/bulk/?selection=stuck").content.decode()

    assert "3 items are stuck; a bulk stop takes at most 2: these are the first 2." in page
    assert 'data-count="2"' in page


def test_every_stuck_item_is_the_set_the_stuck_page_shows(admin, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 600
    env, key = environment(upstream, "buried")
    abandoned = upstream.bulk_create(
        env["id"],
        {
            "count": 1,
            "state": "active",
            "age_seconds": 7200,
            "heartbeat_age_seconds": 3600,
            "lease_expires_in_seconds": 3600,
        },
    )["ids"][0]
    upstream.bulk_create(env["id"], {"count": 2500, "state": "stopped", "age_seconds": 60})
    fill_index(upstream, env["id"], key)

    stuck_page = admin.get("/stuck/").content.decode()
    confirm = admin.get(f"/environments/{env['id']}/bulk/?selection=stuck").content.decode()

    on_stuck_page = re.findall(r'<tr class="is-stuck" data-work-id="(work_[\w-]+)">', stuck_page)
    in_bulk = re.findall(r"<tr data-bulk-item>\s*<td class=\"id\"><code>(work_[\w-]+)</code>", confirm)
    assert on_stuck_page == in_bulk == [abandoned]


def test_without_an_environment_key_stuck_items_cannot_be_found(admin, upstream):
    env, _ = environment(upstream, "east", with_key=False)

    page = admin.get(f"/environments/{env['id']}/bulk/?selection=stuck").content.decode()

    assert 'data-failure-kind="no_environment_key"' in page
    assert 'name="plan"' not in page


def test_viewers_run_no_bulk_stops(client, upstream, stuck_now):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key).id
    client.force_login(make_user("viewer"))
    upstream.reset_requests()

    assert client.get(f"/environments/{env['id']}/bulk/?selection=stuck").status_code == 403
    response = client.post(
        f"/environments/{env['id']}/bulk/start/", {"plan": "x", "mode": "stop", "reason": "r"}
    )

    assert response.status_code == 403
    assert upstream.requests()["total"] == 0
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.username, entry.environment_id) == (
        "bulk",
        "denied",
        "viewer",
        env["id"],
    )
    assert states(upstream, env["id"], [item]) == ["active"]


def test_operators_stop_in_bulk_gracefully_but_never_force(client, upstream, stuck_now):
    env, key = environment(upstream, "east")
    items = [start_work(upstream, env["id"], key).id for _ in range(2)]
    stopping = start_work(upstream, env["id"], key, state="stopping").id
    client.force_login(make_user("operator"))

    confirm = client.post(f"/environments/{env['id']}/bulk/", {"work_ids": [*items, stopping]})
    html = confirm.content.decode()
    assert confirm.status_code == 200
    assert 'data-bulk-mode="stop"' in html and 'data-bulk-mode="force_stop"' not in html
    assert "needs the admin role" in html
    plan = re.search(r'name="plan" value="([^"]+)"', html).group(1)

    forced = client.post(
        f"/environments/{env['id']}/bulk/start/",
        {"plan": plan, "mode": "force_stop", "confirm": "east", "reason": "r"},
    )
    assert forced.status_code == 403
    assert AuditEntry.objects.get().action == "bulk_force_stop"
    assert states(upstream, env["id"], [*items, stopping]) == ["active", "active", "stopping"]

    started = client.post(f"/environments/{env['id']}/bulk/start/", {"plan": plan, "mode": "stop"})
    assert started.status_code == 400  # the reason is required
    started = client.post(
        f"/environments/{env['id']}/bulk/start/", {"plan": plan, "mode": "stop", "reason": "drain"}
    )
    assert started.status_code == 302
    assert actions.wait_for_bulk(BulkOperation.objects.get().pk, timeout=30)
    # The stopping item is left as it is: a second graceful stop would end it, which is a force-stop.
    assert states(upstream, env["id"], [*items, stopping]) == ["stopping", "stopping", "stopping"]
    progress = client.get(started["Location"]).content.decode()
    assert "Already stopping: left as it is" in progress
    assert sorted(e.action for e in AuditEntry.objects.filter(via="bulk")) == ["stop", "stop", "stop"]


def test_a_tampered_plan_is_refused(admin, upstream):
    env, _ = environment(upstream, "east")

    response = admin.post(
        f"/environments/{env['id']}/bulk/start/", {"plan": "forged", "mode": "stop", "reason": "r"}
    )

    assert response.status_code == 302
    assert response["Location"] == f"/environments/{env['id']}/"
    assert not BulkOperation.objects.exists()


def _operation(env_id: str, work_ids: list[str], *, stale: bool) -> BulkOperation:
    user = User.objects.get(username="admin")
    operation = BulkOperation.objects.create(
        environment_id=env_id, reason="r", force=True, selection="selected", created_by=user, username="admin"
    )
    for position, work_id in enumerate(work_ids):
        BulkItem.objects.create(operation=operation, position=position, work_id=work_id)
    if stale:
        BulkOperation.objects.filter(pk=operation.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    return operation


def test_a_restarting_instance_hands_its_running_operation_over_and_another_finishes_it(admin, upstream):
    env, key = environment(upstream, "east")
    ids = [start_work(upstream, env["id"], key).id for _ in range(4)]
    operation = _operation(env["id"], ids, stale=False)
    upstream.set_fault(route="stop", latency_ms=400)  # each stop takes a while: the shutdown comes mid-run
    actions.start_bulk(operation.pk)
    deadline = timezone.now() + timedelta(seconds=20)
    while not operation.items.exclude(status=BulkItem.Status.PENDING).exists():
        assert timezone.now() < deadline, "the runner did not start"

    handed = actions.hand_over_bulk(timeout=20)  # what an instance's shutdown does

    assert handed == [operation.pk]
    operation.refresh_from_db()
    done = operation.items.exclude(status=BulkItem.Status.PENDING).count()
    assert operation.status == "running" and 1 <= done < len(ids), "it stopped after the item in hand"
    # Free to take at once: another instance's look for interrupted operations (every few seconds) claims it.
    upstream.clear_faults()
    assert actions.resume_interrupted_bulk() == [operation.pk]
    assert actions.resume_interrupted_bulk() == []  # claimed once
    assert actions.wait_for_bulk(operation.pk, timeout=60)
    operation.refresh_from_db()
    assert operation.status == "finished"
    assert sorted(operation.items.values_list("status", flat=True)) == ["stopped"] * len(ids)
    assert states(upstream, env["id"], ids) == ["stopped"] * len(ids)
    # Every item stopped once, with one audit entry each: nothing lost, nothing doubled.
    assert sorted(AuditEntry.objects.filter(action="force_stop").values_list("work_id", flat=True)) == sorted(
        ids
    )


def test_a_running_operation_with_a_live_runner_is_left_alone(admin, upstream):
    env, key = environment(upstream, "east")
    ids = [start_work(upstream, env["id"], key).id]
    operation = _operation(env["id"], ids, stale=False)  # its heartbeat is fresh: someone runs it
    assert actions.resume_interrupted_bulk() == []
    operation.refresh_from_db()
    assert operation.status == "running" and operation.items.get().status == BulkItem.Status.PENDING
