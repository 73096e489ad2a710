"""The dashboard's total budget of upstream requests (``UPSTREAM_REQUESTS_PER_MINUTE``).

Requests go to the emulator over real HTTP through the transport every Work API client of the dashboard uses; what
the budget does not cover is not sent (counted at the emulator). Two instances share one budget through Redis.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import httpx
import pytest

from dashboard import budget
from dashboard.budget import BudgetedTransport, BudgetExhausted, LocalCounts, RedisCounts, UpstreamBudget
from dashboard.live.metrics import InstrumentedTransport
from workqueue.client import WorkAPIClient

# Mid-minute, fixed: a test never straddles two budget minutes.
NOON = 1_800_000_030.0


def budgeted_client(emulator, limit: int, counts=None) -> tuple[WorkAPIClient, UpstreamBudget]:
    spend = UpstreamBudget(limit, counts or LocalCounts(), clock=lambda: NOON)
    transport = BudgetedTransport(InstrumentedTransport(httpx.AsyncHTTPTransport()), spend)
    client = WorkAPIClient(
        api_key=emulator.api_key, base_url=emulator.base_url, retry_total=0, transport=transport
    )
    return client, spend


def test_requests_past_the_budget_are_not_sent_and_say_so(emulator):
    environment, _ = emulator.create_environment("budgeted")
    env_id = environment["id"]
    emulator.reset_requests()

    async def run() -> list[str]:
        client, _ = budgeted_client(emulator, 5)
        outcomes = []
        async with client:
            for _ in range(8):
                try:
                    await client.work_stats(env_id)
                    outcomes.append("sent")
                except BudgetExhausted as exc:
                    outcomes.append(exc.message)
        return outcomes

    outcomes = asyncio.run(run())
    assert outcomes[:5] == ["sent"] * 5
    assert all("budget of 5 Work API requests a minute" in o and "Try again in" in o for o in outcomes[5:])
    assert emulator.environment_requests(env_id) == 5


def test_people_go_first_then_watched_feeds_then_background_work(emulator):
    environment, _ = emulator.create_environment("priorities")
    env_id = environment["id"]

    async def take(client: WorkAPIClient, kind: budget.Priority, n: int) -> int:
        sent = 0
        with budget.priority(kind):
            for _ in range(n):
                try:
                    await client.work_stats(env_id)
                    sent += 1
                except BudgetExhausted:
                    pass
        return sent

    async def run() -> tuple[int, int, int]:
        client, _ = budgeted_client(emulator, 20)
        async with client:
            background = await take(client, "background", 20)  # up to 70 %
            watched = await take(client, "watched", 20)  # up to 90 %
            interactive = await take(client, "interactive", 20)  # the rest
        return background, watched, interactive

    assert asyncio.run(run()) == (14, 4, 2)


def test_background_work_is_shared_between_environments():
    spend = UpstreamBudget(20, LocalCounts(), clock=lambda: NOON)

    async def run() -> dict[str, int]:
        taken = {"env_a": 0, "env_b": 0}
        for _ in range(20):
            for env_id in taken:
                if (await spend.take(env_id, kind="background")).allowed:
                    taken[env_id] += 1
        return taken

    # 70 % of 20 is 14, half each: neither environment's fill walk crowds out the other's.
    assert asyncio.run(run()) == {"env_a": 7, "env_b": 7}


def test_no_budget_means_every_request_is_sent(emulator):
    environment, _ = emulator.create_environment("unbudgeted")

    async def run() -> int:
        client, _ = budgeted_client(emulator, 0)
        async with client:
            for _ in range(30):
                await client.work_stats(environment["id"])
        return 30

    assert asyncio.run(run()) == 30


def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL", "")
    if not url:
        reason = "TEST_REDIS_URL is not set: the shared budget needs Redis"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(reason + "; REQUIRE_SERVICES=1 needs it")
        pytest.skip(reason)
    return url


def test_instances_on_one_redis_share_one_budget(emulator):
    url = redis_url()
    environment, _ = emulator.create_environment("shared")
    env_id = environment["id"]
    prefix = f"test-budget-{uuid.uuid4().hex}"
    emulator.reset_requests()

    async def run() -> tuple[int, int]:
        first, _ = budgeted_client(emulator, 10, RedisCounts(url, prefix))
        second, _ = budgeted_client(emulator, 10, RedisCounts(url, prefix))
        sent = [0, 0]
        async with first, second:
            for _ in range(10):
                for i, client in enumerate((first, second)):
                    try:
                        await client.work_stats(env_id)
                        sent[i] += 1
                    except BudgetExhausted:
                        pass
        return sent[0], sent[1]

    a, b = asyncio.run(run())
    assert a + b == 10 and a == b == 5
    assert emulator.environment_requests(env_id) == 10
