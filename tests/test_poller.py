"""The seed's work poller against the emulator over real HTTP: claim, ack, stop after the body, backoff, failures."""

from __future__ import annotations

import asyncio
import re

import pytest

from workqueue.client import AuthenticationFailed, WorkAPIClient
from workqueue.poller import Backoff, WorkPoller, default_worker_id

FAST = Backoff(scale=0.01, cap=0.05, jitter=0.01)


@pytest.fixture
def env(emulator):
    environment, key = emulator.create_environment("poller")
    return environment["id"], key


@pytest.fixture
async def client(emulator):
    async with WorkAPIClient(api_key=emulator.api_key, base_url=emulator.base_url, retry_total=0) as c:
        yield c


def poller_for(client, env, **kwargs):
    environment_id, key = env
    kwargs.setdefault("block_ms", 10)
    kwargs.setdefault("backoff", FAST)
    kwargs.setdefault("idle_sleep", (0.01, 0.02))
    return WorkPoller(client, environment_id, key, **kwargs)


async def test_it_claims_acks_and_stops_each_item_after_the_body(emulator, env, client):
    environment_id, _ = env
    enqueued = [emulator.enqueue(environment_id)["id"] for _ in range(2)]
    seen = []
    async with poller_for(client, env, drain=True, worker_id="worker-a") as poller:
        async for claim in poller:
            # Inside the body the item is acked (starting) and carries its own sessions token.
            current = await client.retrieve_work(environment_id, claim.id)
            seen.append(
                (
                    claim.id,
                    current.state,
                    claim.secret is not None,
                    claim.credential.startswith("sk-ant-req-"),
                )
            )
    assert seen == [(enqueued[0], "starting", True, True), (enqueued[1], "starting", True, True)]
    for work_id in enqueued:
        item = await client.retrieve_work(environment_id, work_id)
        # A graceful stop of an acked item asks it to wind down.
        assert item.state == "stopping"
        assert item.stop_requested_at is not None
    counts = emulator.requests()["by_route_and_credential"]
    assert counts["ack"] == {"sessions_token": 2}
    assert counts["stop"] == {"sessions_token": 2}
    assert counts["poll"] == {"environment_key": 3}  # two deliveries and the empty poll that ends the drain
    assert poller.counters.as_dict() == {
        "polls": 3,
        "empty_polls": 1,
        "deliveries": 2,
        "acks": 2,
        "stops": 2,
        "errors": 0,
        "backoffs": 0,
    }
    stats = await client.work_stats(environment_id)
    assert stats.workers_polling == 1


async def test_the_default_worker_id_is_the_host_and_12_hex(client, env):
    assert re.fullmatch(r".+-[0-9a-f]{12}", default_worker_id())
    assert default_worker_id() != default_worker_id()
    assert poller_for(client, env).worker_id != poller_for(client, env).worker_id


async def test_a_409_on_the_stop_after_the_body_is_ignored(emulator, env, client):
    environment_id, _ = env
    work_id = emulator.enqueue(environment_id)["id"]
    async with poller_for(client, env, drain=True) as poller:
        async for claim in poller:
            await client.stop_work(environment_id, claim.id, force=True)
    assert (await client.retrieve_work(environment_id, work_id)).state == "stopped"
    assert emulator.requests()["by_route"]["stop"] == 2  # ours, then the poller's, answered 409
    assert poller.counters.stops == 0
    assert poller.counters.errors == 0


async def test_transient_poll_errors_back_off_then_recover(emulator, env, client):
    environment_id, _ = env
    work_id = emulator.enqueue(environment_id)["id"]
    emulator.set_fault(route="poll", status=503, count=2)
    async with poller_for(client, env, drain=True) as poller:
        claimed = [claim.id async for claim in poller]
    assert claimed == [work_id]
    assert poller.counters.errors == 2
    assert poller.counters.backoffs == 2
    assert emulator.requests()["by_route"]["poll"] == 4  # two 503s, the delivery, the empty poll


