"""The official SDK (anthropic 2.10.0), unchanged, against the emulator over real HTTP, with strict response
validation: every response must carry every field with the right type, or the SDK raises.

Healthcheck items are the exception: SDK 2.10.0 models ``data`` as session work only, so a strict client cannot
parse a healthcheck item (the SDK's limitation, not the emulator's); they are checked with loose validation.
"""

from __future__ import annotations

import base64
import json

import anthropic
import pytest
from anthropic.types.beta import BetaEnvironmentArchivedError, BetaInvalidMetadataError
from anthropic.types.beta.environments import BetaHeartbeatPreconditionFailedError

NO_HEARTBEAT = "NO_HEARTBEAT"


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch):
    # The SDK would pick these up (or try profile discovery); the tests choose every credential themselves.
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_CUSTOM_HEADERS",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def api(emulator):
    """API-key client, the way SDK 2.10.0 sends it (Authorization: Bearer)."""
    with anthropic.Anthropic(
        api_key=emulator.api_key, base_url=emulator.base_url, _strict_response_validation=True, max_retries=0
    ) as client:
        yield client


@pytest.fixture
def env(emulator):
    environment, key = emulator.create_environment("conformance")
    return environment["id"], key


@pytest.fixture
def worker(emulator, env):
    """Environment-key client, as a worker holds it."""
    with anthropic.Anthropic(
        auth_token=env[1], base_url=emulator.base_url, _strict_response_validation=True, max_retries=0
    ) as client:
        yield client


def sessions_token(secret: str) -> str:
    payload = json.loads(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4)))
    return payload["sessions_token"]


def claim(worker, env_id):
    """Poll and ack one item the way a worker does; returns the poll response."""
    item = worker.beta.environments.work.poll(env_id)
    assert item is not None
    worker.beta.environments.work.ack(item.id, environment_id=env_id)
    return item


async def test_the_sdk_poller_claims_acks_and_stops_each_item(emulator, env, api):
    env_id, key = env
    enqueued = [emulator.enqueue(env_id, metadata={"n": str(n)})["id"] for n in range(3)]
    async with anthropic.AsyncAnthropic(
        api_key=emulator.api_key, base_url=emulator.base_url, _strict_response_validation=True
    ) as client:
        claimed = []
        poller = client.beta.environments.work.poller(
            environment_id=env_id,
            environment_key=key,
            worker_id="conformance-worker",
            block_ms=None,
            drain=True,
        )
        async for item in poller:
            assert item.state == "queued" and item.secret  # the poll response, secret included
            assert api.beta.environments.work.retrieve(item.id, environment_id=env_id).state == "starting"
            claimed.append(item.id)

    assert claimed == enqueued  # oldest first
    for work_id in claimed:
        item = api.beta.environments.work.retrieve(work_id, environment_id=env_id)
        # auto_stop stops each item gracefully once the loop body is done with it.
        assert item.state == "stopping" and item.acknowledged_at and item.stop_requested_at
        assert item.secret is None
    stats = api.beta.environments.work.stats(env_id)
    assert (stats.depth, stats.pending, stats.workers_polling) == (0, 0, 1)
    assert emulator.requests()["by_route_and_credential"]["poll"] == {"environment_key": 4}


async def test_the_sdk_poller_long_polls_until_work_arrives(emulator, env):
    env_id, key = env
    async with anthropic.AsyncAnthropic(
        auth_token=key, base_url=emulator.base_url, _strict_response_validation=True
    ) as client:
        work = client.beta.environments.work
        assert await work.poll(env_id, block_ms=50) is None  # an empty long poll is 200 with `null`
        work_id = emulator.enqueue(env_id)["id"]
        poller = work.poller(environment_id=env_id, environment_key=key, drain=True, auto_stop=False)
        claimed = [item.id async for item in poller]
    assert claimed == [work_id]


def test_heartbeats_claim_with_no_heartbeat_then_echo(emulator, env, worker, api):
    env_id, _ = env
    work_id = emulator.enqueue(env_id)["id"]
    item = claim(worker, env_id)
    assert item.id == work_id
    work = worker.beta.environments.work

    first = work.heartbeat(work_id, environment_id=env_id, expected_last_heartbeat=NO_HEARTBEAT)
    assert first.state == "active" and first.lease_extended and first.last_heartbeat
    assert first.ttl_seconds > 0
    beats = [first.last_heartbeat]
    for _ in range(3):
        beat = work.heartbeat(work_id, environment_id=env_id, expected_last_heartbeat=beats[-1])
        assert beat.state == "active" and beat.lease_extended
        beats.append(beat.last_heartbeat)
    assert len(set(beats)) == len(beats)  # every heartbeat hands out a new value
    retrieved = api.beta.environments.work.retrieve(work_id, environment_id=env_id)
    assert retrieved.latest_heartbeat_at == beats[-1] and retrieved.started_at


