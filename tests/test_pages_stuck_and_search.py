"""The stuck-work page and the header search, read from the work index (filled from the emulator over real HTTP),
with a direct look-up for a work id the index does not hold."""

from __future__ import annotations

import re

import pytest
from pages_support import environment, fill_index, make_user, start_work

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
    calm, calm_key = environment(upstream, "calm")
    keyless, _ = environment(upstream, "keyless", with_key=False)
    stuck_east = start_work(upstream, east["id"], east_key, state="active", metadata={"team": "<b>x</b>"})
    stuck_west = [start_work(upstream, west["id"], west_key, state="starting") for _ in range(2)]
    upstream.enqueue(east["id"])  # queued, recent: not stuck
    upstream.enqueue(calm["id"])
    for env, key in ((east, east_key), (west, west_key), (calm, calm_key)):
        fill_index(upstream, env["id"], key)
    upstream.reset_requests()

    response = viewer.get("/stuck/")

    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(r"<span data-stuck-total>3</span> stuck items", html)
    listed = re.findall(r'<tr class="is-stuck" data-work-id="(work_[\w-]+)">', html)
    assert sorted(listed) == sorted([stuck_east.id, *(item.id for item in stuck_west)])
    counts = dict(
        re.findall(r'data-environment-id="(env_[\w-]+)">.*?<td data-stuck-count>(.*?)</td>', html, re.S)
    )
    assert counts == {east["id"]: "1", west["id"]: "2", calm["id"]: "0", keyless["id"]: "0"}
    assert "no environment key" in html
    assert upstream.requests()["by_route"].get("list", 0) == 0
    assert "Starting for" in html and "without any heartbeat" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html


def test_each_stuck_row_offers_the_actions_of_the_reader_s_role(client, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0
    east, east_key = environment(upstream, "east")
    west, west_key = environment(upstream, "west")
    active = start_work(upstream, east["id"], east_key, state="active")
    stopping = start_work(upstream, west["id"], west_key, state="stopping")
    for env, key in ((east, east_key), (west, west_key)):
        fill_index(upstream, env["id"], key)

    def actions(role):
        client.force_login(make_user(role, f"{role}-reader"))
        html = client.get("/stuck/").content.decode()
        rows = dict(re.findall(r'<tr class="is-stuck" data-work-id="(work_[\w-]+)">(.*?)</tr>', html, re.S))
        return {
            work_id: re.findall(r'href="([^"]+)" data-action="(\w+)"', row) for work_id, row in rows.items()
        }

    stop = f"/environments/{east['id']}/work/{active.id}/stop/"
    stop_stopping = f"/environments/{west['id']}/work/{stopping.id}/stop/"
    assert actions("viewer") == {active.id: [], stopping.id: []}
    # An operator stops gracefully; a stopping item can only be ended by an admin (a second stop is a force-stop).
    assert actions("operator") == {active.id: [(stop, "stop")], stopping.id: []}
    assert actions("admin") == {
        active.id: [(stop, "stop"), (stop.replace("/stop/", "/force-stop/"), "force_stop")],
        stopping.id: [(stop_stopping.replace("/stop/", "/force-stop/"), "force_stop")],
    }


def test_it_says_when_nothing_is_stuck(viewer, upstream):
    env, key = environment(upstream, "fine")
    start_work(upstream, env["id"], key, state="active")

    html = viewer.get("/stuck/").content.decode()

    assert "Nothing is stuck" in html
    assert "<span data-stuck-total>0</span>" in html


def test_an_abandoned_item_under_many_newer_stopped_ones_is_on_the_stuck_page(viewer, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 600
    env, key = environment(upstream, "buried")
    # Claimed, heartbeated once an hour ago and abandoned (its lease runs on): the item really stuck.
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

    html = viewer.get("/stuck/").content.decode()
    stuck_filter = viewer.get(f"/environments/{env['id']}/?stuck=1").content.decode()

    assert re.search(r"<span data-stuck-total>1</span> stuck item", html)
    assert re.findall(r'<tr class="is-stuck" data-work-id="(work_[\w-]+)">', html) == [abandoned]
    assert re.findall(r'<tr class="is-stuck" data-work-id="(work_[\w-]+)">', stuck_filter) == [abandoned]


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
        ("", "Type a work id (work_…), a session id, key=value or words of the metadata."),
        ("sk-ant-api03-secretsecret", "That looks like a credential"),
        ("a b c d e f g h i j k", "A search can have at most 10 terms."),
    ],
)
def test_a_malformed_query_says_so_without_upstream_calls(viewer, upstream, q, message):
    upstream.reset_requests()

    response = viewer.get("/search", {"q": q})

    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert "secretsecret" not in html
    assert upstream.requests()["total"] == 0


def rows(html: str) -> list[str]:
    return re.findall(r'<tr(?: class="is-stuck")? data-work-id="(work_[\w-]+)">', html)


def test_search_finds_sessions_metadata_and_words_in_every_environment(viewer, upstream):
    east, east_key = environment(upstream, "east")
    west, west_key = environment(upstream, "west")
    tagged_east = upstream.enqueue(east["id"], metadata={"ticket": "OPS-7", "owner": "Dana Scully"})["id"]
    other = start_work(upstream, west["id"], west_key, state="active", metadata={"ticket": "OPS-8"})
    tagged_west = upstream.enqueue(west["id"], metadata={"ticket": "OPS-7"})["id"]
    fill_index(upstream, east["id"], east_key)
    fill_index(upstream, west["id"], west_key)
    upstream.reset_requests()

    by_pair = viewer.get("/search", {"q": "ticket=OPS-7"}).content.decode()
    by_session = viewer.get("/search", {"q": other.data.id}).content.decode()
    by_words = viewer.get("/search", {"q": "scully"}).content.decode()
    by_id = viewer.get("/search", {"q": tagged_west})

    assert sorted(rows(by_pair)) == sorted([tagged_east, tagged_west])
    assert "<span data-match-count>2</span>" in by_pair
    assert rows(by_session) == [other.id]
    assert rows(by_words) == [tagged_east]
    assert by_id.status_code == 302
    assert by_id["Location"] == f"/environments/{west['id']}/work/{tagged_west}/"
    assert upstream.requests()["total"] == 0


def test_hostile_search_text_is_searched_and_shown_inert(viewer, upstream):
    response = viewer.get("/search", {"q": "<script>alert(1)</script>"})

    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "No work item matches." in html


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


def test_the_colour_choice_is_remembered_per_person_and_checked(client, upstream):
    from dashboard.models import UserPreference

    user = make_user("viewer")
    client.force_login(user)

    chosen = client.post("/preferences/theme", {"theme": "dark", "next": "/stuck/"})
    refused = client.post("/preferences/theme", {"theme": "purple"})
    elsewhere = client.post("/preferences/theme", {"theme": "light", "next": "https://evil.example/"})

    assert chosen.status_code == 302 and chosen["Location"] == "/stuck/"
    assert (
        refused.status_code == 400
        and refused.content.decode() == "The colours must be one of: auto, light, dark."
    )
    assert elsewhere.status_code == 302 and elsewhere["Location"] == "/"
    assert UserPreference.objects.get(user=user).theme == "light"
    assert '<html lang="en" data-theme="light">' in client.get("/stuck/").content.decode()
