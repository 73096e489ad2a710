"""The work index kept in step by the live feed, against the emulator over real HTTP: the old stuck item buried
under thousands of newer stopped ones is found, the upstream cost once filled stays under the budget, a restart
carries on without walking the list again, and a 429 slows the feed down for as long as the Work API asked."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from live_support import reset_local_state, wait_until
from pages_support import environment

from dashboard.index import queries
from dashboard.index.models import IndexedEnvironment
from dashboard.live import feed
from dashboard.live.feed import env_key

pytestmark = pytest.mark.django_db(transaction=True)

BUDGET = 600  # requests a minute for the environment; the feed polls every half second (120 stats polls)
HISTORY = 2500


def buried_environment(emulator, name: str) -> tuple[str, str]:
    """An item claimed, heartbeated once and abandoned an hour ago, under 2,500 newer stopped items."""
    env, _ = environment(emulator, name)
    created = emulator.bulk_create(
        env["id"],
        {
            "count": 1,
            "state": "active",
            "age_seconds": 4000,
            "heartbeat_age_seconds": 3500,
            "lease_expires_in_seconds": 86400,
        },
    )
    emulator.bulk_create(
        env["id"], {"count": HISTORY, "state": "stopped", "age_seconds": 3000, "spacing_seconds": 1}
    )
    return env["id"], created["ids"][0]


def stuck_ids(env_id: str) -> list[str]:
    return list(queries.stuck_items(env_id).values_list("work_id", flat=True))


def list_requests(emulator, env_id: str) -> int:
    return int(emulator.requests().get("by_environment", {}).get(env_id, {}).get("list", 0))


async def test_an_abandoned_item_under_thousands_of_stopped_ones_is_found_within_the_budget(
    live_runtime, upstream, settings
):
    settings.INDEX_REQUESTS_PER_MINUTE = BUDGET
    env_id, buried = await sync_to_async(buried_environment)(upstream, "buried")
    started = time.monotonic()
    live_runtime.watch([env_key(env_id)])

    # Found: in the index's stuck set (the stuck page, the filter, bulk "every stuck item") and the tile's count.
    await wait_until(lambda: sync_to_async(stuck_ids)(env_id), timeout=30)
    found_after = time.monotonic() - started
    assert await sync_to_async(stuck_ids)(env_id) == [buried]
    feed_ = live_runtime.feeds[env_id]
    await wait_until(lambda: feed_.snapshot is not None and feed_.snapshot.stuck == 1, timeout=5)
    state = await sync_to_async(IndexedEnvironment.objects.get)(environment_id=env_id)
    assert state.filled and state.walk_pages == HISTORY // 100 + 1
    print(f"\nburied item found after {found_after:.1f} s ({state.walk_pages} pages walked)")

    # Once filled, the cost follows the work that can still change (one live item), not the 2,501 that exist.
    await sync_to_async(upstream.reset_requests)()
    window = 6.0
    await asyncio.sleep(window)
    per_minute = await sync_to_async(upstream.environment_requests)(env_id) * 60 / window
    print(f"upstream requests once filled: {per_minute:.0f} a minute (budget {BUDGET})")
    assert per_minute < BUDGET
    live_runtime.unwatch([env_key(env_id)])


async def test_a_restart_carries_on_and_does_not_walk_the_list_again(live_runtime, upstream, settings):
    settings.INDEX_REQUESTS_PER_MINUTE = BUDGET
    env_id, _ = await sync_to_async(buried_environment)(upstream, "restarted")
    live_runtime.watch([env_key(env_id)])
    # Stop half-way through the fill walk.
    await wait_until(
        lambda: sync_to_async(
            IndexedEnvironment.objects.filter(environment_id=env_id, walk_pages__gte=8).exists
        )(),
        timeout=20,
    )
    await feed.shutdown()
    reset_local_state()
    halfway = await sync_to_async(IndexedEnvironment.objects.get)(environment_id=env_id)
    assert not halfway.filled
    walked = list_requests(upstream, env_id)

    # A new runtime (a restarted dashboard) on the same database finishes the walk from where it stopped.
    runtime = feed.runtime()
    runtime.ensure_started()
    runtime.watch([env_key(env_id)])
    await wait_until(
        lambda: sync_to_async(IndexedEnvironment.objects.filter(environment_id=env_id, filled=True).exists)(),
        timeout=30,
    )
    done = await sync_to_async(IndexedEnvironment.objects.get)(environment_id=env_id)
    pages = HISTORY // 100 + 1
    assert done.walk_pages == pages
    # Every page read once: the first run's pages plus the rest, plus at most a head read a round.
    total = await sync_to_async(list_requests)(upstream, env_id)
    rounds_after = runtime.feeds[env_id].polls
    assert total - walked <= (pages - halfway.walk_pages) + rounds_after + 1, (total, walked, rounds_after)

    # Filled, restarted again: no page past the head is read.
    await feed.shutdown()
    reset_local_state()
    await sync_to_async(upstream.reset_requests)()
    runtime = feed.runtime()
    runtime.ensure_started()
    runtime.watch([env_key(env_id)])
    await wait_until(lambda: env_id in runtime.feeds and runtime.feeds[env_id].polls >= 4, timeout=10)
    polls = runtime.feeds[env_id].polls
    assert await sync_to_async(list_requests)(upstream, env_id) <= polls + 1
    assert await sync_to_async(stuck_ids)(env_id)
    runtime.unwatch([env_key(env_id)])


async def test_a_429_slows_the_feed_down_for_as_long_as_asked_and_the_screens_say_so(live_runtime, upstream):
    env, _ = await sync_to_async(environment)(upstream, "slowed")
    env_id = env["id"]
    live_runtime.watch([env_key(env_id)])
    await wait_until(lambda: env_id in live_runtime.feeds and live_runtime.feeds[env_id].snapshot is not None)
    feed_ = live_runtime.feeds[env_id]
    await sync_to_async(upstream.set_fault)(route="stats", status=429, retry_after=5, count=1)
    await wait_until(lambda: feed_.snapshot.stale is not None, timeout=5)
    hit_at = time.monotonic()
    assert feed_.snapshot.stale.reason.startswith(
        "The Work API is rate limiting the dashboard: slowed down until "
    )
    await sync_to_async(upstream.reset_requests)()

    # No call at all for that environment while the pause lasts (stats and index alike).
    await asyncio.sleep(3.5)
    assert await sync_to_async(upstream.environment_requests)(env_id) == 0
    state = await sync_to_async(IndexedEnvironment.objects.get)(environment_id=env_id)
    assert state.rate_limited_status == 429 and state.rate_limited_until is not None

    # Then back to normal on its own.
    await wait_until(lambda: feed_.snapshot.stale is None, timeout=6)
    assert time.monotonic() - hit_at >= 4.5
    assert await sync_to_async(upstream.environment_requests)(env_id) > 0
    live_runtime.unwatch([env_key(env_id)])
