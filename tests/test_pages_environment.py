"""The environment page: rows from the work index (filled from the emulator over real HTTP), paging both ways with a
count, page size bounds, state and stuck filters, finding by work id, session id, metadata and free text, an item
past the index's retention read directly, ids in the URL, freshness, failures and hostile metadata."""

from __future__ import annotations

import re

import pytest
from pages_support import environment, fill_index, make_user, start_work

pytestmark = pytest.mark.django_db


def rows(html: str) -> list[str]:
    return re.findall(r'<tr(?: class="is-stuck")? data-work-id="(work_[\w-]+)">', html)


@pytest.fixture
def viewer(client):
    client.force_login(make_user("viewer"))
    return client


def test_it_lists_work_newest_first_with_every_column(viewer, upstream):
    env, key = environment(upstream, "east")
    first = start_work(upstream, env["id"], key, state="active", metadata={"owner": "dana"})
    second = upstream.enqueue(env["id"], metadata={"team": "search"})
    fill_index(upstream, env["id"], key)

    response = viewer.get(f"/environments/{env['id']}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert rows(html) == [second["id"], first.id]
    # When it was acknowledged and started is on the item page: the list fits a 1440 px screen.
    assert "Acknowledged</th>" not in html
    for heading in (
        "Work id",
        "Data",
        "State",
        "Created",
        "Last heartbeat",
        "Stop requested",
        "Metadata",
    ):
        assert f'<th scope="col">{heading}</th>' in html
    assert f'data-copy="{first.id}"' in html
    assert first.data.id in html  # the session id
    assert '<span class="key">owner</span>=dana' in html
    assert re.search(
        r'<time datetime="\d{4}-\d\d-\d\dT[\d:.]+Z" title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC">', html
    )


def link(html: str, rel: str) -> str:
    found = re.search(rf'<a href="([^"]+)" hx-get="[^"]+" [^>]*rel="{rel}">', html)
    assert found, f"no {rel} link"
    return found.group(1).replace("&amp;", "&")


def test_it_pages_both_ways_with_a_count_without_listing_the_upstream(viewer, upstream):
    env, key = environment(upstream, "deep")
    created = [upstream.enqueue(env["id"])["id"] for _ in range(25)]
    fill_index(upstream, env["id"], key)
    upstream.reset_requests()

    first = viewer.get(f"/environments/{env['id']}/?limit=10").content.decode()
    second = viewer.get(link(first, "next")).content.decode()
    third = viewer.get(link(second, "next")).content.decode()
    back = viewer.get(link(third, "prev")).content.decode()

    newest_first = created[::-1]
    assert rows(first) == newest_first[:10]
    assert rows(second) == newest_first[10:20]
    assert rows(third) == newest_first[20:]
    assert 'rel="next"' not in third
    assert rows(back) == newest_first[10:20]
    assert 'rel="prev"' not in first and ">Newest</a>" in second
    assert "10 of 25 shown" in first and "5 of 25 shown" in third
    assert "<span data-count-total>25</span>" in first
    assert upstream.requests()["by_route"].get("list", 0) == 0


def test_a_cursor_it_did_not_hand_out_is_refused(viewer, upstream):
    env, _ = environment(upstream, "forged")

    response = viewer.get(f"/environments/{env['id']}/?older=bm90LWEtY3Vyc29y")

    assert response.status_code == 400
    assert "That page link is not valid any more" in response.content.decode()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=5", "Page size must be from 10 to 100; got 5."),
        ("limit=101", "Page size must be from 10 to 100; got 101."),
        ("limit=99999999999999999999", "Page size must be from 10 to 100; got 99999999999999999999."),
        ("limit=ten", "Page size must be a whole number from 10 to 100; got &#x27;ten&#x27;."),
        (
            "state=running",
            "State must be one of queued, starting, active, stopping, stopped; got &#x27;running&#x27;.",
        ),
        ("stuck=maybe", "The stuck filter must be 1 or 0; got &#x27;maybe&#x27;."),
        ("older=a%20b", "The page cursor is not one this dashboard produced"),
        ("q=" + "x" * 301, "The search text is 301 characters long; at most 300."),
    ],
)
def test_it_refuses_parameters_out_of_bounds_before_any_upstream_call(viewer, upstream, query, message):
    env, _ = environment(upstream, "bounded")
    upstream.reset_requests()

    response = viewer.get(f"/environments/{env['id']}/?{query}")

    assert response.status_code == 400
    assert message in response.content.decode()
    assert upstream.requests()["total"] == 0


def test_an_id_with_a_slash_matches_no_page(viewer, upstream):
    upstream.reset_requests()

    assert viewer.get("/environments/env_a%2Fb/").status_code == 404
    assert upstream.requests()["total"] == 0