async def test_backoff_grows_to_the_cap_with_jitter():
    default = Backoff()
    assert 2.0 <= default.delay(1) <= 3.0
    assert 16.0 <= default.delay(4) <= 17.0
    assert 60.0 <= default.delay(12) <= 61.0


async def test_a_fatal_poll_error_raises_out_of_the_loop(emulator, env, client):
    environment_id, _ = env
    emulator.enqueue(environment_id)
    poller = WorkPoller(client, environment_id, "sk-ant-oat01-not-a-real-key", block_ms=10, backoff=FAST)
    with pytest.raises(AuthenticationFailed) as raised:
        async for _ in poller:
            pass
    assert raised.value.status == 401
    assert poller.counters.backoffs == 0
    assert emulator.requests()["by_route"]["poll"] == 1


async def test_a_fatal_ack_failure_force_stops_the_item_and_polls_on(emulator, env, client):
    environment_id, _ = env
    refused = emulator.enqueue(environment_id)["id"]
    accepted = emulator.enqueue(environment_id)["id"]
    emulator.set_fault(route="ack", status=403, count=1)
    async with poller_for(client, env, drain=True) as poller:
        claimed = [claim.id async for claim in poller]
    assert claimed == [accepted]
    assert (await client.retrieve_work(environment_id, refused)).state == "stopped"
    assert (await client.retrieve_work(environment_id, accepted)).state == "stopping"
    counts = emulator.requests()["by_route_and_credential"]
    # The force-stop of the refused item goes out with the environment key; the accepted item's stop with its token.
    assert counts["stop"] == {"environment_key": 1, "sessions_token": 1}
    assert poller.counters.backoffs == 0


async def test_a_transient_ack_failure_drops_the_item_until_it_is_reclaimed(emulator, env, client):
    environment_id, _ = env
    work_id = emulator.enqueue(environment_id)["id"]
    emulator.set_fault(route="ack", status=503, count=1)
    async with poller_for(client, env, drain=True, reclaim_older_than_ms=0) as poller:
        claimed = [claim.id async for claim in poller]
    assert claimed == [work_id]
    assert poller.counters.deliveries == 2
    assert poller.counters.backoffs == 1
    assert emulator.requests()["by_route"]["stop"] == 1


async def test_an_empty_poll_waits_and_polls_again_unless_draining(emulator, env, client):
    environment_id, _ = env
    poller = poller_for(client, env)

    async def first_claim():
        async with poller:
            async for claim in poller:
                return claim.id

    waiting = asyncio.create_task(first_claim())
    await asyncio.sleep(0.3)
    assert not waiting.done()
    work_id = emulator.enqueue(environment_id)["id"]
    assert await asyncio.wait_for(waiting, 5) == work_id
    assert poller.counters.empty_polls >= 2


async def test_leaving_the_loop_early_still_stops_the_item(emulator, env, client):
    environment_id, _ = env
    work_id = emulator.enqueue(environment_id)["id"]
    emulator.enqueue(environment_id)
    with pytest.raises(RuntimeError):
        async with poller_for(client, env, drain=True) as poller:
            async for _ in poller:
                raise RuntimeError("the consumer failed")
    assert (await client.retrieve_work(environment_id, work_id)).state == "stopping"
    assert emulator.requests()["by_route"]["ack"] == 1


async def test_a_released_item_is_left_alone_and_a_claim_block_stops_at_its_end(emulator, env, client):
    environment_id, _ = env
    handed_off = emulator.enqueue(environment_id)["id"]
    served = emulator.enqueue(environment_id)["id"]
    states_after_block = []
    async with poller_for(client, env, drain=True) as poller:
        async for claim in poller:
            if claim.id == handed_off:
                claim.release()
                continue
            async with claim:
                pass
            states_after_block.append((await client.retrieve_work(environment_id, served)).state)
    assert states_after_block == ["stopping"]
    assert (await client.retrieve_work(environment_id, handed_off)).state == "starting"
    assert emulator.requests()["by_route"]["stop"] == 1