def test_a_stale_heartbeat_echo_raises_precondition_failed_with_the_lease(emulator, env, worker):
    env_id, _ = env
    work_id = emulator.enqueue(env_id)["id"]
    claim(worker, env_id)
    work = worker.beta.environments.work
    first = work.heartbeat(work_id, environment_id=env_id, expected_last_heartbeat=NO_HEARTBEAT)
    second = work.heartbeat(work_id, environment_id=env_id, expected_last_heartbeat=first.last_heartbeat)

    with pytest.raises(BetaHeartbeatPreconditionFailedError) as raised:
        work.heartbeat(work_id, environment_id=env_id, expected_last_heartbeat=first.last_heartbeat)
    error = raised.value
    assert error.status_code == 412 and error.error_code == "heartbeat_precondition_failed"
    lease = error.details.current_state
    assert lease.last_heartbeat == second.last_heartbeat
    assert (lease.state, lease.lease_extended, lease.ttl_seconds) == ("active", False, second.ttl_seconds)
    assert error.request_id and error.request_id.startswith("req_")

    with pytest.raises(BetaHeartbeatPreconditionFailedError):  # NO_HEARTBEAT once someone holds the lease
        work.heartbeat(work_id, environment_id=env_id, expected_last_heartbeat=NO_HEARTBEAT)


def test_the_sessions_token_from_the_secret_drives_its_own_item(emulator, env, api):
    env_id, key = env
    work_id = emulator.enqueue(env_id)["id"]
    other_id = emulator.enqueue(env_id)["id"]
    with anthropic.Anthropic(
        auth_token=key, base_url=emulator.base_url, _strict_response_validation=True
    ) as worker:
        item = worker.beta.environments.work.poll(env_id)
    assert item is not None and item.id == work_id and item.secret
    token = sessions_token(item.secret)
    assert token.startswith("sk-ant-req-")
    with anthropic.Anthropic(
        auth_token=token, base_url=emulator.base_url, _strict_response_validation=True, max_retries=0
    ) as session:
        work = session.beta.environments.work
        assert work.ack(work_id, environment_id=env_id).state == "starting"
        beat = work.heartbeat(work_id, environment_id=env_id, expected_last_heartbeat=NO_HEARTBEAT)
        assert beat.state == "active"
        with pytest.raises(anthropic.PermissionDeniedError):
            work.ack(other_id, environment_id=env_id)
        with pytest.raises(anthropic.PermissionDeniedError):
            work.stats(env_id)
        assert work.stop(work_id, environment_id=env_id, force=True).state == "stopped"


def test_an_unacked_delivery_is_reclaimed_after_reclaim_older_than_ms(emulator, env, worker, api):
    env_id, _ = env
    work_id = emulator.enqueue(env_id)["id"]
    work = worker.beta.environments.work
    first = work.poll(env_id)
    assert first is not None and first.id == work_id
    assert work.poll(env_id) is None  # delivered, not yet reclaimable (default 5000 ms)
    stats = api.beta.environments.work.stats(env_id)
    assert (stats.depth, stats.pending) == (0, 1)

    emulator.advance_clock(6)
    second = work.poll(env_id)
    assert second is not None and second.id == work_id and second.state == "queued"
    assert sessions_token(second.secret) != sessions_token(first.secret)

    assert work.poll(env_id, reclaim_older_than_ms=60_000) is None
    third = work.poll(env_id, reclaim_older_than_ms=0)
    assert third is not None and third.id == work_id
    assert work.ack(work_id, environment_id=env_id).state == "starting"
    assert work.poll(env_id, reclaim_older_than_ms=0) is None  # acked work is out of the queue


def test_graceful_then_forced_stop_then_a_second_stop_conflicts(emulator, env, worker, api):
    env_id, _ = env
    work_id = emulator.enqueue(env_id)["id"]
    claim(worker, env_id)
    beat = worker.beta.environments.work.heartbeat(
        work_id, environment_id=env_id, expected_last_heartbeat=NO_HEARTBEAT
    )
    work = api.beta.environments.work

    graceful = work.stop(work_id, environment_id=env_id)
    assert graceful.state == "stopping" and graceful.stop_requested_at and graceful.stopped_at is None
    told = worker.beta.environments.work.heartbeat(
        work_id, environment_id=env_id, expected_last_heartbeat=beat.last_heartbeat
    )
    assert told.state == "stopping"

    forced = work.stop(work_id, environment_id=env_id, force=True)
    assert forced.state == "stopped" and forced.stopped_at
    after = worker.beta.environments.work.heartbeat(
        work_id, environment_id=env_id, expected_last_heartbeat="stale"
    )
    assert (after.state, after.lease_extended) == ("stopped", False)

    with pytest.raises(anthropic.ConflictError) as raised:
        work.stop(work_id, environment_id=env_id)
    assert raised.value.status_code == 409 and raised.value.request_id


