"""The overview page against the emulator over real HTTP: a tile per self-hosted environment with its queue figures,
active and stuck counts (from the work index) and a headline that adds them up, starvation, what happens without a
key, under upstream faults, and with hostile names."""

from __future__ import annotations

import re

import pytest
from pages_support import environment, fill_index, make_user, start_work

pytestmark = pytest.mark.django_db


def tile(html: str, env_id: str) -> str:
    match = re.search(
        rf'<article class="tile[^"]*" data-environment-id="{env_id}"[^>]*>(.*?)</article>', html, re.S
    )
    assert match, f"no tile for {env_id}"
    return match.group(1)


def figure(tile_html: str, name: str) -> str:
    match = re.search(rf'data-figure="{name}"[^>]*>(.*?)</dd>', tile_html, re.S)
    assert match, f"no figure {name}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def test_it_requires_login(client, upstream):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert upstream.requests()["total"] == 0


def test_it_refuses_a_user_without_a_role(client, upstream):
    client.force_login(make_user("none"))
    assert client.get("/").status_code == 403
    assert upstream.requests()["total"] == 0


def test_it_shows_a_tile_per_self_hosted_environment_with_its_figures(client, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0  # every active item with a heartbeat is "stuck" at once
    prod, prod_key = environment(upstream, "prod-east")
    start_work(upstream, prod["id"], prod_key, state="active")
    start_work(upstream, prod["id"], prod_key, state="pending")
    upstream.enqueue(prod["id"])
    upstream.enqueue(prod["id"])
    cloud, _ = upstream.create_environment("cloud-one", config={"type": "cloud"})
    fill_index(upstream, prod["id"], prod_key)
    client.force_login(make_user("viewer"))

    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "prod-east" in html
    assert cloud["id"] not in html  # cloud environments have no work queue
    prod_tile = tile(html, prod["id"])
    assert figure(prod_tile, "depth") == "2"
    assert figure(prod_tile, "pending") == "1"
    assert figure(prod_tile, "active") == "1"
    assert figure(prod_tile, "stuck") == "1"
    assert figure(prod_tile, "workers") == "1"  # test-worker polled just now
    assert "data-starving" not in prod_tile
    assert re.match(r"\d+ seconds?", figure(prod_tile, "oldest"))


def test_it_warns_of_starvation_when_work_waits_and_no_worker_polls(client, upstream):
    env, _ = environment(upstream, "lonely")
    upstream.enqueue(env["id"])
    client.force_login(make_user("viewer"))

    html = client.get("/").content.decode()

    env_tile = tile(html, env["id"])
    assert "data-starving" in env_tile
    assert "1 item waiting and no worker polling" in env_tile
    assert figure(env_tile, "workers") == "0"


def test_it_says_when_an_environment_has_no_key(client, upstream):
    env, _ = environment(upstream, "keyless", with_key=False)
    upstream.enqueue(env["id"])
    client.force_login(make_user("viewer"))

    html = client.get("/").content.decode()

    env_tile = tile(html, env["id"])
    assert "No environment key" in env_tile
    assert figure(env_tile, "depth") == "1"  # stats need only the API key
    assert figure(env_tile, "active") == "—"
    assert upstream.requests()["by_route"].get("list", 0) == 0


def test_it_calls_upstream_once_per_figure_not_per_item(client, upstream):
    env, key = environment(upstream, "busy")
    for _ in range(5):
        upstream.enqueue(env["id"])
    fill_index(upstream, env["id"], key)
    client.force_login(make_user("viewer"))
    upstream.reset_requests()

    client.get("/")

    by_route = upstream.requests()["by_route"]
    assert by_route.get("stats") == 1
    assert by_route.get("list", 0) == 0  # the counts are the work index's
    assert by_route.get("retrieve", 0) == 0


def test_the_headline_adds_up_the_tiles_and_says_how_old_they_are(client, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0
    first, first_key = environment(upstream, "alpha")
    second, second_key = environment(upstream, "beta")
    start_work(upstream, first["id"], first_key, state="active")
    start_work(upstream, second["id"], second_key, state="active")
    start_work(upstream, second["id"], second_key, state="active")
    fill_index(upstream, first["id"], first_key)
    fill_index(upstream, second["id"], second_key)
    client.force_login(make_user("viewer"))

    html = client.get("/").content.decode()

    assert figure(tile(html, first["id"]), "stuck") == "1"
    assert figure(tile(html, second["id"]), "stuck") == "2"
    assert 'data-headline-stuck="3"' in html
    assert ">3 stuck items</a>" in html
    assert "Rows confirmed with the Work API within" in html


def test_a_buried_stuck_item_counts_on_its_tile(client, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 60
    env, key = environment(upstream, "buried")
    upstream.bulk_create(
        env["id"],
        {"count": 1, "state": "active", "age_seconds": 3600, "heartbeat_age_seconds": 3000},
        {"count": 500, "state": "stopped", "age_seconds": 1800},
    )
    fill_index(upstream, env["id"], key)
    client.force_login(make_user("viewer"))

    env_tile = tile(client.get("/").content.decode(), env["id"])

    assert figure(env_tile, "stuck") == "1"
    assert "Counted among the newest" not in env_tile


def test_it_shows_a_banner_when_the_environments_list_fails(client, upstream):
    environment(upstream, "anything")
    upstream.set_fault(route="environments.list", status=503)
    client.force_login(make_user("viewer"))

    response = client.get("/")

    assert response.status_code == 502
    html = response.content.decode()
    assert 'data-failure-kind="unavailable"' in html
    assert "HTTP 503" in html
    assert re.search(r"request-id <code>req_\w+</code>", html)
    assert "Traceback" not in html


def test_a_failing_stats_call_breaks_only_its_figures(client, upstream):
    env, key = environment(upstream, "flaky")
    start_work(upstream, env["id"], key, state="active")
    fill_index(upstream, env["id"], key)
    upstream.set_fault(route="stats", status=529)
    client.force_login(make_user("viewer"))

    response = client.get("/")

    assert response.status_code == 200
    env_tile = tile(response.content.decode(), env["id"])
    assert 'data-failure-kind="overloaded"' in env_tile
    assert figure(env_tile, "depth") == "—"
    assert figure(env_tile, "active") == "1"


def test_a_timeout_is_named_as_such(client, upstream, settings):
    settings.UPSTREAM_TIMEOUT_SECONDS = 0.3
    environment(upstream, "slow")
    upstream.set_fault(route="environments.list", latency_ms=2000)
    client.force_login(make_user("viewer"))

    response = client.get("/")

    assert response.status_code == 502
    assert 'data-failure-kind="timeout"' in response.content.decode()


def test_a_malformed_answer_is_named_as_such(client, upstream):
    environment(upstream, "garbled")
    upstream.set_fault(
        route="environments.list", status=200, body="{not json", content_type="application/json"
    )
    client.force_login(make_user("viewer"))

    response = client.get("/")

    assert response.status_code == 502
    assert 'data-failure-kind="malformed"' in response.content.decode()


def test_a_refused_connection_is_named_as_such(client, upstream, settings):
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    client.force_login(make_user("viewer"))

    response = client.get("/")

    assert response.status_code == 502
    assert 'data-failure-kind="connection"' in response.content.decode()


def test_hostile_environment_names_render_inert(client, upstream):
    env, _ = environment(upstream, '<script>alert("x")</script><img src=x onerror=alert(1)>')
    client.force_login(make_user("viewer"))

    html = client.get("/").content.decode()

    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_the_tiles_region_alone_for_htmx(client, upstream):
    env, _ = environment(upstream, "partial")
    client.force_login(make_user("viewer"))

    response = client.get("/", headers={"HX-Request": "true", "HX-Target": "tiles"})

    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="tiles"')
    assert "<html" not in html
    assert env["id"] in html
    assert "HX-Target" in response["Vary"]


def test_the_layout_carries_label_search_and_csrf_header(client, upstream, settings):
    settings.DASHBOARD_LABEL = "production-eu"
    user = make_user("admin")
    client.force_login(user)

    html = client.get("/").content.decode()

    assert 'class="deployment-label is-production"' in html
    assert "production-eu" in html
    assert '<meta name="robots" content="noindex, nofollow">' in html
    assert 'action="/search"' in html
    assert re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"[A-Za-z0-9]+\"\}'", html)
    assert '<span class="role">admin</span>' in html
    assert "<script>" not in html and " onclick=" not in html  # no inline script or handler (CSP)
