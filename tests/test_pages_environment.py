"""The environment page against the emulator over real HTTP: paging through the upstream cursors, page size bounds,
state and stuck filters, finding by work id, session id and metadata, ids in the URL, failures and hostile metadata."""

from __future__ import annotations

import re

import pytest
from pages_support import environment, make_user, start_work, upstream  # noqa: F401

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

    response = viewer.get(f"/environments/{env['id']}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert rows(html) == [second["id"], first.id]
    for heading in (
        "Work id",
        "Data",
        "State",
        "Created",
        "Acknowledged",
        "Started",
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


def test_it_pages_through_the_upstream_cursor(viewer, upstream):
    env, _ = environment(upstream, "deep")
    created = [upstream.enqueue(env["id"])["id"] for _ in range(12)]
    upstream.reset_requests()

    first = viewer.get(f"/environments/{env['id']}/?limit=10").content.decode()

    assert rows(first) == created[::-1][:10]
    next_link = re.search(r'<a href="([^"]+)" hx-get="[^"]+" [^>]*rel="next">Next</a>', first)
    assert next_link
    second = viewer.get(next_link.group(1).replace("&amp;", "&")).content.decode()
    assert rows(second) == created[::-1][10:]
    assert 'rel="next"' not in second
    assert ">Newest</a>" in second
    assert upstream.requests()["by_route"]["list"] == 2


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
        ("page=a%20b", "The page cursor is not one this dashboard produced"),
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

    html = viewer.get(f"/environments/{env['id']}/?state=active").content.decode()

    assert rows(html) == [active]
    assert queued not in rows(html)
    assert "Filtered 2 work items" in html


def test_it_filters_stuck_items_and_says_why(viewer, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0
    env, key = environment(upstream, "stuckish")
    stuck = start_work(upstream, env["id"], key, state="active").id
    upstream.enqueue(env["id"])

    html = viewer.get(f"/environments/{env['id']}/?stuck=1").content.decode()

    assert rows(html) == [stuck]
    assert '<tr class="is-stuck"' in html
    assert "No heartbeat for" in html


def test_it_finds_by_work_id_directly(viewer, upstream):
    env, _ = environment(upstream, "findme")
    wanted = upstream.enqueue(env["id"])["id"]
    upstream.enqueue(env["id"])
    upstream.reset_requests()

    html = viewer.get(f"/environments/{env['id']}/?q={wanted}").content.decode()

    assert rows(html) == [wanted]
    assert "Looked up the work id" in html
    by_route = upstream.requests()["by_route"]
    assert by_route.get("retrieve") == 1
    assert by_route.get("list", 0) == 0


def test_it_finds_by_session_id_and_by_metadata(viewer, upstream):
    env, key = environment(upstream, "finder")
    other = start_work(upstream, env["id"], key, state="active", metadata={"ticket": "OPS-8"})
    tagged = upstream.enqueue(env["id"], metadata={"ticket": "OPS-7"})["id"]

    by_meta = viewer.get(f"/environments/{env['id']}/?q=ticket%3DOPS-7").content.decode()
    by_session = viewer.get(f"/environments/{env['id']}/?q={other.data.id}").content.decode()

    assert rows(by_meta) == [tagged]
    assert "searched 2 work items" in by_meta
    assert rows(by_session) == [other.id]


def test_finding_reads_at_most_the_scan_limit_and_says_so(viewer, upstream, monkeypatch):
    from dashboard import views

    monkeypatch.setattr(views, "SCAN_LIMIT", 4)
    monkeypatch.setattr(views, "SCAN_PAGE_SIZE", 2)
    env, _ = environment(upstream, "huge")
    oldest = upstream.enqueue(env["id"], metadata={"needle": "yes"})["id"]
    for _ in range(6):
        upstream.enqueue(env["id"])

    html = viewer.get(f"/environments/{env['id']}/?q=needle%3Dyes").content.decode()

    assert rows(html) == []
    assert "searched 4 work items" in html
    assert "older items were not searched" in html
    next_link = re.search(r'<a href="([^"]+)" hx-get="[^"]+" [^>]*rel="next">Next</a>', html)
    assert next_link
    carried_on = viewer.get(next_link.group(1).replace("&amp;", "&")).content.decode()
    assert rows(carried_on) == [oldest]


def test_without_a_key_it_says_so_and_still_finds_by_work_id(viewer, upstream):
    env, _ = environment(upstream, "nokey", with_key=False)
    item = upstream.enqueue(env["id"])["id"]

    page = viewer.get(f"/environments/{env['id']}/")
    found = viewer.get(f"/environments/{env['id']}/?q={item}")

    assert page.status_code == 200
    assert "No environment key for this environment" in page.content.decode()
    assert rows(found.content.decode()) == [item]


def test_a_failing_list_shows_the_failure_with_its_request_id(viewer, upstream):
    env, _ = environment(upstream, "broken")
    upstream.set_fault(route="list", status=429, retry_after=7)

    response = viewer.get(f"/environments/{env['id']}/")

    assert response.status_code == 502
    html = response.content.decode()
    assert 'data-failure-kind="rate_limited"' in html
    assert "the API asked to wait 7 s" in html
    assert re.search(r"request-id <code>req_\w+</code>", html)
    assert "No work items could be read." in html


def test_the_work_list_region_alone_for_htmx(viewer, upstream):
    env, _ = environment(upstream, "partial")
    item = upstream.enqueue(env["id"])["id"]

    response = viewer.get(
        f"/environments/{env['id']}/", headers={"HX-Request": "true", "HX-Target": "work-list"}
    )

    html = response.content.decode()
    assert html.lstrip().startswith('<section id="work-list"')
    assert rows(html) == [item]


def test_hostile_metadata_renders_inert(viewer, upstream):
    env, _ = environment(upstream, "hostile")
    upstream.enqueue(
        env["id"], metadata={"<b>k</b>": "<script>alert(1)</script>", "x": '"><img src=x onerror=alert(1)>'}
    )

    html = viewer.get(f"/environments/{env['id']}/").content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;k&lt;/b&gt;" in html


def test_only_admins_get_the_bulk_form(client, upstream):
    env, _ = environment(upstream, "bulk")
    upstream.enqueue(env["id"])

    client.force_login(make_user("operator"))
    operator_html = client.get(f"/environments/{env['id']}/").content.decode()
    client.force_login(make_user("admin"))
    admin_html = client.get(f"/environments/{env['id']}/").content.decode()

    assert 'data-select-group="work"' not in operator_html
    assert 'id="bulk-form"' not in operator_html
    assert 'data-select-group="work"' in admin_html
    assert 'id="bulk-form"' in admin_html


def test_a_bad_parameter_asked_for_by_htmx_answers_the_region_only(viewer, upstream):
    env, _ = environment(upstream, "partial")

    response = viewer.get(
        f"/environments/{env['id']}/?limit=7", headers={"HX-Request": "true", "HX-Target": "work-list"}
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="work-list"')
    assert "Page size must be from 10 to 100; got 7." in html