def test_a_second_stop_conflicts_after_the_sdks_own_retries(emulator, env):
    env_id, _ = env
    work_id = emulator.enqueue(env_id)["id"]
    with anthropic.Anthropic(
        api_key=emulator.api_key, base_url=emulator.base_url, _strict_response_validation=True
    ) as client:
        assert client.beta.environments.work.stop(work_id, environment_id=env_id).state == "stopped"
        emulator.reset_requests()
        with pytest.raises(anthropic.ConflictError):
            client.with_options(max_retries=1).beta.environments.work.stop(work_id, environment_id=env_id)
    assert emulator.requests()["by_route"] == {
        "stop": 2
    }  # the SDK retries a 409; the emulator says nothing else


def test_list_auto_paginates_newest_first_with_cursors_stable_under_inserts(emulator, env, worker):
    env_id, _ = env
    enqueued = [emulator.enqueue(env_id, metadata={"n": str(n)})["id"] for n in range(8)]
    first_page = worker.beta.environments.work.list(env_id, limit=3)
    assert [item.id for item in first_page.data] == enqueued[::-1][:3]
    emulator.enqueue(env_id)  # newer than everything: must not shift what the following pages hold

    pages = list(first_page.iter_pages())
    assert len(pages) == 3
    assert [len(page.data) for page in pages] == [3, 3, 2]
    assert pages[-1].next_page is None
    assert [item.id for page in pages for item in page.data] == enqueued[::-1]

    everything = [item.id for item in worker.beta.environments.work.list(env_id, limit=4)]
    assert len(everything) == 9 and everything[1:] == enqueued[::-1]


def test_stats_agree_with_what_was_enqueued_delivered_and_acked(emulator, env, worker, api):
    env_id, _ = env
    empty = api.beta.environments.work.stats(env_id)
    assert (empty.depth, empty.pending, empty.oldest_queued_at, empty.workers_polling) == (0, 0, None, 0)
    items = [emulator.enqueue(env_id) for _ in range(5)]
    work = worker.beta.environments.work
    for worker_id in ("w-1", "w-2"):
        work.poll(env_id, anthropic_worker_id=worker_id)
    work.ack(items[0]["id"], environment_id=env_id)
    work.poll(env_id, anthropic_worker_id="w-1")

    stats = api.beta.environments.work.stats(env_id)
    assert (stats.depth, stats.pending, stats.workers_polling) == (2, 2, 2)
    assert stats.oldest_queued_at == items[1]["created_at"]  # acked work has left the stream
    assert worker.beta.environments.work.stats(env_id).depth == 2  # the environment key may read stats too

    emulator.advance_clock(31)
    assert api.beta.environments.work.stats(env_id).workers_polling == 0


def test_work_metadata_merges_with_null_deletes_and_is_validated(emulator, env, api):
    env_id, _ = env
    work_id = emulator.enqueue(env_id, metadata={"team": "infra", "ticket": "OPS-1"})["id"]
    work = api.beta.environments.work
    item = work.update(work_id, environment_id=env_id, metadata={"ticket": None, "owner": "dana"})
    assert item.metadata == {"team": "infra", "owner": "dana"}

    with pytest.raises(BetaInvalidMetadataError) as raised:
        work.update(work_id, environment_id=env_id, metadata={f"k{n}": "v" for n in range(15)})
    assert raised.value.error_code == "invalid_metadata"
    with pytest.raises(BetaInvalidMetadataError):
        work.update(work_id, environment_id=env_id, metadata={"x" * 65: "v"})
    with pytest.raises(BetaInvalidMetadataError):
        work.update(work_id, environment_id=env_id, metadata={"note": "v" * 513})
    assert work.retrieve(work_id, environment_id=env_id).metadata == {"team": "infra", "owner": "dana"}


