"""The stuck-work page and the work id search against the emulator over real HTTP."""

from __future__ import annotations

import re

import pytest
from pages_support import environment, make_user, start_work, upstream  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(client):
    client.force_login(make_user("viewer"))
    return client


# --- Stuck work --------------------------------------------------------------------------------------------------


def test_it_lists_every_stuck_item_across_environments_with_counts(viewer, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0
    east, east_key = environment(upstream, "east")
    west, west_key = environment(upstream, "west")
    calm, _ = environment(upstream, "calm")
    keyless, _ = environment(upstream, "keyless", with_key=False)
    stuck_east = start_work(upstream, east["id"], east_key, state="active", metadata={"team": "<b>x</b>"})
    stuck_west = [start_work(upstream, west["id"], west_key, state="starting") for _ in range(2)]
    upstream.enqueue(east["id"])  # queued, recent: not stuck
    upstream.enqueue(calm["id"])

    response = viewer.get("/stuck/")

    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(r"<span data-stuck-total>3</span> stuck items", html)
    listed = re.findall(r'<tr class="is-stuck" data-work-id="(work_[\w-]+)">', html)
    assert sorted(listed) == sorted([stuck_east.id, *(item.id for item in stuck_west)])
    counts = dict(
        re.findall(r'data-environment-id="(env_[\w-]+)">.*?<td data-stuck-count>(.*?)</td>', html, re.S)
    )
    assert counts == {east["id"]: "1", west["id"]: "2", calm["id"]: "0", keyless["id"]: "—"}
    assert "no environment key" in html
    assert "Starting for" in html and "without any heartbeat" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html


def test_it_says_when_nothing_is_stuck(viewer, upstream):
    env, key = environment(upstream, "fine")
    start_work(upstream, env["id"], key, state="active")

    html = viewer.get("/stuck/").content.decode()

    assert "Nothing is stuck" in html
    assert "<span data-stuck-total>0</span>" in html


def test_a_failing_environment_shows_its_failure_and_the_rest_still_count(viewer, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0
    env, key = environment(upstream, "east")
    start_work(upstream, env["id"], key, state="active")
    upstream.set_fault(route="list", status=503)

    response = viewer.get("/stuck/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-failure-kind="unavailable"' in html


def test_the_stuck_page_under_a_failing_environments_list(viewer, upstream):
    upstream.set_fault(route="environments", status=401)

    response = viewer.get("/stuck/")

    assert response.status_code == 502
    assert 'data-failure-kind="authentication"' in response.content.decode()


# --- Search ------------------------------------------------------------------------------------------------------


def test_a_work_id_leads_to_its_item_in_whichever_environment_holds_it(viewer, upstream):
    environment(upstream, "east")
    west, _ = environment(upstream, "west", with_key=False)  # finding needs no environment key
    item = upstream.enqueue(west["id"])["id"]

    response = viewer.get(f"/search?q=%20{item}%20")

    assert response.status_code == 302
    assert response["Location"] == f"/environments/{west['id']}/work/{item}/"


def test_the_environment_list_is_remembered_between_searches(viewer, upstream):
    env, _ = environment(upstream, "east")
    item = upstream.enqueue(env["id"])["id"]
    viewer.get(f"/search?q={item}")
    upstream.reset_requests()

    viewer.get(f"/search?q={item}")

    by_route = upstream.requests()["by_route"]
    assert by_route.get("environments.list", 0) == 0
    assert by_route.get("retrieve") == 1


def test_a_new_environment_is_found_even_with_a_remembered_list(viewer, upstream):
    environment(upstream, "east")
    viewer.get("/search?q=work_nothing")
    newer, _ = environment(upstream, "newer")
    item = upstream.enqueue(newer["id"])["id"]

    response = viewer.get(f"/search?q={item}")

    assert response["Location"] == f"/environments/{newer['id']}/work/{item}/"


def test_an_unknown_work_id_says_not_found(viewer, upstream):
    environment(upstream, "east")

    response = viewer.get("/search?q=work_nowhere")

    assert response.status_code == 404
    html = response.content.decode()
    assert "No self-hosted environment holds work_nowhere." in html
    assert 'value="work_nowhere"' in html  # kept in the search box to fix a typo


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("", "Paste a work id (work_…) to go to it."),
        ("hello", "&#x27;hello&#x27; is not a valid work id"),
        ("work_a/b", "is not a valid work id"),
        (
            "<script>alert(1)</script>",
            "&#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27; is not a valid work id",
        ),
        ("sk-ant-api03-secretsecret", "[redacted]"),
    ],
)
def test_a_malformed_query_says_so_without_upstream_calls(viewer, upstream, q, message):
    upstream.reset_requests()

    response = viewer.get("/search", {"q": q})

    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert "<script>alert(1)" not in html
    assert "secretsecret" not in html
    assert upstream.requests()["total"] == 0


def test_an_environment_id_leads_to_the_environment(viewer, upstream):
    response = viewer.get("/search?q=env_abc")

    assert response.status_code == 302
    assert response["Location"] == "/environments/env_abc/"


def test_environments_that_fail_are_named(viewer, upstream):
    environment(upstream, "east")
    upstream.set_fault(route="retrieve", status=503)

    response = viewer.get("/search?q=work_somewhere")

    assert response.status_code == 502
    html = response.content.decode()
    assert "1 did not answer (east)" in html
    assert 'data-failure-kind="unavailable"' in html


def test_search_requires_login(client, upstream):
    response = client.get("/search?q=work_x")

    assert response.status_code == 302
    assert upstream.requests()["total"] == 0


def test_robots_are_kept_out(client):
    response = client.get("/robots.txt")

    assert response.status_code == 200
    assert response.content == b"User-agent: *\nDisallow: /\n"


# --- Time preference ---------------------------------------------------------------------------------------------


def test_the_local_time_switch_is_remembered_per_person(client, upstream):
    user = make_user("viewer")
    client.force_login(user)

    assert 'data-time-mode="relative"' in client.get("/stuck/").content.decode()
    assert client.post("/preferences/time", {"local_time": "1"}).status_code == 204
    assert 'data-time-mode="local"' in client.get("/stuck/").content.decode()
    assert client.post("/preferences/time", {"local_time": "0"}).status_code == 204
    assert 'data-time-mode="relative"' in client.get("/stuck/").content.decode()


def test_the_time_switch_needs_a_csrf_token(upstream):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("viewer"))

    assert client.post("/preferences/time", {"local_time": "1"}).status_code == 403
