"""Bulk stops chosen on the stuck page across environments, against the emulator over real HTTP: the preview names
each item's environment, operators stop gracefully only, force needs the typed confirmation, every item is stopped
in its own environment with its own audit entry, and the bulk history lists it for any role."""

from __future__ import annotations

import html as html_lib
import re

import pytest
from pages_support import environment, fill_index, make_user, start_work, worker_client

from dashboard import actions
from dashboard.models import AuditEntry, BulkItem, BulkOperation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stuck_now(settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0  # every active item is stuck at once


def states(emulator, env_id, ids):
    with worker_client(emulator) as c:
        return [c.beta.environments.work.retrieve(work_id, environment_id=env_id).state for work_id in ids]


def hidden(page: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', page)
    assert match, f"no hidden {name}"
    return html_lib.unescape(match.group(1))


def two_environments(upstream):
    east, east_key = environment(upstream, "east")
    west, west_key = environment(upstream, "west")
    a = start_work(upstream, east["id"], east_key).id
    b = start_work(upstream, west["id"], west_key).id
    fill_index(upstream, east["id"], east_key)
    fill_index(upstream, west["id"], west_key)
    return east, west, a, b


def test_an_admin_force_stops_stuck_items_of_two_environments_in_one_operation(client, upstream, stuck_now):
    east, west, a, b = two_environments(upstream)
    client.force_login(make_user("admin"))
    stuck_page = client.get("/stuck/").content.decode()
    assert f'value="{east["id"]}:{a}"' in stuck_page and f'value="{west["id"]}:{b}"' in stuck_page

    confirm = client.post("/bulk/stuck/", {"items": [f"{east['id']}:{a}", f"{west['id']}:{b}"]})

    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert 'data-count="2">2 work items will be stopped' in page
    assert "In 2 environments: east, west" in page
    plan = hidden(page, "plan")
    wrong = client.post(
        "/bulk/stuck/start/", {"plan": plan, "mode": "force_stop", "reason": "r", "confirm": "x"}
    )
    assert wrong.status_code == 400 and "Type FORCE to confirm a force-stop." in wrong.content.decode()
    assert not BulkOperation.objects.exists()

    response = client.post(
        "/bulk/stuck/start/", {"plan": plan, "mode": "force_stop", "reason": "incident 7", "confirm": "FORCE"}
    )

    operation = BulkOperation.objects.get()
    assert response["Location"] == f"/bulk/{operation.pk}/"
    assert actions.wait_for_bulk(operation.pk, timeout=60)
    assert states(upstream, east["id"], [a]) == ["stopped"]
    assert states(upstream, west["id"], [b]) == ["stopped"]
    assert sorted(operation.items.values_list("environment_id", "status")) == sorted(
        [(east["id"], BulkItem.Status.STOPPED), (west["id"], BulkItem.Status.STOPPED)]
    )
    entries = AuditEntry.objects.filter(action="force_stop", via="bulk")
    assert sorted(entries.values_list("environment_id", "work_id")) == sorted(
        [(east["id"], a), (west["id"], b)]
    )
    progress = client.get(f"/bulk/{operation.pk}/").content.decode()
    assert f'href="/environments/{west["id"]}/work/{b}/"' in progress
    assert "Reload" not in progress  # finished: nothing left to follow


def test_operators_stop_across_environments_gracefully_only(client, upstream, stuck_now):
    east, west, a, b = two_environments(upstream)
    client.force_login(make_user("operator"))
    stuck_page = client.get("/stuck/").content.decode()
    assert "Stop selected…" in stuck_page and "force-stop selected" not in stuck_page
    page = client.post("/bulk/stuck/", {"items": [f"{east['id']}:{a}", f"{west['id']}:{b}"]}).content.decode()
    assert 'data-bulk-mode="force_stop"' not in page
    plan = hidden(page, "plan")

    refused = client.post(
        "/bulk/stuck/start/", {"plan": plan, "mode": "force_stop", "reason": "r", "confirm": "FORCE"}
    )
    assert refused.status_code == 403
    no_reason = client.post("/bulk/stuck/start/", {"plan": plan, "mode": "stop", "reason": " "})
    assert no_reason.status_code == 400
    assert not BulkOperation.objects.exists()

    client.post("/bulk/stuck/start/", {"plan": plan, "mode": "stop", "reason": "draining"})

    operation = BulkOperation.objects.get()
    assert not operation.force and operation.across_environments
    assert actions.wait_for_bulk(operation.pk, timeout=60)
    assert states(upstream, east["id"], [a]) == ["stopping"]
    assert states(upstream, west["id"], [b]) == ["stopping"]


def test_the_cross_environment_selection_is_checked_and_capped(client, upstream, settings):
    settings.BULK_MAX_ITEMS = 2
    client.force_login(make_user("operator"))
    items = [f"env_a:work_{n}" for n in range(3)]
    over = client.post("/bulk/stuck/", {"items": items})
    assert (
        over.status_code == 400
        and "3 items are selected; a bulk stop takes at most 2." in over.content.decode()
    )
    bad = client.post("/bulk/stuck/", {"items": ["env_a/../x:work_1", "nonsense"]})
    assert bad.status_code == 400
    assert "2 selected value(s) are not work items" in bad.content.decode()
    assert "Select at least one item." in bad.content.decode()


def test_viewers_read_the_bulk_history_but_start_nothing(client, upstream, stuck_now, settings):
    east, west, a, b = two_environments(upstream)
    admin = make_user("admin")
    client.force_login(admin)
    page = client.post("/bulk/stuck/", {"items": [f"{east['id']}:{a}", f"{west['id']}:{b}"]}).content.decode()
    client.post("/bulk/stuck/start/", {"plan": hidden(page, "plan"), "mode": "stop", "reason": "night shift"})
    across = BulkOperation.objects.get()
    assert actions.wait_for_bulk(across.pk, timeout=60)

    client.force_login(make_user("viewer"))
    assert client.post("/bulk/stuck/", {"items": [f"{east['id']}:{a}"]}).status_code == 403
    history = client.get("/bulk/").content.decode()

    row = re.search(rf'<tr data-bulk-operation="{across.pk}">.*?</tr>', history, re.S)
    assert row, history
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(0)))
    assert "admin" in text and "night shift" in text and "2 environments" in text
    assert "2: 0 stopped · 2 stopping · 0 already stopped · 0 failed" in text
    assert "finished" in text
    assert f'href="/bulk/{across.pk}/"' in row.group(0)
    assert client.get(f"/bulk/{across.pk}/").status_code == 200


def test_the_bulk_history_pages_through_older_operations(client, monkeypatch):
    from dashboard import views

    monkeypatch.setattr(views, "BULK_HISTORY_PAGE_SIZE", 2)
    for n in range(3):
        BulkOperation.objects.create(
            environment_id="env_a", reason=f"reason {n}", selection="selected", username="u"
        )
    client.force_login(make_user("viewer"))
    first = client.get("/bulk/").content.decode()
    assert first.count("data-bulk-operation=") == 2 and 'rel="next"' in first
    second = client.get("/bulk/?page=2").content.decode()
    assert second.count("data-bulk-operation=") == 1 and "reason 0" in second
