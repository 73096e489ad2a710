"""The emulator over real HTTP (raw httpx): the admin surface, faults, request counters, the request-id header,
the credential matrix, long polls, lease expiry, wire details the SDK depends on, and state across a restart."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import pytest

NO_HEARTBEAT = "NO_HEARTBEAT"


@pytest.fixture
def http(emulator):
    with httpx.Client(base_url=emulator.base_url, timeout=10) as client:
        yield client


@pytest.fixture
def env(emulator):
    environment, key = emulator.create_environment("tests")
    return environment["id"], key


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def work_path(env_id: str, suffix: str = "") -> str:
    return f"/v1/environments/{env_id}/work{suffix}"


def poll(http, env_id, key, **params):
    response = http.get(work_path(env_id, "/poll"), params=params, headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


def claim(http, env_id, key, api_key):
    """Poll, ack and first-heartbeat one item; returns (item, last_heartbeat)."""
    item = poll(http, env_id, key)
    assert http.post(work_path(env_id, f"/{item['id']}/ack"), headers=bearer(key)).status_code == 200
    beat = http.post(
        work_path(env_id, f"/{item['id']}/heartbeat"),
        params={"expected_last_heartbeat": NO_HEARTBEAT},
        headers=bearer(key),
    )
    assert beat.status_code == 200, beat.text
    return item, beat.json()["last_heartbeat"]


def assert_envelope(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type and body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]
    return body


# --- admin surface ---------------------------------------------------------------------------------------------


def test_health_needs_no_credential_and_the_rest_of_the_admin_surface_needs_the_api_key(emulator, http, env):
    assert http.get("/_emulator/health").json() == {"ok": True}
    assert_envelope(http.get("/_emulator/environments"), 401, "authentication_error")
    assert_envelope(
        http.get("/_emulator/environments", headers=bearer("sk-ant-api03-wrong")), 401, "authentication_error"
    )
    assert_envelope(http.get("/_emulator/environments", headers=bearer(env[1])), 403, "permission_error")
    listed = http.get("/_emulator/environments", headers={"x-api-key": emulator.api_key}).json()["data"]
    assert listed == [{"environment": listed[0]["environment"], "environment_key": env[1]}]
    assert listed[0]["environment"]["config"] == {"type": "self_hosted"}


def test_admin_creates_environments_and_enqueues_session_and_healthcheck_work(emulator, http, env):
    env_id, key = env
    response = http.post(
        "/_emulator/environments",
        json={"name": "more", "metadata": {"a": "b"}},
        headers=bearer(emulator.api_key),
    )
    assert response.status_code == 201
    assert response.json()["environment_key"].startswith("sk-ant-oat01-")
    session = http.post(
        f"/_emulator/environments/{env_id}/work",
        json={"type": "session", "metadata": {"t": "1"}},
        headers=bearer(emulator.api_key),
    )
    assert session.status_code == 201
    assert session.json()["data"]["type"] == "session" and session.json()["data"]["id"].startswith("session_")
    assert session.json()["state"] == "queued" and session.json()["metadata"] == {"t": "1"}
    check = emulator.enqueue(env_id, type="healthcheck")
    assert check["data"]["type"] == "healthcheck"
    bad = http.post(
        f"/_emulator/environments/{env_id}/work", json={"type": "cron"}, headers=bearer(emulator.api_key)
    )
    assert_envelope(bad, 400, "invalid_request_error")
    missing = http.post("/_emulator/environments/env_nope/work", json={}, headers=bearer(emulator.api_key))
    assert_envelope(missing, 404, "not_found_error")


def test_reset_wipes_environments_faults_counters_and_the_clock(emulator, http, env):
    emulator.set_fault(route="stats", status=500)
    emulator.advance_clock(100)
    http.get(work_path(env[0], "/stats"), headers=bearer(emulator.api_key))
    emulator.reset()
    assert emulator.environments() == []
    assert emulator.requests()["total"] == 0
    assert http.get("/_emulator/faults", headers=bearer(emulator.api_key)).json() == {"data": []}
    assert emulator.clock()["offset_seconds"] == 0


def test_server_stop_moves_running_work_to_stopping_and_queued_work_to_stopped(emulator, http, env):
    env_id, key = env
    running = emulator.enqueue(env_id)["id"]
    _, last = claim(http, env_id, key, emulator.api_key)
    waiting = emulator.enqueue(env_id)["id"]
    assert emulator.server_stop(env_id, running)["state"] == "stopping"
    beat = http.post(
        work_path(env_id, f"/{running}/heartbeat"),
        params={"expected_last_heartbeat": last},
        headers=bearer(key),
    ).json()
    assert beat["state"] == "stopping"
    assert emulator.server_stop(env_id, waiting)["state"] == "stopped"
    with pytest.raises(httpx.HTTPStatusError):
        emulator.server_stop(env_id, waiting)


def test_the_clock_moves_forward_only(emulator, http):
    before = emulator.clock()
    after = emulator.advance_clock(3600)
    assert after["offset_seconds"] == before["offset_seconds"] + 3600
    assert after["now"] > before["now"]
    response = http.post("/_emulator/clock", json={"advance_seconds": -5}, headers=bearer(emulator.api_key))
    assert_envelope(response, 400, "invalid_request_error")


def test_openapi_document_describes_every_v1_route(http):
    document = http.get("/_emulator/openapi.json").json()
    assert document["openapi"].startswith("3.")
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    assert operations == {
        "environments_list", "environments_create", "environments_retrieve", "environments_update",
        "environments_delete", "environments_archive",
        "work_list", "work_poll", "work_stats", "work_retrieve", "work_update", "work_ack", "work_heartbeat",
        "work_stop",
    }  # fmt: skip


# --- request ids, content type, routing ------------------------------------------------------------------------


def test_every_response_carries_a_request_id_and_json(emulator, http, env):
    env_id, key = env
    emulator.set_fault(route="list", status=503, count=1)
    responses = [
        http.get("/_emulator/health"),
        http.get("/_emulator/requests", headers=bearer(emulator.api_key)),
        http.get("/_emulator/requests"),  # 401 on the admin surface
        http.get("/nowhere"),
        http.get("/v1/environments/env_x/work/poll/extra"),
        http.delete(work_path(env_id, "/stats"), headers=bearer(emulator.api_key)),  # 405
        http.get(work_path(env_id, "/stats"), headers=bearer(emulator.api_key)),
        http.get(work_path(env_id), headers=bearer(key)),  # the injected 503
        http.get(work_path(env_id, "/poll"), headers=bearer(key)),  # empty poll
        http.get(work_path(env_id, "/poll"), headers=bearer("sk-ant-oat01-unknown")),
    ]
    ids = [r.headers.get("request-id") for r in responses]
    assert all(rid and rid.startswith("req_") for rid in ids), ids
    assert len(set(ids)) == len(ids)
    assert all(r.headers["content-type"] == "application/json" for r in responses)
    assert [r.status_code for r in responses] == [200, 200, 401, 404, 404, 405, 200, 503, 200, 401]
    assert responses[8].content == b"null"


def test_poll_and_stats_win_over_a_work_id_and_beta_true_is_ignored(emulator, http, env):
    env_id, key = env
    stats = http.get(work_path(env_id, "/stats"), params={"beta": "true"}, headers=bearer(emulator.api_key))
    assert stats.json()["type"] == "work_queue_stats"
    assert (
        http.get(work_path(env_id, "/poll"), params={"beta": "true"}, headers=bearer(key)).content == b"null"
    )
    encoded = http.get(f"/v1/environments/{env_id}%2Fx/work/stats", headers=bearer(emulator.api_key))
    assert_envelope(encoded, 404, "not_found_error")


def test_empty_bodies_with_json_content_type_are_not_parsed(emulator, http, env):
    env_id, key = env
    work_id = emulator.enqueue(env_id)["id"]
    poll(http, env_id, key)
    headers = {**bearer(key), "content-type": "application/json"}
    assert http.post(work_path(env_id, f"/{work_id}/ack"), headers=headers, content=b"").status_code == 200
    assert http.post(work_path(env_id, f"/{work_id}/heartbeat"), headers=headers).status_code == 200
    api_headers = {**bearer(emulator.api_key), "content-type": "application/json"}
    assert http.post(f"/v1/environments/{env_id}/archive", headers=api_headers).status_code == 200
    broken = http.post(work_path(env_id, f"/{work_id}"), headers=api_headers, content=b"{not json")
    assert_envelope(broken, 400, "invalid_request_error")


# --- credentials -----------------------------------------------------------------------------------------------

# Spec §3, written out independently of the emulator's own table: (route, method, path suffix) → kinds accepted.
MATRIX = [
    ("retrieve", "GET", "/work/{work}", {"api_key"}),
    ("update", "POST", "/work/{work}", {"api_key"}),
    ("list", "GET", "/work", {"environment_key"}),
    ("poll", "GET", "/work/poll", {"environment_key"}),
    ("ack", "POST", "/work/{work}/ack", {"api_key", "environment_key", "sessions_token"}),
    ("heartbeat", "POST", "/work/{work}/heartbeat", {"api_key", "environment_key", "sessions_token"}),
    ("stop", "POST", "/work/{work}/stop", {"api_key", "environment_key", "sessions_token"}),
    ("stats", "GET", "/work/stats", {"api_key", "environment_key"}),
    ("environments.retrieve", "GET", "", {"api_key"}),
    ("environments.update", "POST", "", {"api_key"}),
    ("environments.archive", "POST", "/archive", {"api_key"}),
    ("environments.list", "GET", "LIST", {"api_key"}),
]


@pytest.mark.parametrize(("route", "method", "suffix", "accepted"), MATRIX, ids=[m[0] for m in MATRIX])
def test_credentials_are_accepted_or_refused_per_the_spec_matrix(
    emulator, http, env, route, method, suffix, accepted
):
    env_id, key = env
    work_id = emulator.enqueue(env_id)["id"]
    delivered = poll(http, env_id, key)
    token = json.loads(base64.urlsafe_b64decode(delivered["secret"] + "==="))["sessions_token"]
    credentials = {
        "api_key": emulator.api_key,
        "environment_key": key,
        "sessions_token": token,
    }
    path = (
        "/v1/environments" if suffix == "LIST" else f"/v1/environments/{env_id}" + suffix.format(work=work_id)
    )
    for kind, credential in credentials.items():
        for headers in (bearer(credential), {"x-api-key": credential}):
            response = http.request(method, path, headers=headers, json={} if method == "POST" else None)
            if kind in accepted:
                assert response.status_code not in (401, 403), (kind, response.text)
            else:
                assert_envelope(response, 403, "permission_error")
    for headers in ({}, bearer("sk-ant-api03-unknown"), bearer("sk-ant-oat01-unknown"), {"x-api-key": "x"}):
        assert_envelope(http.request(method, path, headers=headers), 401, "authentication_error")


def test_keys_and_tokens_are_bound_to_their_environment_and_current_delivery(emulator, http, env):
    env_id, key = env
    other, other_key = emulator.create_environment("other")
    work_id = emulator.enqueue(env_id)["id"]
    assert_envelope(http.get(work_path(env_id), headers=bearer(other_key)), 403, "permission_error")
    first = poll(http, env_id, key)
    old_token = json.loads(base64.urlsafe_b64decode(first["secret"] + "==="))["sessions_token"]
    emulator.advance_clock(6)
    second = poll(http, env_id, key)  # reclaimed: a new delivery with a new token
    assert second["id"] == work_id and second["secret"] != first["secret"]
    stale = http.post(work_path(env_id, f"/{work_id}/ack"), headers=bearer(old_token))
    assert_envelope(stale, 403, "permission_error")
    token = json.loads(base64.urlsafe_b64decode(second["secret"] + "==="))["sessions_token"]
    assert http.post(work_path(env_id, f"/{work_id}/ack"), headers=bearer(token)).status_code == 200
    assert_envelope(
        http.get(work_path(other["id"], "/stats"), headers=bearer(token)), 403, "permission_error"
    )


# --- faults and counters ---------------------------------------------------------------------------------------


def test_a_status_fault_answers_in_the_envelope_with_retry_after_for_count_requests(emulator, http, env):
    env_id, _ = env
    emulator.set_fault(route="stats", status=503, retry_after=2, count=2)
    headers = bearer(emulator.api_key)
    for _ in range(2):
        response = http.get(work_path(env_id, "/stats"), headers=headers)
        assert_envelope(response, 503, "api_error")
        assert response.headers["retry-after"] == "2"
    assert http.get(work_path(env_id, "/stats"), headers=headers).status_code == 200
    emulator.set_fault(route="stats", status=529)
    assert_envelope(http.get(work_path(env_id, "/stats"), headers=headers), 529, "overloaded_error")
    assert_envelope(http.get(work_path(env_id, "/stats"), headers=headers), 529, "overloaded_error")
    emulator.clear_faults()
    assert http.get(work_path(env_id, "/stats"), headers=headers).status_code == 200


def test_raw_body_content_type_latency_and_body_size_faults(emulator, http, env):
    env_id, key = env
    emulator.set_fault(route="list", status=200, body="{not json", content_type="text/plain", count=1)
    malformed = http.get(work_path(env_id), headers=bearer(key))
    assert (malformed.status_code, malformed.text, malformed.headers["content-type"]) == (
        200,
        "{not json",
        "text/plain",
    )
    assert malformed.headers["request-id"]

    emulator.set_fault(route="stats", latency_ms=400, count=1)
    started = time.monotonic()
    slow = http.get(work_path(env_id, "/stats"), headers=bearer(key))
    assert slow.status_code == 200 and time.monotonic() - started >= 0.4

    emulator.set_fault(route="retrieve", status=500, body_size=100_000, count=1)
    huge = http.get(work_path(env_id, "/work_x"), headers=bearer(emulator.api_key))
    assert huge.status_code == 500 and len(huge.content) == 100_000 and huge.json()["type"] == "error"

    emulator.set_fault(route="stats", should_retry=False, retry_after_ms=250, status=429, count=1)
    limited = http.get(work_path(env_id, "/stats"), headers=bearer(key))
    assert_envelope(limited, 429, "rate_limit_error")
    assert (limited.headers["x-should-retry"], limited.headers["retry-after-ms"]) == ("false", "250")

    bad = http.post("/_emulator/faults", json={"route": "nowhere"}, headers=bearer(emulator.api_key))
    assert_envelope(bad, 400, "invalid_request_error")


def test_a_wildcard_fault_hits_every_v1_route_but_not_the_admin_surface(emulator, http, env):
    env_id, key = env
    emulator.set_fault(route="*", status=502)
    assert http.get(work_path(env_id, "/poll"), headers=bearer(key)).status_code == 502
    assert http.get("/v1/environments", headers=bearer(emulator.api_key)).status_code == 502
    assert emulator.environments()  # admin still answers
    emulator.clear_faults()
    emulator.set_fault(route="environments", status=503)
    assert http.get("/v1/environments", headers=bearer(emulator.api_key)).status_code == 503
    assert http.get(work_path(env_id, "/stats"), headers=bearer(key)).status_code == 200


def test_requests_are_counted_by_route_and_credential_kind(emulator, http, env):
    env_id, key = env
    emulator.set_fault(route="stats", status=503, count=1)
    http.get(work_path(env_id, "/stats"), headers=bearer(emulator.api_key))
    http.get(work_path(env_id, "/stats"), headers=bearer(key))
    http.get(work_path(env_id, "/poll"), headers=bearer(key))
    http.get(work_path(env_id, "/poll"), headers=bearer(emulator.api_key))
    http.get(work_path(env_id, "/poll"))
    http.get("/v1/environments", headers={"x-api-key": emulator.api_key})
    counts = emulator.requests()
    assert counts["total"] == 6
    assert counts["by_route"] == {"stats": 2, "poll": 3, "environments.list": 1}
    assert counts["by_route_and_credential"] == {
        "stats": {"api_key": 1, "environment_key": 1},
        "poll": {"environment_key": 1, "api_key": 1, "none": 1},
        "environments.list": {"api_key": 1},
    }
    assert counts["by_status"] == {"503": 1, "200": 3, "403": 1, "401": 1}
    emulator.reset_requests()
    assert emulator.requests()["total"] == 0


# --- polling ---------------------------------------------------------------------------------------------------


async def test_a_long_poll_does_not_hold_up_other_requests_and_wakes_on_new_work(emulator, env):
    env_id, key = env
    async with httpx.AsyncClient(base_url=emulator.base_url, timeout=10) as http:

        async def long_poll() -> tuple[httpx.Response, float]:
            started = time.monotonic()
            response = await http.get(
                work_path(env_id, "/poll"), params={"block_ms": 999}, headers=bearer(key)
            )
            return response, time.monotonic() - started

        async def meanwhile() -> list[float]:
            await asyncio.sleep(0.1)
            durations = []
            for _ in range(5):
                started = time.monotonic()
                response = await http.get(work_path(env_id, "/stats"), headers=bearer(key))
                assert response.status_code == 200
                durations.append(time.monotonic() - started)
            return durations

        (empty, waited), durations = await asyncio.gather(long_poll(), meanwhile())
        assert empty.content == b"null" and waited >= 0.95
        assert max(durations) < 0.5

        async def enqueue_soon() -> str:
            await asyncio.sleep(0.2)
            response = await http.post(
                f"/_emulator/environments/{env_id}/work", json={}, headers=bearer(emulator.api_key)
            )
            return response.json()["id"]

        (delivered, waited), work_id = await asyncio.gather(long_poll(), enqueue_soon())
        assert delivered.json()["id"] == work_id and delivered.json()["secret"]
        assert waited < 0.9


async def test_a_long_poll_wakes_when_an_unacked_delivery_becomes_reclaimable(emulator, env):
    env_id, key = env
    work_id = emulator.enqueue(env_id)["id"]
    async with httpx.AsyncClient(base_url=emulator.base_url, timeout=10) as http:
        first = await http.get(work_path(env_id, "/poll"), headers=bearer(key))
        assert first.json()["id"] == work_id
        started = time.monotonic()
        again = await http.get(
            work_path(env_id, "/poll"),
            params={"block_ms": 999, "reclaim_older_than_ms": 300},
            headers=bearer(key),
        )
        waited = time.monotonic() - started
    # Nothing was deliverable when the long poll began; it woke when the unacked delivery's reclaim came due.
    assert again.json()["id"] == work_id and again.json()["secret"] != first.json()["secret"]
    assert waited < 0.9


@pytest.mark.parametrize(
    "params",
    [{"block_ms": 0}, {"block_ms": 1000}, {"block_ms": "soon"}, {"reclaim_older_than_ms": -1}],
)
def test_poll_parameters_out_of_range_are_refused(http, env, params):
    env_id, key = env
    assert_envelope(
        http.get(work_path(env_id, "/poll"), params=params, headers=bearer(key)), 400, "invalid_request_error"
    )


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"page": "bm90IGEgY3Vyc29y"}, {"page": "%%%"}]
)
def test_list_parameters_out_of_range_are_refused(http, env, params):
    env_id, key = env
    assert_envelope(
        http.get(work_path(env_id), params=params, headers=bearer(key)), 400, "invalid_request_error"
    )


def test_list_defaults_to_twenty_and_the_last_page_says_so(emulator, http, env):
    env_id, key = env
    for _ in range(21):
        emulator.enqueue(env_id)
    first = http.get(work_path(env_id), headers=bearer(key)).json()
    assert len(first["data"]) == 20 and first["next_page"]
    last = http.get(work_path(env_id), params={"page": first["next_page"]}, headers=bearer(key)).json()
    assert len(last["data"]) == 1 and last["next_page"] is None


# --- the lifecycle in detail -----------------------------------------------------------------------------------


def test_the_412_body_is_exactly_the_upstream_shape(emulator, http, env):
    env_id, key = env
    emulator.enqueue(env_id)
    item, last = claim(http, env_id, key, emulator.api_key)
    response = http.post(
        work_path(env_id, f"/{item['id']}/heartbeat"),
        params={"expected_last_heartbeat": "nope"},
        headers=bearer(key),
    )
    assert response.status_code == 412
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "expected_last_heartbeat does not match",
            "details": {
                "error_code": "heartbeat_precondition_failed",
                "current_state": {
                    "last_heartbeat": last,
                    "lease_extended": False,
                    "state": "active",
                    "ttl_seconds": 60,
                },
            },
        },
        "request_id": response.headers["request-id"],
    }


def test_heartbeats_are_byte_exact_distinct_and_take_a_desired_ttl(emulator, http, env):
    env_id, key = env
    emulator.enqueue(env_id)
    item, last = claim(http, env_id, key, emulator.api_key)
    url = work_path(env_id, f"/{item['id']}/heartbeat")
    assert last.endswith("Z") and len(last) == len("2026-07-01T08:15:06.120394Z")
    altered = last.replace("Z", "+00:00")
    assert http.post(url, params={"expected_last_heartbeat": altered}, headers=bearer(key)).status_code == 412
    seen = {last}
    for _ in range(20):
        beat = http.post(url, params={"expected_last_heartbeat": last}, headers=bearer(key)).json()
        assert beat["last_heartbeat"] not in seen
        seen.add(last := beat["last_heartbeat"])
    longer = http.post(url, params={"desired_ttl_seconds": 120}, headers=bearer(key)).json()
    assert longer["ttl_seconds"] == 120 and longer["lease_extended"]
    clamped = http.post(url, params={"desired_ttl_seconds": 100_000}, headers=bearer(key)).json()
    assert clamped["ttl_seconds"] == 600
    refused = http.post(url, params={"desired_ttl_seconds": 0}, headers=bearer(key))
    assert_envelope(refused, 400, "invalid_request_error")


def test_an_expired_lease_requeues_live_work_and_stops_stopping_work(emulator, http, env):
    env_id, key = env
    live = emulator.enqueue(env_id)["id"]
    _, live_beat = claim(http, env_id, key, emulator.api_key)
    draining = emulator.enqueue(env_id)["id"]
    claim(http, env_id, key, emulator.api_key)
    assert (
        http.post(work_path(env_id, f"/{draining}/stop"), json={}, headers=bearer(key)).json()["state"]
        == "stopping"
    )

    emulator.advance_clock(61)
    api = bearer(emulator.api_key)
    requeued = http.get(work_path(env_id, f"/{live}"), headers=api).json()
    assert requeued["state"] == "queued" and requeued["acknowledged_at"] is None
    assert requeued["latest_heartbeat_at"] == live_beat  # kept as history
    stopped = http.get(work_path(env_id, f"/{draining}"), headers=api).json()
    assert stopped["state"] == "stopped" and stopped["stopped_at"]
    assert http.get(work_path(env_id, "/stats"), headers=api).json()["depth"] == 1

    late = http.post(
        work_path(env_id, f"/{live}/heartbeat"),
        params={"expected_last_heartbeat": live_beat},
        headers=bearer(key),
    )
    body = assert_envelope(late, 412, "invalid_request_error")
    assert body["error"]["details"]["current_state"]["state"] == "queued"
    assert body["error"]["details"]["current_state"]["last_heartbeat"] is None

    again = poll(http, env_id, key)
    assert again["id"] == live and again["secret"]
    http.post(work_path(env_id, f"/{live}/ack"), headers=bearer(key))
    reclaimed = http.post(
        work_path(env_id, f"/{live}/heartbeat"),
        params={"expected_last_heartbeat": NO_HEARTBEAT},
        headers=bearer(key),
    ).json()
    assert reclaimed["state"] == "active" and reclaimed["last_heartbeat"] > live_beat


def test_ack_and_stop_conflicts(emulator, http, env):
    env_id, key = env
    never_delivered = emulator.enqueue(env_id)["id"]
    response = http.post(work_path(env_id, f"/{never_delivered}/ack"), headers=bearer(key))
    assert_envelope(response, 409, "conflict_error")
    assert "x-should-retry" not in response.headers  # faithful default
    stopped = http.post(
        work_path(env_id, f"/{never_delivered}/stop"), json={"force": False}, headers=bearer(key)
    )
    assert stopped.json()["state"] == "stopped"  # queued work stops at once: nothing is running
    assert_envelope(
        http.post(work_path(env_id, f"/{never_delivered}/stop"), headers=bearer(key)), 409, "conflict_error"
    )
    assert_envelope(
        http.post(work_path(env_id, f"/{never_delivered}/ack"), headers=bearer(key)), 409, "conflict_error"
    )
    bad_force = http.post(
        work_path(env_id, f"/{never_delivered}/stop"), json={"force": "yes"}, headers=bearer(key)
    )
    assert_envelope(bad_force, 400, "invalid_request_error")
    missing = http.post(work_path(env_id, "/work_missing/stop"), headers=bearer(key))
    assert_envelope(missing, 404, "not_found_error")


def test_invalid_metadata_names_each_problem(emulator, http, env):
    env_id, _ = env
    work_id = emulator.enqueue(env_id)["id"]
    patch = {**{f"k{n}": "v" for n in range(17)}, "x" * 65: "v", "long": "v" * 513}
    response = http.post(
        work_path(env_id, f"/{work_id}"), json={"metadata": patch}, headers=bearer(emulator.api_key)
    )
    body = assert_envelope(response, 400, "invalid_request_error")
    assert body["error"]["details"] == {"error_code": "invalid_metadata"}
    message = body["error"]["message"]
    assert "19" in message and "'long'" in message and "xxxxxxxx" in message
    unchanged = http.post(work_path(env_id, f"/{work_id}"), json={}, headers=bearer(emulator.api_key))
    assert unchanged.json()["metadata"] == {}


async def test_work_on_a_cloud_environment_is_refused(emulator):
    async with httpx.AsyncClient(base_url=emulator.base_url) as http:
        created = await http.post(
            "/_emulator/environments",
            json={"name": "cloud", "config": {"type": "cloud"}},
            headers=bearer(emulator.api_key),
        )
        env_id, key = created.json()["environment"]["id"], created.json()["environment_key"]
        response = await http.get(work_path(env_id, "/poll"), headers=bearer(key))
    assert_envelope(response, 400, "invalid_request_error")


# --- settings and persistence ----------------------------------------------------------------------------------


def test_conflicts_can_be_marked_not_worth_retrying(start_emulator):
    server = start_emulator(env={"EMULATOR_NO_RETRY_CONFLICTS": "true"})
    from workqueue.emulator.control import EmulatorControl

    with EmulatorControl(server.base_url, server.api_key) as control:
        environment, key = control.create_environment("strict")
        work_id = control.enqueue(environment["id"])["id"]
        url = f"{server.base_url}{work_path(environment['id'], f'/{work_id}/stop')}"
        assert httpx.post(url, headers=bearer(key), json={"force": True}).status_code == 200
        again = httpx.post(url, headers=bearer(key), json={"force": True})
    assert again.status_code == 409 and again.headers["x-should-retry"] == "false"


def test_state_survives_a_restart_and_seeding_is_idempotent(start_emulator, tmp_path):
    db_path = tmp_path / "persist.sqlite3"
    first = start_emulator("--seed", db_path=db_path)
    from workqueue.emulator.control import EmulatorControl

    with EmulatorControl(first.base_url, first.api_key) as control:
        seeded = control.environments()
        assert [e["environment"]["name"] for e in seeded] == ["production", "staging", "batch"]
        env_id, key = seeded[0]["environment"]["id"], seeded[0]["environment_key"]
        for entry in seeded:
            assert (
                entry["environment"]["id"] in first.log_tail()
                and entry["environment_key"] in first.log_tail()
            )
        work_id = control.enqueue(env_id, metadata={"keep": "me"})["id"]
        control.advance_clock(5)
        with httpx.Client(base_url=first.base_url) as http:
            before = http.get(work_path(env_id), params={"limit": 100}, headers=bearer(key)).json()["data"]
            stats_before = http.get(work_path(env_id, "/stats"), headers=bearer(key)).json()
        offset = control.clock()["offset_seconds"]
    first.stop()

    second = start_emulator("--seed", db_path=db_path)
    with EmulatorControl(second.base_url, second.api_key) as control:
        assert control.environments() == seeded  # same environments and keys; the second --seed added nothing
        assert control.clock()["offset_seconds"] == offset
        with httpx.Client(base_url=second.base_url) as http:
            after = http.get(work_path(env_id), params={"limit": 100}, headers=bearer(key)).json()["data"]
            stats_after = http.get(work_path(env_id, "/stats"), headers=bearer(key)).json()
    assert after == before and after[0]["id"] == work_id
    assert {k: v for k, v in stats_after.items() if k != "workers_polling"} == {
        k: v for k, v in stats_before.items() if k != "workers_polling"
    }
    states = {item["state"] for item in after}
    assert states == {"queued", "starting", "active", "stopping", "stopped"}


def test_a_body_of_only_whitespace_is_not_json(emulator, http, env):
    env_id, key = env
    emulator.enqueue(env_id)
    item, _ = claim(http, env_id, key, emulator.api_key)
    headers = {"x-api-key": emulator.api_key, "Content-Type": "application/json"}

    refused = http.post(work_path(env_id, f"/{item['id']}"), content=b" ", headers=headers)

    assert_envelope(refused, 400, "invalid_request_error")
    # No body at all is an empty object, as the SDK sends it.
    assert http.post(work_path(env_id, f"/{item['id']}"), content=b"", headers=headers).status_code == 200
