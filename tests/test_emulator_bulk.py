"""The emulator's bulk create: a long history in one call, in any state, read back through the Work API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from workqueue.client import WorkAPIClient


@pytest.fixture
def env(emulator):
    environment, key = emulator.create_environment("bulk")
    return environment["id"], key


async def test_it_creates_thousands_of_items_in_every_state_newest_on_top(emulator, emulator_server, env):
    env_id, key = env
    created = emulator.bulk_create(
        env_id,
        {
            "count": 1,
            "state": "active",
            "age_seconds": 4000,
            "heartbeat_age_seconds": 3500,
            "lease_expires_in_seconds": 86400,
            "metadata": {"owner": "alice"},
        },
        {"count": 2500, "state": "stopped", "age_seconds": 3000, "spacing_seconds": 1},
        {"count": 3, "state": "stopping", "age_seconds": 30, "stop_requested_age_seconds": 5},
        {"count": 2, "state": "queued", "age_seconds": 10},
    )
    assert created["count"] == 2506
    assert "ids" not in created  # more than 1,000: only the count

    async with WorkAPIClient(api_key=emulator_server.api_key, base_url=emulator_server.base_url) as client:
        items = [item async for item in client.iter_work(env_id, environment_key=key, limit=100)]
        stats = await client.work_stats(env_id)
    assert len(items) == 2506
    assert [i.state for i in items[:5]] == ["queued", "queued", "stopping", "stopping", "stopping"]
    assert items[-1].state == "active" and items[-1].metadata == {"owner": "alice"}
    now = datetime.now(UTC)
    assert now - items[-1].latest_heartbeat_at > timedelta(seconds=3400)
    assert all(i.state == "stopped" and i.stopped_at is not None for i in items[5:-1])
    assert [i.created_at for i in items] == sorted((i.created_at for i in items), reverse=True)
    assert stats.depth == 2


async def test_an_abandoned_lease_expires_as_any_other(emulator, emulator_server, env):
    env_id, _ = env
    created = emulator.bulk_create(
        env_id, {"count": 2, "state": "active", "age_seconds": 600, "heartbeat_age_seconds": 500}
    )
    async with WorkAPIClient(api_key=emulator_server.api_key, base_url=emulator_server.base_url) as client:
        states = {(await client.retrieve_work(env_id, work_id)).state for work_id in created["ids"]}
    assert states == {"queued"}  # the TTL (60 s) ran out 440 s ago: re-queued


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"count": 0}, "count must be a whole number between 1 and 200000"),
        ({"state": "lost"}, "state must be one of queued, starting, active, stopping, stopped"),
        ({"count": 10, "spacing_seconds": 5, "age_seconds": 1}, "age_seconds must cover count"),
        ({"age_seconds": -1}, "age_seconds must be a number of seconds between 0"),
    ],
)
async def test_bad_input_is_refused_with_a_reason_and_creates_nothing(
    emulator, emulator_server, env, group, message
):
    env_id, key = env
    with pytest.raises(httpx.HTTPStatusError) as failure:
        emulator.bulk_create(env_id, {"count": 1}, group)
    assert failure.value.response.status_code == 400
    assert message in failure.value.response.json()["error"]["message"]
    async with WorkAPIClient(api_key=emulator_server.api_key, base_url=emulator_server.base_url) as client:
        assert [item async for item in client.iter_work(env_id, environment_key=key)] == []


async def test_requests_are_counted_per_environment(emulator, emulator_server, env):
    env_id, key = env
    other, _ = emulator.create_environment("other")
    emulator.reset_requests()
    async with WorkAPIClient(api_key=emulator_server.api_key, base_url=emulator_server.base_url) as client:
        await client.work_stats(env_id)
        await client.list_work(env_id, environment_key=key)
        await client.work_stats(other["id"])
    assert emulator.environment_requests(env_id) == 2
    assert emulator.environment_requests(other["id"]) == 1