@pytest.mark.parametrize("env_id", ["env_", "work_123", "env_" + "a" * 101, "env_%3Cscript%3E"])
def test_a_malformed_environment_id_is_a_clear_404_without_upstream_calls(viewer, upstream, env_id):
    upstream.reset_requests()

    response = viewer.get(f"/environments/{env_id}/")

    assert response.status_code == 404
    assert (
        "is not a valid environment id" in response.content.decode()
        or "is empty" in response.content.decode()
    )
    assert upstream.requests()["total"] == 0


def test_an_unknown_environment_is_a_404(viewer, upstream):
    response = viewer.get("/environments/env_doesnotexist/")

    assert response.status_code == 404
    assert "The Work API has no environment env_doesnotexist." in response.content.decode()


def test_it_filters_by_state(viewer, upstream):
    env, key = environment(upstream, "states")
    active = start_work(upstream, env["id"], key, state="active").id
    queued = upstream.enqueue(env["id"])["id"]
    fill_index(upstream, env["id"], key)

    html = viewer.get(f"/environments/{env['id']}/?state=active").content.decode()

    assert rows(html) == [active]
    assert queued not in rows(html)
    assert "<span data-match-count>1</span> work item matches" in html
    assert '<span data-count-state="queued">1</span> queued' in html


def test_it_filters_stuck_items_and_says_why(viewer, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0
    env, key = environment(upstream, "stuckish")
    stuck = start_work(upstream, env["id"], key, state="active").id
    upstream.enqueue(env["id"])
    fill_index(upstream, env["id"], key)

    html = viewer.get(f"/environments/{env['id']}/?stuck=1").content.decode()

    assert rows(html) == [stuck]
    assert '<tr class="is-stuck"' in html
    assert "No heartbeat for" in html


def test_it_finds_by_work_id_in_the_index(viewer, upstream):
    env, key = environment(upstream, "findme")
    wanted = upstream.enqueue(env["id"])["id"]
    upstream.enqueue(env["id"])
    fill_index(upstream, env["id"], key)
    upstream.reset_requests()

    html = viewer.get(f"/environments/{env['id']}/?q={wanted}").content.decode()

    assert rows(html) == [wanted]
    by_route = upstream.requests()["by_route"]
    assert by_route.get("retrieve", 0) == 0
    assert by_route.get("list", 0) == 0


def test_an_item_the_index_does_not_hold_is_retrieved_directly(viewer, upstream):
    env, key = environment(upstream, "retention")
    fill_index(upstream, env["id"], key)
    gone = upstream.enqueue(env["id"])["id"]  # not in the index, as an item pruned after its retention
    upstream.reset_requests()

    html = viewer.get(f"/environments/{env['id']}/?q={gone}").content.decode()

    assert rows(html) == [gone]
    assert "The work index does not hold" in html
    assert upstream.requests()["by_route"].get("retrieve") == 1


def test_it_finds_by_session_id_metadata_and_free_text(viewer, upstream):
    env, key = environment(upstream, "finder")
    other = start_work(upstream, env["id"], key, state="active", metadata={"ticket": "OPS-8"})
    tagged = upstream.enqueue(env["id"], metadata={"ticket": "OPS-7", "owner": "Dana Scully"})["id"]
    fill_index(upstream, env["id"], key)

    by_meta = viewer.get(f"/environments/{env['id']}/?q=ticket%3DOPS-7").content.decode()
    by_session = viewer.get(f"/environments/{env['id']}/?q={other.data.id}").content.decode()
    by_words = viewer.get(f"/environments/{env['id']}/?q=scully").content.decode()
    by_part = viewer.get(f"/environments/{env['id']}/?q=OPS").content.decode()

    assert rows(by_meta) == [tagged]
    assert "<span data-match-count>1</span> work item matches" in by_meta
    assert rows(by_session) == [other.id]
    assert rows(by_words) == [tagged]
    assert rows(by_part) == [tagged, other.id]


def test_an_old_item_under_many_newer_ones_is_found_and_counted(viewer, upstream, settings):
    settings.STUCK_QUEUED_SECONDS = 3600
    env, key = environment(upstream, "buried")
    created = upstream.bulk_create(
        env["id"],
        {"count": 1, "state": "queued", "age_seconds": 600, "metadata": {"needle": "yes"}},
        {"count": 300, "state": "stopped", "age_seconds": 300},
    )
    oldest = created["ids"][0]
    fill_index(upstream, env["id"], key)

    found = viewer.get(f"/environments/{env['id']}/?q=needle%3Dyes").content.decode()
    queued = viewer.get(f"/environments/{env['id']}/?state=queued").content.decode()

    assert rows(found) == [oldest]
    assert rows(queued) == [oldest]
    assert "<span data-count-total>301</span>" in found


def test_without_a_key_it_says_so_and_still_finds_by_work_id(viewer, upstream):
    env, _ = environment(upstream, "nokey", with_key=False)
    item = upstream.enqueue(env["id"])["id"]

    page = viewer.get(f"/environments/{env['id']}/")
    found = viewer.get(f"/environments/{env['id']}/?q={item}")

    assert page.status_code == 200
    assert "No environment key for this environment" in page.content.decode()
    assert rows(found.content.decode()) == [item]


def test_it_says_how_old_its_rows_are_and_when_the_index_is_filling(viewer, upstream):
    from dashboard.index.models import IndexedEnvironment

    env, key = environment(upstream, "fresh")
    upstream.enqueue(env["id"])
    unread = viewer.get(f"/environments/{env['id']}/").content.decode()
    fill_index(upstream, env["id"], key)
    filled = viewer.get(f"/environments/{env['id']}/").content.decode()
    IndexedEnvironment.objects.filter(environment_id=env["id"]).update(filled=False)
    filling = viewer.get(f"/environments/{env['id']}/").content.decode()

    assert "The work index has not read this environment yet" in unread
    assert "Rows confirmed with the Work API within" in filled
    assert "still filling" not in filled
    assert "The work index is still filling" in filling


def test_a_failing_list_upstream_does_not_empty_the_page(viewer, upstream):
    env, key = environment(upstream, "broken")
    item = upstream.enqueue(env["id"])["id"]
    fill_index(upstream, env["id"], key)
    upstream.set_fault(route="list", status=429, retry_after=7)

    response = viewer.get(f"/environments/{env['id']}/")

    assert response.status_code == 200
    assert rows(response.content.decode()) == [item]


def test_a_slowed_sync_is_shown(viewer, upstream):
    from datetime import timedelta

    from django.utils import timezone

    from dashboard.index.models import IndexedEnvironment

    env, key = environment(upstream, "throttled")
    fill_index(upstream, env["id"], key)
    now = timezone.now()
    IndexedEnvironment.objects.filter(environment_id=env["id"]).update(
        rate_limited_until=now + timedelta(seconds=30), rate_limited_status=429, rate_limited_at=now
    )

    html = viewer.get(f"/environments/{env['id']}/").content.decode()

    assert "The Work API asked the index to slow down (HTTP 429)" in html


def test_the_work_list_region_alone_for_htmx(viewer, upstream):
    env, key = environment(upstream, "partial")
    item = upstream.enqueue(env["id"])["id"]
    fill_index(upstream, env["id"], key)

    response = viewer.get(
        f"/environments/{env['id']}/", headers={"HX-Request": "true", "HX-Target": "work-list"}
    )

    html = response.content.decode()
    assert html.lstrip().startswith('<section id="work-list"')
    assert rows(html) == [item]


def test_hostile_metadata_renders_inert(viewer, upstream):
    env, key = environment(upstream, "hostile")
    upstream.enqueue(
        env["id"], metadata={"<b>k</b>": "<script>alert(1)</script>", "x": '"><img src=x onerror=alert(1)>'}
    )
    fill_index(upstream, env["id"], key)

    html = viewer.get(f"/environments/{env['id']}/").content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;k&lt;/b&gt;" in html


def test_operators_and_admins_get_the_bulk_form_viewers_do_not(client, upstream):
    env, key = environment(upstream, "bulk")
    upstream.enqueue(env["id"])
    fill_index(upstream, env["id"], key)

    pages = {}
    for role in ("viewer", "operator", "admin"):
        client.force_login(make_user(role))
        pages[role] = client.get(f"/environments/{env['id']}/").content.decode()

    assert 'data-select-group="work"' not in pages["viewer"]
    assert 'id="bulk-form"' not in pages["viewer"]
    for role in ("operator", "admin"):
        assert 'data-select-group="work"' in pages[role]
        assert 'id="bulk-form"' in pages[role]


def test_a_bad_parameter_asked_for_by_htmx_answers_the_region_only(viewer, upstream):
    env, _ = environment(upstream, "partial")

    response = viewer.get(
        f"/environments/{env['id']}/?limit=7", headers={"HX-Request": "true", "HX-Target": "work-list"}
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="work-list"')
    assert "Page size must be from 10 to 100; got 7." in html


def test_the_last_heartbeat_is_told_to_the_second_and_counts_up(viewer, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, state="active")
    fill_index(upstream, env["id"], key)

    body = viewer.get(f"/environments/{env['id']}/").content.decode()

    cell = re.search(rf'<td id="row-heartbeat-{item.id}">(.*?)</td>', body, re.S)
    assert cell, "no heartbeat cell"
    # Seconds, not "a minute ago"; the page's script counts it up from the heartbeat's time.
    assert re.search(r'<span data-age-since="\d{4}-[^"]+Z">\d{1,2} s</span> ago', cell.group(1)), cell.group(
        1
    )
