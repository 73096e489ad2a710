"""The gateway for scripts, driven the way scripts drive it: the official SDK 2.10.0 (strict validation, no retries)
pointed at a real dashboard server (uvicorn on the test database), whose upstream is the emulator over real HTTP.

Each test asserts what a person would notice: what the SDK returned or raised, what reached the emulator (its
request counters and the items' state), and what the audit log says.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anthropic
import httpx
import pytest
import uvicorn
from anthropic.types.beta import BetaInvalidMetadataError
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group, User
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from dashboard.gateway import ratelimit, tokens
from dashboard.gateway.models import PersonalAccessToken
from dashboard.models import AuditEntry
from dashboard.permissions import ensure_roles

REASON = "INC-7 draining stuck sessions"


@pytest.fixture(scope="module")
def dashboard_server() -> Iterator[str]:
    """The dashboard's ASGI application served by uvicorn in a thread, for the whole module.

    It uses whatever database and settings the running test has (pytest-django's test database, the ``settings``
    fixture's overrides), since it lives in the same process.
    """
    config = uvicorn.Config(
        "dashboard.asgi:application", host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="dashboard-live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@dataclass
class Setup:
    url: str  # the dashboard
    emulator: Any
    env_id: str
    env_key: str
    items: list[dict[str, Any]]

    def sdk(self, token: str, *, reason: str | None = REASON, **kwargs: Any) -> anthropic.Anthropic:
        headers = {"X-Reason": reason} if reason is not None else {}
        return anthropic.Anthropic(
            base_url=f"{self.url}/gateway",
            api_key=token,
            _strict_response_validation=True,
            max_retries=0,
            default_headers=headers,
            **kwargs,
        )

    def counts(self) -> dict[str, Any]:
        return self.emulator.requests()

    def state_of(self, work_id: str) -> str:
        # Straight from the emulator with the organization's key, not through the gateway.
        response = httpx.get(
            f"{self.emulator.base_url}/v1/environments/{self.env_id}/work/{work_id}",
            headers={"Authorization": f"Bearer {self.emulator.api_key}"},
        )
        response.raise_for_status()
        return str(response.json()["state"])


def make_user(username: str, role: str | None) -> User:
    user = User.objects.create_user(username=username)  # no password: tokens are how these users sign in
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    return user


def make_token(user: User, name: str = "cleanup-script", days: int = 30) -> str:
    return tokens.mint(user, name, days)[1]


@pytest.fixture
def setup(transactional_db: None, dashboard_server: str, emulator: Any, settings: Any) -> Setup:
    ensure_roles()
    env, env_key = emulator.create_environment("build-runners")
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = emulator.api_key
    settings.ENVIRONMENT_KEYS = {env["id"]: env_key}
    settings.GATEWAY_REQUIRE_REASON = True
    settings.GATEWAY_RATE_PER_MINUTE = 600
    settings.GATEWAY_RATE_BURST = 100
    items = [emulator.enqueue(env["id"], metadata={"n": str(n)}) for n in range(5)]
    emulator.reset_requests()
    return Setup(dashboard_server, emulator, env["id"], env_key, items)


@pytest.fixture
def operator(setup: Setup) -> tuple[User, str]:
    user = make_user("olivia", "operator")
    return user, make_token(user, "cleanup-script")


def envelope(error: anthropic.APIStatusError) -> dict[str, Any]:
    """The decoded error body a client got (the SDK types it loosely)."""
    assert isinstance(error.body, dict)
    return error.body


def request_id_of(error: anthropic.APIStatusError) -> str:
    assert error.request_id
    return error.request_id


def latest_entry() -> AuditEntry:
    entry = AuditEntry.objects.order_by("-sequence").first()
    assert entry is not None
    return entry


def sent_of(entry: AuditEntry) -> dict[str, Any]:
    assert isinstance(entry.sent, dict)
    return entry.sent


def _reads(operation: str) -> float:
    return (
        REGISTRY.get_sample_value("dashboard_gateway_reads_total", {"operation": operation, "status": "200"})
        or 0.0
    )


# --- reads ------------------------------------------------------------------------------------------------------


def test_an_operator_token_reads_through_the_sdk(setup: Setup, operator: tuple[User, str]) -> None:
    client = setup.sdk(operator[1])
    lists_before = _reads("work.list")

    listed = list(client.beta.environments.work.list(setup.env_id, limit=2))
    item = client.beta.environments.work.retrieve(setup.items[0]["id"], environment_id=setup.env_id)
    stats = client.beta.environments.work.stats(setup.env_id)
    environments = list(client.beta.environments.list())
    environment = client.beta.environments.retrieve(setup.env_id)

    assert sorted(w.id for w in listed) == sorted(i["id"] for i in setup.items)
    assert item.id == setup.items[0]["id"] and item.metadata == {"n": "0"}
    assert stats.depth == 5
    assert [e.id for e in environments] == [setup.env_id]
    assert environment.name == "build-runners"
    counts = setup.counts()
    # Five items at two a page: three pages, each listed upstream with the environment's key, not the API key.
    assert counts["by_route_and_credential"]["list"] == {"environment_key": 3}
    assert counts["by_route_and_credential"]["retrieve"] == {"api_key": 1}
    assert counts["by_route_and_credential"]["stats"] == {"api_key": 1}
    assert counts["by_route"]["environments.list"] == 1
    assert counts["by_route"]["environments.retrieve"] == 1
    # Reads are counted, not audited.
    assert _reads("work.list") - lists_before == 3
    assert AuditEntry.objects.count() == 0
    assert PersonalAccessToken.objects.get().last_used_at is not None


def test_a_token_is_accepted_as_x_api_key_with_or_without_beta_true(
    setup: Setup, operator: tuple[User, str]
) -> None:
    for query in ("", "?beta=true"):
        response = httpx.get(
            f"{setup.url}/gateway/v1/environments/{setup.env_id}/work/stats{query}",
            headers={"x-api-key": operator[1]},
        )
        assert response.status_code == 200, response.text
        assert response.json()["depth"] == 5
    assert setup.counts()["by_route"]["stats"] == 2


def test_listing_work_without_an_environment_key_is_an_upstream_shaped_refusal(
    setup: Setup, operator: tuple[User, str], settings: Any
) -> None:
    settings.ENVIRONMENT_KEYS = {}

    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        list(setup.sdk(operator[1]).beta.environments.work.list(setup.env_id))

    assert "environment key" in raised.value.message
    assert raised.value.request_id and raised.value.request_id.startswith("req_gateway_")
    assert setup.counts()["total"] == 0


# --- writes -----------------------------------------------------------------------------------------------------


def test_an_operator_patches_metadata_and_stops_gracefully(setup: Setup, operator: tuple[User, str]) -> None:
    user, token = operator
    work = setup.sdk(token).beta.environments.work
    first, second = setup.items[0]["id"], setup.items[1]["id"]

    patched = work.with_raw_response.update(
        first, environment_id=setup.env_id, metadata={"ticket": "INC-7", "n": None}
    )
    stopped = work.with_raw_response.stop(second, environment_id=setup.env_id)

    assert patched.parse().metadata == {"ticket": "INC-7"}
    assert stopped.parse().state == "stopped"  # a queued item has nothing running: a graceful stop ends it
    assert setup.state_of(second) == "stopped"
    counts = setup.counts()
    assert counts["by_route_and_credential"]["update"] == {"api_key": 1}
    assert counts["by_route_and_credential"]["stop"] == {"api_key": 1}
    entries = {e.action: e for e in AuditEntry.objects.all()}
    assert set(entries) == {"patch_metadata", "stop"}
    for entry, raw in ((entries["patch_metadata"], patched), (entries["stop"], stopped)):
        assert entry.user_id == user.pk and entry.username == "olivia"
        assert entry.token_name == "cleanup-script" and entry.via == "gateway"
        assert entry.reason == REASON
        assert entry.outcome == "succeeded" and entry.upstream_status == 200
        assert entry.request_id == raw.request_id and entry.request_id.startswith("req_")
    assert (
        entries["patch_metadata"].work_id == first
        and entries["patch_metadata"].environment_id == setup.env_id
    )
    assert sent_of(entries["patch_metadata"])["body"] == {"metadata": {"ticket": "INC-7", "n": None}}
    assert sent_of(entries["stop"]) == {
        "method": "POST",
        "path": f"/v1/environments/{setup.env_id}/work/{second}/stop",
        "body": {},
    }


def test_an_operator_cannot_force_stop_and_nothing_changes_upstream(
    setup: Setup, operator: tuple[User, str]
) -> None:
    work_id = setup.items[0]["id"]

    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        setup.sdk(operator[1]).beta.environments.work.stop(work_id, environment_id=setup.env_id, force=True)

    assert envelope(raised.value)["error"]["type"] == "permission_error"
    assert "force_stop needs the admin role" in raised.value.message
    assert setup.counts()["total"] == 0
    assert setup.state_of(work_id) == "queued"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.username, entry.token_name) == (
        "force_stop",
        "denied",
        "olivia",
        "cleanup-script",
    )
    assert sent_of(entry)["body"] == {"force": True}
    assert entry.work_id == work_id and entry.upstream_status is None


def test_an_admin_token_force_stops(setup: Setup) -> None:
    admin = make_user("ada", "admin")
    work_id = setup.items[0]["id"]

    item = setup.sdk(make_token(admin, "ops")).beta.environments.work.stop(
        work_id, environment_id=setup.env_id, force=True
    )

    assert item.state == "stopped" and setup.state_of(work_id) == "stopped"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.username) == ("force_stop", "succeeded", "ada")


def test_a_viewer_token_reads_but_cannot_patch(setup: Setup) -> None:
    viewer = make_user("vic", "viewer")
    work = setup.sdk(make_token(viewer, "report")).beta.environments.work
    work_id = setup.items[0]["id"]

    assert work.retrieve(work_id, environment_id=setup.env_id).id == work_id
    with pytest.raises(anthropic.PermissionDeniedError):
        work.update(work_id, environment_id=setup.env_id, metadata={"ticket": "INC-7"})
    with pytest.raises(anthropic.PermissionDeniedError):
        work.stop(work_id, environment_id=setup.env_id)

    assert "update" not in setup.counts()["by_route"] and "stop" not in setup.counts()["by_route"]
    assert sorted(AuditEntry.objects.values_list("action", "outcome")) == [
        ("patch_metadata", "denied"),
        ("stop", "denied"),
    ]


def test_a_refused_large_body_is_audited_by_its_outline(setup: Setup) -> None:
    viewer = make_user("vince", "viewer")
    work = setup.sdk(make_token(viewer, "report")).beta.environments.work
    metadata = {f"key{n}": "v" * 500 for n in range(40)}

    with pytest.raises(anthropic.PermissionDeniedError):
        work.update(setup.items[0]["id"], environment_id=setup.env_id, metadata=metadata)

    entry = AuditEntry.objects.get()
    assert entry.outcome == "denied"
    assert sent_of(entry)["body"] == {"outline": {"fields": ["metadata"], "metadata_keys": list(metadata)}}
    assert len(json.dumps(sent_of(entry))) < 2048


def test_a_user_without_a_role_gets_nothing(setup: Setup) -> None:
    nobody = make_user("nora", None)

    with pytest.raises(anthropic.PermissionDeniedError):
        setup.sdk(make_token(nobody)).beta.environments.work.stats(setup.env_id)

    assert setup.counts()["total"] == 0
    assert AuditEntry.objects.get().outcome == "denied"


def test_worker_calls_and_environment_changes_are_refused_and_audited(
    setup: Setup, operator: tuple[User, str]
) -> None:
    client = setup.sdk(operator[1])
    work = client.beta.environments.work
    work_id = setup.items[0]["id"]

    refused = [
        lambda: work.poll(setup.env_id),
        lambda: work.ack(work_id, environment_id=setup.env_id),
        lambda: work.heartbeat(work_id, environment_id=setup.env_id, expected_last_heartbeat="NO_HEARTBEAT"),
        lambda: client.beta.environments.create(name="new"),
        lambda: client.beta.environments.update(setup.env_id, name="renamed"),
        lambda: client.beta.environments.archive(setup.env_id),
        lambda: client.beta.environments.delete(setup.env_id),
    ]
    for call in refused:
        with pytest.raises(anthropic.PermissionDeniedError) as raised:
            call()
        assert envelope(raised.value)["type"] == "error"
        assert raised.value.request_id == envelope(raised.value)["request_id"]

    assert setup.counts()["total"] == 0
    assert setup.state_of(work_id) == "queued"
    assert sorted(AuditEntry.objects.values_list("action", flat=True)) == sorted(
        [
            "work.poll",
            "work.ack",
            "work.heartbeat",
            "environments.create",
            "environments.update",
            "environments.archive",
            "environments.delete",
        ]
    )
    assert set(AuditEntry.objects.values_list("outcome", flat=True)) == {"denied"}


def test_a_write_without_a_reason_is_refused(setup: Setup, operator: tuple[User, str], settings: Any) -> None:
    work = setup.sdk(operator[1], reason=None).beta.environments.work
    work_id = setup.items[0]["id"]

    with pytest.raises(anthropic.BadRequestError) as raised:
        work.update(work_id, environment_id=setup.env_id, metadata={"ticket": "INC-7"})

    assert envelope(raised.value)["error"]["type"] == "invalid_request_error"
    assert "X-Reason" in raised.value.message
    assert setup.counts()["total"] == 0
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.reason) == ("patch_metadata", "denied", "")

    settings.GATEWAY_REQUIRE_REASON = False
    assert (
        work.update(work_id, environment_id=setup.env_id, metadata={"ticket": "INC-7"}).metadata["ticket"]
        == "INC-7"
    )
    assert latest_entry().outcome == "succeeded"


def test_a_reason_may_be_utf8(setup: Setup, operator: tuple[User, str]) -> None:
    response = httpx.post(
        f"{setup.url}/gateway/v1/environments/{setup.env_id}/work/{setup.items[0]['id']}/stop",
        headers=[
            (b"Authorization", f"Bearer {operator[1]}".encode()),
            (b"X-Reason", "Störung INC-7".encode()),
        ],
        json={},
    )

    assert response.status_code == 200
    assert AuditEntry.objects.get().reason == "Störung INC-7"


# --- upstream errors pass through typed -------------------------------------------------------------------------


def test_a_second_stop_raises_conflict_with_the_upstreams_request_id(
    setup: Setup, operator: tuple[User, str]
) -> None:
    work = setup.sdk(operator[1]).beta.environments.work
    work_id = setup.items[0]["id"]
    work.stop(work_id, environment_id=setup.env_id)

    with pytest.raises(anthropic.ConflictError) as raised:
        work.stop(work_id, environment_id=setup.env_id)

    request_id = raised.value.request_id
    # The envelope is the emulator's, byte for byte: its request_id is the one in the header.
    assert request_id and request_id.startswith("req_") and not request_id.startswith("req_gateway_")
    assert envelope(raised.value)["request_id"] == request_id
    assert envelope(raised.value)["error"]["type"] == "conflict_error"
    assert setup.counts()["by_route"]["stop"] == 2
    # Audited as the item page and bulk operations audit it (dashboard.stopping): the item is stopped, as asked.
    entry = latest_entry()
    assert (entry.outcome, entry.upstream_status, entry.request_id) == ("succeeded", 409, request_id)
    assert entry.error == "already stopped"


def test_an_oversized_patch_raises_invalid_metadata_with_the_upstreams_request_id(
    setup: Setup, operator: tuple[User, str]
) -> None:
    work = setup.sdk(operator[1]).beta.environments.work

    with pytest.raises(BetaInvalidMetadataError) as raised:
        work.update(setup.items[0]["id"], environment_id=setup.env_id, metadata={"note": "x" * 600})

    assert raised.value.status_code == 400
    assert raised.value.error_code == "invalid_metadata"
    request_id = raised.value.request_id
    assert request_id and not request_id.startswith("req_gateway_")
    assert envelope(raised.value)["request_id"] == request_id
    assert setup.counts()["by_route"]["update"] == 1
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.upstream_status, entry.request_id) == (
        "patch_metadata",
        "failed",
        400,
        request_id,
    )


def test_upstream_rate_limits_pass_through_with_their_retry_after(
    setup: Setup, operator: tuple[User, str]
) -> None:
    setup.emulator.set_fault(route="stats", status=429, retry_after=7, count=1)

    with pytest.raises(anthropic.RateLimitError) as raised:
        setup.sdk(operator[1]).beta.environments.work.stats(setup.env_id)

    assert raised.value.response.headers["retry-after"] == "7"
    assert not request_id_of(raised.value).startswith("req_gateway_")


def test_an_unreachable_upstream_is_a_502_and_a_slow_one_a_504(
    setup: Setup, operator: tuple[User, str], settings: Any
) -> None:
    work = setup.sdk(operator[1]).beta.environments.work
    settings.UPSTREAM_TIMEOUT_SECONDS = 0.3
    setup.emulator.set_fault(route="stats", latency_ms=2000, count=1)

    with pytest.raises(anthropic.GatewayTimeoutError) as slow:
        work.stats(setup.env_id)

    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(anthropic.InternalServerError) as unreachable:
        work.stop(setup.items[0]["id"], environment_id=setup.env_id)

    assert slow.value.status_code == 504 and envelope(slow.value)["error"]["type"] == "timeout_error"
    assert (
        unreachable.value.status_code == 502 and envelope(unreachable.value)["error"]["type"] == "api_error"
    )
    for raised in (slow.value, unreachable.value):
        assert raised.request_id and raised.request_id.startswith("req_gateway_")
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.upstream_status) == ("stop", "failed", None)
    assert entry.request_id == unreachable.value.request_id


def test_the_dashboards_credentials_never_come_back(setup: Setup, operator: tuple[User, str]) -> None:
    token = operator[1]
    base = f"{setup.url}/gateway/v1/environments/{setup.env_id}"
    auth = {"Authorization": f"Bearer {token}", "X-Reason": REASON}
    responses = [
        httpx.get(f"{base}/work", headers=auth),
        httpx.get(f"{base}/work/stats", headers=auth),
        httpx.post(f"{base}/work/{setup.items[0]['id']}/stop", headers=auth, json={}),
        httpx.post(f"{base}/work/{setup.items[0]['id']}/stop", headers=auth, json={}),  # 409
        httpx.get(f"{base}/work/poll", headers=auth),  # 403
        httpx.get(f"{base}/work/work_nonexistent", headers=auth),  # 404 upstream
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 409, 403, 404]
    for response in responses:
        wire = response.text + repr(dict(response.headers))
        assert setup.emulator.api_key not in wire and setup.env_key not in wire
        assert "sk-ant-" not in wire
        assert "set-cookie" not in response.headers  # no session, no CSRF cookie: the gateway is cookie-free


def test_answers_pass_through_byte_for_byte(setup: Setup, operator: tuple[User, str]) -> None:
    path = f"/v1/environments/{setup.env_id}/work/{setup.items[0]['id']}"
    through_gateway = httpx.get(f"{setup.url}/gateway{path}", headers={"x-api-key": operator[1]})
    direct = httpx.get(f"{setup.emulator.base_url}{path}", headers={"x-api-key": setup.emulator.api_key})
    missing = httpx.get(f"{setup.url}/gateway{path}0", headers={"x-api-key": operator[1]})

    assert through_gateway.status_code == direct.status_code == 200
    assert through_gateway.content == direct.content
    assert through_gateway.headers["content-type"] == direct.headers["content-type"]
    assert through_gateway.headers["request-id"] != direct.headers["request-id"]  # each its own upstream call
    assert missing.status_code == 404
    assert missing.json()["request_id"] == missing.headers["request-id"]
    assert not missing.headers["request-id"].startswith(
        "req_gateway_"
    )  # the upstream's 404, not the gateway's


# --- tokens -----------------------------------------------------------------------------------------------------


def test_revoked_expired_and_unknown_tokens_raise_authentication_error(setup: Setup) -> None:
    user = make_user("olivia", "operator")
    revoked_token, revoked_secret = tokens.mint(user, "old", 30)
    tokens.revoke(revoked_token, user)
    expired_token, expired_secret = tokens.mint(user, "stale", 30)
    PersonalAccessToken.objects.filter(pk=expired_token.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    inactive_user = make_user("ivan", "operator")
    inactive_secret = make_token(inactive_user)
    inactive_user.is_active = False
    inactive_user.save()

    for secret in (
        revoked_secret,
        expired_secret,
        inactive_secret,
        "wqd_pat_unknown",
        setup.emulator.api_key,
    ):
        with pytest.raises(anthropic.AuthenticationError) as raised:
            setup.sdk(secret).beta.environments.work.stats(setup.env_id)
        assert envelope(raised.value)["error"]["type"] == "authentication_error"
        assert request_id_of(raised.value).startswith("req_gateway_")

    missing = httpx.get(f"{setup.url}/gateway/v1/environments")
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert setup.counts()["total"] == 0


def test_tokens_are_stored_hashed(setup: Setup) -> None:
    user = make_user("olivia", "operator")
    token, secret = tokens.mint(user, "cleanup-script", 30)

    assert secret.startswith("wqd_pat_") and len(secret) > 40
    assert token.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(token.prefix) and len(token.prefix) < 16
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM gateway_personalaccesstoken")
        rows = cursor.fetchall()
    dump = repr(rows)
    assert secret not in dump and secret[len(token.prefix) :] not in dump


def test_a_runaway_person_is_rate_limited_with_retry_after_whatever_their_number_of_tokens(
    setup: Setup, operator: tuple[User, str], settings: Any
) -> None:
    settings.GATEWAY_RATE_PER_MINUTE = 6
    settings.GATEWAY_RATE_BURST = 2
    work = setup.sdk(operator[1]).beta.environments.work
    other = setup.sdk(make_token(make_user("otto", "operator"), "other")).beta.environments.work

    work.stats(setup.env_id)
    work.stats(setup.env_id)
    with pytest.raises(anthropic.RateLimitError) as raised:
        work.stats(setup.env_id)

    assert envelope(raised.value)["error"]["type"] == "rate_limit_error"
    retry_after = int(raised.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 10
    assert request_id_of(raised.value).startswith("req_gateway_")
    assert setup.counts()["by_route"]["stats"] == 2
    # The bucket is the person's: a second token of theirs gets no more calls; someone else has their own.
    second = setup.sdk(make_token(operator[0], "second-script")).beta.environments.work
    with pytest.raises(anthropic.RateLimitError):
        second.stats(setup.env_id)
    assert setup.counts()["by_route"]["stats"] == 2
    assert other.stats(setup.env_id).depth == 5


def test_the_bucket_refills_at_the_configured_rate(transactional_db: None, settings: Any) -> None:
    settings.GATEWAY_RATE_PER_MINUTE = 60
    settings.GATEWAY_RATE_BURST = 3
    user = User.objects.create_user("olivia")
    take = async_to_sync(ratelimit.take)

    assert [take(user.pk, now=1000.0).allowed for _ in range(4)] == [True, True, True, False]
    assert take(user.pk, now=1000.0).retry_after == 1
    assert take(user.pk, now=1001.0).allowed  # one call a second comes back
    assert not take(user.pk, now=1001.5).allowed
    assert [take(user.pk, now=1100.0).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]  # capped at burst


def test_instances_racing_on_one_bucket_never_overspend(transactional_db: None, settings: Any) -> None:
    # Threads stand in for dashboard instances: each has its own database connection, as separate processes would.
    settings.GATEWAY_RATE_PER_MINUTE = 1
    settings.GATEWAY_RATE_BURST = 4
    user = User.objects.create_user("olivia")
    results: list[bool] = []
    barrier = threading.Barrier(10)

    def one_instance() -> None:
        try:
            barrier.wait()
            results.append(async_to_sync(ratelimit.take)(user.pk, now=5000.0).allowed)
        finally:
            connection.close()

    threads = [threading.Thread(target=one_instance) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False] * 6 + [True] * 4


# --- paths ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/gateway/v1/environments/env_a%2F..%2F..%2F_emulator%2Freset", 404),
        ("/gateway/v1/environments/..%2F_emulator%2Freset/work", 404),
        ("/gateway/v1/environments/env_a/work/work_b%2F..%2F..", 404),
        ("/gateway/v1/environments/env_a/work/%2e%2e", 404),
        ("/gateway/v1/environments/env%20a/work/stats", 404),
        ("/gateway/v2/environments", 404),
        ("/gateway/", 404),
        ("/gateway/v1/environments/env_a/secrets", 404),
    ],
)
def test_bad_paths_never_reach_the_upstream(
    setup: Setup, operator: tuple[User, str], path: str, status: int
) -> None:
    response = httpx.get(f"{setup.url}{path}", headers={"Authorization": f"Bearer {operator[1]}"})

    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert response.headers["request-id"] == body["request_id"]
    assert setup.counts()["total"] == 0


def test_a_known_path_with_another_method_is_405(setup: Setup, operator: tuple[User, str]) -> None:
    response = httpx.delete(
        f"{setup.url}/gateway/v1/environments/{setup.env_id}/work/stats",
        headers={"Authorization": f"Bearer {operator[1]}"},
    )

    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_only_known_query_parameters_are_passed_on(setup: Setup, operator: tuple[User, str]) -> None:
    response = httpx.get(
        f"{setup.url}/gateway/v1/environments/{setup.env_id}/work",
        params={"limit": "2", "beta": "true", "block_ms": "500"},
        headers={"Authorization": f"Bearer {operator[1]}"},
    )

    assert response.status_code == 200
    assert len(response.json()["data"]) == 2 and response.json()["next_page"]