def test_environments_create_retrieve_list_update_archive_delete(api):
    environments = api.beta.environments
    created = environments.create(
        name="builders", config={"type": "self_hosted"}, description="CI", metadata={"team": "infra"}
    )
    assert created.config.type == "self_hosted" and created.archived_at is None
    cloud = environments.create(name="cloudy")
    assert cloud.config.type == "cloud" and cloud.config.networking.type == "unrestricted"

    assert environments.retrieve(created.id).name == "builders"
    assert [env.id for env in environments.list()] == [cloud.id, created.id]

    updated = environments.update(
        created.id, name="builders-2", description=None, metadata={"team": None, "tier": "gold"}
    )
    assert (updated.name, updated.description, updated.metadata) == ("builders-2", None, {"tier": "gold"})

    archived = environments.archive(created.id)
    assert archived.archived_at
    assert [env.id for env in environments.list()] == [cloud.id]
    assert {env.id for env in environments.list(include_archived=True)} == {cloud.id, created.id}
    with pytest.raises(BetaEnvironmentArchivedError):
        environments.update(created.id, name="again")

    deleted = environments.delete(created.id)
    assert (deleted.id, deleted.type) == (created.id, "environment_deleted")
    with pytest.raises(anthropic.NotFoundError):
        environments.retrieve(created.id)


def test_environments_list_paginates(api):
    ids = [api.beta.environments.create(name=f"env-{n}", config={"type": "self_hosted"}).id for n in range(5)]
    pages = list(api.beta.environments.list(limit=2).iter_pages())
    assert len(pages) == 3
    assert [env.id for page in pages for env in page.data] == ids[::-1]


def test_the_older_x_api_key_header_is_accepted_as_well_as_bearer(emulator, env):
    env_id, _ = env
    work_id = emulator.enqueue(env_id)["id"]
    with anthropic.Anthropic(
        base_url=emulator.base_url,
        default_headers={"X-Api-Key": emulator.api_key},
        _strict_response_validation=True,
    ) as old_style:
        assert old_style.beta.environments.work.retrieve(work_id, environment_id=env_id).id == work_id
    with anthropic.Anthropic(
        api_key=emulator.api_key, base_url=emulator.base_url, _strict_response_validation=True
    ) as new_style:
        assert new_style.beta.environments.work.retrieve(work_id, environment_id=env_id).id == work_id
    assert emulator.requests()["by_route_and_credential"]["retrieve"] == {"api_key": 2}


def test_beta_true_query_of_older_sdks_routes_the_same(emulator, env, api):
    env_id, _ = env
    work_id = emulator.enqueue(env_id)["id"]
    item = api.beta.environments.work.retrieve(work_id, environment_id=env_id, extra_query={"beta": "true"})
    assert item.id == work_id
    stats = api.beta.environments.work.stats(env_id, extra_query={"beta": "true"})
    assert stats.depth == 1


def test_credentials_are_checked_per_endpoint(emulator, env, worker, api):
    env_id, _ = env
    work_id = emulator.enqueue(env_id)["id"]
    with pytest.raises(anthropic.PermissionDeniedError):
        api.beta.environments.work.list(env_id)  # list takes the environment key only
    with pytest.raises(anthropic.PermissionDeniedError):
        api.beta.environments.work.poll(env_id)
    with pytest.raises(anthropic.PermissionDeniedError):
        worker.beta.environments.work.retrieve(work_id, environment_id=env_id)
    with pytest.raises(anthropic.PermissionDeniedError):
        worker.beta.environments.list()
    with (
        anthropic.Anthropic(
            auth_token="sk-ant-oat01-nobody", base_url=emulator.base_url, _strict_response_validation=True
        ) as stranger,
        pytest.raises(anthropic.AuthenticationError),
    ):
        stranger.beta.environments.work.poll(env_id)


def test_healthcheck_items_parse_only_with_loose_validation(emulator, env):
    env_id, key = env
    work_id = emulator.enqueue(env_id, type="healthcheck")["id"]
    with anthropic.Anthropic(auth_token=key, base_url=emulator.base_url, max_retries=0) as loose:
        item = loose.beta.environments.work.poll(env_id)
        assert item is not None and item.id == work_id
        assert item.data.type == "healthcheck" and item.data.id
        assert loose.beta.environments.work.ack(work_id, environment_id=env_id).state == "starting"
    emulator.enqueue(env_id, type="healthcheck")
    strict = anthropic.Anthropic(
        auth_token=key, base_url=emulator.base_url, max_retries=0, _strict_response_validation=True
    )
    # SDK 2.10.0 knows only session work data; the TypeScript SDK models healthchecks.
    with strict, pytest.raises(anthropic.APIResponseValidationError):
        strict.beta.environments.work.poll(env_id)
