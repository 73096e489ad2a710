"""Operations endpoints: ``/metrics`` (who may scrape it, and what it exports after the feed ran) and ``/readyz``
(database, channel layer, upstream)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from live_support import communicator, receive_matching, session_cookie
from pages_support import environment, make_user

from dashboard.live import views as live_views
from dashboard.live.metrics import endpoint_of


@pytest.fixture(autouse=True)
def fresh_readiness():
    live_views._upstream_checked = None
    yield
    live_views._upstream_checked = None


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.django_db
def test_metrics_answer_loopback_only_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 401
    # Through a reverse proxy on the same host every request comes from loopback: that is not enough.
    proxied = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert proxied.status_code == 401


@pytest.mark.django_db
def test_metrics_need_the_bearer_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope", REMOTE_ADDR="203.0.113.9")
    assert wrong.status_code == 401 and wrong["WWW-Authenticate"].startswith("Bearer")
    right = client.get(
        "/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token", REMOTE_ADDR="203.0.113.9"
    )
    assert right.status_code == 200 and right["Content-Type"].startswith("text/plain")


def test_upstream_paths_become_endpoint_names_without_ids():
    assert endpoint_of("GET", "/v1/environments/env_1/work/stats") == "work_stats"
    assert endpoint_of("GET", "/v1/environments/env_1/work") == "list_work"
    assert endpoint_of("GET", "/v1/environments/env_1/work/work_9") == "retrieve_work"
    assert endpoint_of("POST", "/v1/environments/env_1/work/work_9/stop") == "stop_work"
    # Poll is a GET; it must not be counted as a retrieve of a work item called "poll".
    assert endpoint_of("GET", "/v1/environments/env_1/work/poll") == "poll_work"
    assert endpoint_of("GET", "/v1/environments") == "list_environments"
    assert endpoint_of("GET", "/elsewhere") == "other"


@pytest.mark.django_db(transaction=True)
async def test_metrics_export_the_feed_the_upstream_calls_and_open_sockets(live_runtime, upstream, settings):
    settings.METRICS_TOKEN = ""
    env, _ = await sync_to_async(environment)(upstream, "measured")
    await sync_to_async(upstream.enqueue)(env["id"])
    viewer = communicator(
        f"/ws/live/{env['id']}/", cookie=await session_cookie(await sync_to_async(make_user)("viewer"))
    )
    assert (await viewer.connect())[0]
    await receive_matching(viewer, r'data-figure="depth">1<')
    await sync_to_async(upstream.set_fault)(route="stats", status=503, count=1)
    await receive_matching(viewer, r"data-stale-since")

    text = (await AsyncClient().get("/metrics", REMOTE_ADDR="127.0.0.1")).content.decode()
    assert metric(text, "workqueue_queue_depth", environment=env["id"]) == 1
    assert metric(text, "workqueue_queue_pending", environment=env["id"]) == 0
    assert metric(text, "workqueue_workers_polling", environment=env["id"]) == 0
    assert metric(text, "workqueue_stuck_work", environment=env["id"]) == 0
    assert metric(text, "workqueue_oldest_queued_age_seconds", environment=env["id"]) is not None
    assert metric(text, "dashboard_feed_lag_seconds", environment=env["id"]) is not None
    assert metric(text, "dashboard_feed_stale", environment=env["id"]) == 1
    assert (metric(text, "dashboard_websockets_open", kind="environment") or 0) >= 1
    calls = metric(
        text, "workqueue_upstream_request_duration_seconds_count", endpoint="work_stats", status="200"
    )
    assert (calls or 0) >= 1
    assert (metric(text, "workqueue_upstream_errors_total", endpoint="work_stats", status="503") or 0) >= 1
    # The upstream budget: its size and what the feed's calls took from it this minute.
    assert metric(text, "dashboard_upstream_budget_per_minute") == settings.UPSTREAM_REQUESTS_PER_MINUTE
    assert (metric(text, "dashboard_upstream_budget_used") or 0) >= 1
    assert (
        env["id"]
        not in text.split("workqueue_upstream_request_duration_seconds", 1)[1].split("\n# HELP", 1)[0]
    )
    await viewer.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_readyz_checks_database_channel_layer_and_upstream(upstream, settings):
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "ready": True,
        "checks": {"database": {"ok": True}, "channel_layer": {"ok": True}, "upstream": {"ok": True}},
    }

    live_views._upstream_checked = None
    await sync_to_async(upstream.set_fault)(route="environments.list", status=503)
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 503
    upstream_check = response.json()["checks"]["upstream"]
    assert upstream_check["ok"] is False and upstream_check["error"] == "unavailable"
    assert upstream_check["request_id"].startswith("req_")
    assert response.json()["checks"]["database"] == {"ok": True}
