"""The simulated worker fleet against the emulator over real HTTP: healthy workers, crashes, ignored stops,
slow acks, the producer, and what the stats show."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from workqueue.client import WorkAPIClient
from workqueue.fleet import Fleet, FleetConfig, FleetEnvironment, assign_behaviours
from workqueue.poller import Backoff

QUICK = FleetConfig(
    workers_per_env=1,
    work_seconds=(0.3, 0.5),
    heartbeat_interval=(0.05, 0.1),
    block_ms=20,
    idle_sleep=(0.02, 0.05),
    backoff=Backoff(scale=0.01, cap=0.05, jitter=0.01),
    seed=7,
)


def quick(**changes):
    return dataclasses.replace(QUICK, **changes)


async def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
def env(emulator):
    environment, key = emulator.create_environment("fleet")
    return FleetEnvironment(environment["id"], key)


@pytest.fixture
async def client(emulator):
    async with WorkAPIClient(api_key=emulator.api_key, base_url=emulator.base_url, retry_total=0) as c:
        yield c


async def states(client, environment_id, work_ids):
    return [(await client.retrieve_work(environment_id, work_id)).state for work_id in work_ids]


async def test_healthy_workers_heartbeat_and_finish_their_items(emulator, env, client):
    work_ids = [emulator.enqueue(env.environment_id)["id"] for _ in range(3)]
    async with Fleet(emulator.base_url, [env], quick(workers_per_env=2)) as fleet:
        await wait_until(lambda: fleet.counters.finished == 3)
    assert await states(client, env.environment_id, work_ids) == ["stopped"] * 3
    for work_id in work_ids:
        item = await client.retrieve_work(env.environment_id, work_id)
        assert item.started_at is not None  # heartbeats made it active before it finished
    c = fleet.counters
    assert (c.acks, c.stops, c.errors, c.leases_lost) == (3, 3, 0, 0)
    # At least NO_HEARTBEAT then one echo per item: a wrong echo would have been a 412 (a lost lease).
    assert c.heartbeats >= 6
    counts = emulator.requests()["by_route_and_credential"]
    assert counts["heartbeat"] == {"sessions_token": c.heartbeats}


async def test_workers_share_connection_pools_in_groups(emulator, env, client):
    work_ids = [emulator.enqueue(env.environment_id)["id"] for _ in range(5)]
    async with Fleet(emulator.base_url, [env], quick(workers_per_env=5, workers_per_client=2)) as fleet:
        # Five workers in groups of two: three clients, each with a pool of its own.
        assert len(fleet.clients) == 3
        assert len({id(c._http) for c in fleet.clients}) == 3
        await wait_until(lambda: fleet.counters.finished == 5)
    assert await states(client, env.environment_id, work_ids) == ["stopped"] * 5
    assert fleet.counters.errors == 0
    # One pool for the whole fleet, as before, on request.
    whole = Fleet(emulator.base_url, [env], quick(workers_per_env=5, workers_per_client=0))
    assert len(whole.clients) == 1
    await whole.stop()
    with pytest.raises(ValueError, match="workers_per_client"):
        quick(workers_per_client=-1)


async def test_workers_polling_counts_every_worker(emulator, env, client):
    other_environment, other_key = emulator.create_environment("fleet-2")
    other = FleetEnvironment(other_environment["id"], other_key)
    async with Fleet(
        emulator.base_url, [env, other], quick(workers_per_env=3, crash=0.2, slow_ack=0.2)
    ) as fleet:
        assert len({w.worker_id for w in fleet.workers}) == 6
        await wait_until(lambda: fleet.counters.polls >= 12)
        for environment in (env, other):
            stats = await client.work_stats(environment.environment_id)
            assert stats.workers_polling == 3


async def test_a_crashing_worker_leaves_its_item_active_with_an_old_heartbeat(emulator, env, client):
    work_id = emulator.enqueue(env.environment_id)["id"]
    config = quick(crash=1.0, work_seconds=(5, 5), crash_after=(0.0, 0.0), desired_ttl_seconds=600)
    async with Fleet(emulator.base_url, [env], config) as fleet:
        await wait_until(lambda: fleet.counters.crashes == 1)
    emulator.advance_clock(200)
    item = await client.retrieve_work(env.environment_id, work_id)
    assert item.state == "active"
    emulator_now = datetime.now(UTC) + timedelta(seconds=200)
    assert emulator_now - item.latest_heartbeat_at > timedelta(seconds=190)
    assert item.stopped_at is None


async def test_an_ignore_stop_worker_leaves_its_item_stopping(emulator, env, client):
    work_id = emulator.enqueue(env.environment_id)["id"]
    async with Fleet(emulator.base_url, [env], quick(ignore_stop=1.0, work_seconds=(0.2, 0.2))) as fleet:
        await wait_until(lambda: fleet.counters.stops_ignored == 1)
        told = fleet.counters.heartbeats
        await wait_until(lambda: fleet.counters.heartbeats >= told + 2)
        item = await client.retrieve_work(env.environment_id, work_id)
    assert item.state == "stopping"
    # It asked to wind down, and kept heartbeating afterwards instead of stopping.
    assert item.latest_heartbeat_at > item.stop_requested_at
    assert fleet.counters.finished == 0
    assert (await client.retrieve_work(env.environment_id, work_id)).state == "stopping"


async def test_a_healthy_worker_honours_a_graceful_stop(emulator, env, client):
    work_id = emulator.enqueue(env.environment_id)["id"]
    async with Fleet(emulator.base_url, [env], quick(work_seconds=(30, 30))) as fleet:
        await wait_until(lambda: fleet.counters.heartbeats >= 1)
        await client.stop_work(env.environment_id, work_id)
        await wait_until(lambda: fleet.counters.stops == 1)
    assert await states(client, env.environment_id, [work_id]) == ["stopped"]


async def test_a_slow_acker_shows_as_pending(emulator, env, client):
    work_id = emulator.enqueue(env.environment_id)["id"]
    async with Fleet(emulator.base_url, [env], quick(slow_ack=1.0, slow_ack_seconds=(1.5, 1.5))) as fleet:
        await wait_until(lambda: fleet.counters.deliveries == 1)
        stats = await client.work_stats(env.environment_id)
        assert (stats.depth, stats.pending) == (0, 1)
        await wait_until(lambda: fleet.counters.acks == 1)
        stats = await client.work_stats(env.environment_id)
        assert (stats.depth, stats.pending) == (0, 0)
    assert fleet.counters.slow_acks == 1
    assert await states(client, env.environment_id, [work_id]) == ["stopped"]


async def test_the_producer_keeps_the_queue_moving(emulator, env, client):
    config = quick(enqueue_per_minute=600, workers_per_env=2)
    async with Fleet(emulator.base_url, [env], config, enqueue=emulator.enqueue) as fleet:
        await wait_until(lambda: fleet.counters.enqueued >= 3 and fleet.counters.acks >= 3)
    items = [item async for item in client.iter_work(env.environment_id, environment_key=env.environment_key)]
    # An enqueue still in flight when the fleet shut down may have landed without being counted.
    assert len(items) >= fleet.counters.enqueued
    assert sum(item.acknowledged_at is not None or item.state == "stopped" for item in items) >= 3


async def test_shutting_down_stops_what_healthy_workers_hold(emulator, env, client):
    work_id = emulator.enqueue(env.environment_id)["id"]
    fleet = Fleet(emulator.base_url, [env], quick(work_seconds=(30, 30)))
    running = asyncio.create_task(fleet.run())
    await wait_until(lambda: fleet.counters.heartbeats >= 1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await states(client, env.environment_id, [work_id]) == ["stopped"]
    assert "1 worker in 1 environment" in fleet.summary() and env.environment_key not in fleet.summary()


def test_behaviours_are_shared_out_by_fraction():
    assert assign_behaviours(10, FleetConfig(crash=0.1, ignore_stop=0.2, slow_ack=0.3)) == (
        ["crash"] + ["ignore_stop"] * 2 + ["slow_ack"] * 3 + ["normal"] * 4
    )
    # A small fleet still gets one of each asked-for kind.
    assert assign_behaviours(3, FleetConfig(crash=0.1, slow_ack=0.1)) == ["crash", "slow_ack", "normal"]
    with pytest.raises(ValueError):
        FleetConfig(crash=0.6, ignore_stop=0.6)


def test_the_fleet_command_serves_the_emulators_environments(emulator):
    environment, _ = emulator.create_environment("command")
    for _ in range(2):
        emulator.enqueue(environment["id"])
    out = io.StringIO()
    call_command(
        "fleet",
        "--base-url",
        emulator.base_url,
        "--from-emulator",
        "--api-key",
        emulator.api_key,
        "--workers-per-env",
        "2",
        "--work-seconds",
        "0.2:0.3",
        "--duration",
        "1.5",
        "--report-every",
        "0.5",
        stdout=out,
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == f"fleet: serving {environment['id']} at {emulator.base_url}"
    assert len(lines) >= 3  # periodic summaries, then the last one
    assert "acks 2 " in lines[-1] and "finished 2 " in lines[-1]
    assert "sk-ant-" not in out.getvalue()


def test_the_fleet_command_never_repeats_a_mistyped_key():
    with pytest.raises(CommandError) as raised:
        call_command("fleet", "--environment", "sk-ant-oat01-pasted-without-its-id")
    assert "ENV_ID=ENV_KEY" in str(raised.value)
    assert "sk-ant" not in str(raised.value)
