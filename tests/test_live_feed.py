"""The live feed against the emulator over real HTTP: one stats poll per environment per interval whatever the
number of viewers, no polling without viewers, stale snapshots on upstream failure and recovery, history samples
and their pruning, and the numbers that reach a socket."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone
from live_support import (
    INTERVAL,
    communicator,
    figure,
    receive_matching,
    session_cookie,
    wait_until,
)
from pages_support import environment, make_user, start_work

from dashboard.index.models import IndexedWork
from dashboard.live.feed import env_key
from dashboard.live.models import QueueSample

pytestmark = pytest.mark.django_db(transaction=True)


def stats_polls(emulator) -> int:
    return int(emulator.requests()["by_route"].get("stats", 0))


async def test_it_polls_each_environment_once_per_interval_whatever_the_number_of_viewers(
    live_runtime, upstream
):
    busy, _ = await sync_to_async(environment)(upstream, "busy")
    quiet, _ = await sync_to_async(environment)(upstream, "quiet")
    cookie = await session_cookie(await sync_to_async(make_user)("viewer"))
    # Eight screens on one environment, one on the other: the upstream must not see the difference.
    viewers = [communicator(f"/ws/live/{busy['id']}/", cookie=cookie) for _ in range(8)]
    viewers.append(communicator(f"/ws/live/{quiet['id']}/", cookie=cookie))
    for viewer in viewers:
        connected, _ = await viewer.connect()
        assert connected
    await wait_until(
        lambda: len(live_runtime.feeds) == 2 and all(f.polls for f in live_runtime.feeds.values())
    )

    await sync_to_async(upstream.reset_requests)()
    polls_before = {e: f.polls for e, f in live_runtime.feeds.items()}
    started = time.monotonic()
    await asyncio.sleep(3.0)
    counted = await sync_to_async(stats_polls)(upstream)
    elapsed = time.monotonic() - started
    polls = {e: f.polls - polls_before[e] for e, f in live_runtime.feeds.items()}

    intervals = elapsed / INTERVAL
    for environment_id, count in polls.items():
        assert math.floor(intervals) - 1 <= count <= math.ceil(intervals) + 1, (
            environment_id,
            count,
            intervals,
        )
    assert abs(counted - sum(polls.values())) <= 2, (counted, polls)
    assert counted <= 2 * (math.ceil(intervals) + 1)
    for viewer in viewers:
        await viewer.disconnect()


async def test_it_does_not_poll_without_viewers_and_stops_when_the_last_one_leaves(
    live_runtime, upstream, settings
):
    settings.INDEX_ALL_ENVIRONMENTS = False  # only what is watched
    env, _ = await sync_to_async(environment)(upstream, "nobody watches")
    await asyncio.sleep(3 * INTERVAL)
    assert await sync_to_async(stats_polls)(upstream) == 0
    assert live_runtime.feeds == {}

    cookie = await session_cookie(await sync_to_async(make_user)("viewer"))
    viewer = communicator(f"/ws/live/{env['id']}/", cookie=cookie)
    assert (await viewer.connect())[0]
    await wait_until(lambda: env["id"] in live_runtime.feeds and live_runtime.feeds[env["id"]].polls >= 2)
    await viewer.disconnect()
    await wait_until(lambda: not live_runtime.feeds, timeout=2 * INTERVAL)

    await sync_to_async(upstream.reset_requests)()
    await asyncio.sleep(3 * INTERVAL)
    assert await sync_to_async(stats_polls)(upstream) == 0


async def test_a_failing_upstream_makes_the_snapshot_stale_and_it_recovers_on_its_own(live_runtime, upstream):
    env, _ = await sync_to_async(environment)(upstream, "flaky")
    await sync_to_async(upstream.enqueue)(env["id"])
    await sync_to_async(upstream.enqueue)(env["id"])
    cookie = await session_cookie(await sync_to_async(make_user)("viewer"))
    viewer = communicator(f"/ws/live/{env['id']}/", cookie=cookie)
    assert (await viewer.connect())[0]
    fresh = await receive_matching(viewer, r'data-figure="depth">2<')
    assert "data-stale-since" not in fresh
    feed = live_runtime.feeds[env["id"]]
    read_at = feed.snapshot.at

    await sync_to_async(upstream.set_fault)(route="stats", status=503)
    stale = await receive_matching(viewer, r"data-stale-since")
    snapshot = feed.snapshot
    assert snapshot.stale is not None
    assert snapshot.stale.kind == "unavailable"
    assert snapshot.stale.request_id.startswith("req_")
    assert f'data-stale-request-id="{snapshot.stale.request_id}"' in stale
    assert "The Work API is unavailable" in stale
    # The last numbers stay, with the time they were read.
    assert figure(stale, f"queue-{env['id']}", "depth") == "2"
    assert snapshot.at == read_at
    since = snapshot.stale.since
    await wait_until(
        lambda: (
            feed.snapshot.stale is not None
            and feed.snapshot.published_at > since + timedelta(seconds=INTERVAL)
        )
    )
    assert feed.snapshot.stale.since == since, "a run of failures keeps the time of its first one"

    await sync_to_async(upstream.clear_faults)()
    await sync_to_async(upstream.enqueue)(env["id"])
    recovered = await receive_matching(viewer, r'data-figure="depth">3<')
    assert "data-stale-since" not in recovered
    assert feed.snapshot.stale is None and feed.snapshot.at > read_at
    await viewer.disconnect()


async def test_a_stopped_upstream_is_reported_as_unreachable(live_runtime, upstream, settings):
    env, _ = await sync_to_async(environment)(upstream, "far away")
    cookie = await session_cookie(await sync_to_async(make_user)("viewer"))
    viewer = communicator(f"/ws/live/{env['id']}/", cookie=cookie)
    assert (await viewer.connect())[0]
    await receive_matching(viewer, r'data-figure="depth">0<')
    # Point the running feed at a port nobody listens on, as if the upstream went away.
    await live_runtime.client.aclose()
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:9"
    live_runtime._client = None
    stale = await receive_matching(viewer, r"data-stale-since")
    assert "Could not reach the Work API" in stale
    assert live_runtime.feeds[env["id"]].snapshot.stale.kind == "connection"
    await viewer.disconnect()


async def test_it_stores_history_samples_draws_the_chart_and_prunes_old_samples(
    live_runtime, upstream, settings
):
    settings.HISTORY_RETENTION_HOURS = 48  # the 20-hour-old sample stays until the retention is lowered below
    env, _ = await sync_to_async(environment)(upstream, "history")
    old = await sync_to_async(QueueSample.objects.create)(
        environment_id=env["id"],
        at=timezone.now() - timedelta(hours=20),
        depth=9,
        pending=0,
        workers_polling=0,
    )
    live_runtime.watch([env_key(env["id"])])
    await wait_until(lambda: env["id"] in live_runtime.feeds and live_runtime.feeds[env["id"]].polls >= 3)
    samples = await sync_to_async(QueueSample.objects.filter(environment_id=env["id"]).count)()
    assert samples >= 4  # three from the feed, and the old one not pruned yet
    payload = (await live_runtime.cached([env["id"]]))[0]
    assert '<svg class="sparkline"' in payload["tile"] and 'class="spark-depth" d="M' in payload["tile"]

    settings.HISTORY_RETENTION_HOURS = 12
    live_runtime._pruned_at = -math.inf
    await live_runtime._prune_history()
    assert not await sync_to_async(QueueSample.objects.filter(pk=old.pk).exists)()
    assert await sync_to_async(QueueSample.objects.filter(environment_id=env["id"]).count)() >= 3
    live_runtime.unwatch([env_key(env["id"])])


async def test_queue_samples_are_kept_a_day_whatever_the_history_retention(live_runtime, upstream, settings):
    """The overview's chart spans an hour: its per-reading samples do not pile up for the 7-day retention."""
    settings.HISTORY_RETENTION_HOURS = 168
    env, _ = await sync_to_async(environment)(upstream, "queue history")
    made = [
        await sync_to_async(QueueSample.objects.create)(
            environment_id=env["id"], at=timezone.now() - timedelta(hours=hours), depth=1, pending=0
        )
        for hours in (2, 30)
    ]
    live_runtime._pruned_at = -math.inf
    await live_runtime._prune_history()
    kept = await sync_to_async(lambda: set(QueueSample.objects.values_list("pk", flat=True)))()
    assert made[0].pk in kept and made[1].pk not in kept


async def test_it_counts_active_and_stuck_work_from_the_work_index(live_runtime, upstream, settings):
    from pages_support import fill_index, start_work

    settings.STUCK_HEARTBEAT_SECONDS = 0  # every active item with a heartbeat counts as stuck at once
    env, key = await sync_to_async(environment)(upstream, "counted")
    await sync_to_async(start_work)(upstream, env["id"], key, state="active")
    await sync_to_async(upstream.enqueue)(env["id"])
    await sync_to_async(fill_index)(upstream, env["id"], key)
    live_runtime.watch([env_key(env["id"])])
    await wait_until(lambda: env["id"] in live_runtime.feeds and live_runtime.feeds[env["id"]].snapshot)
    snapshot = live_runtime.feeds[env["id"]].snapshot
    assert (snapshot.depth, snapshot.active, snapshot.stuck, snapshot.listed) == (1, 1, 1, 2)
    live_runtime.unwatch([env_key(env["id"])])


async def test_without_an_environment_key_it_shows_stats_and_says_why_counts_are_missing(
    live_runtime, upstream
):
    env, _ = await sync_to_async(environment)(upstream, "keyless", with_key=False)
    live_runtime.watch([env_key(env["id"])])
    await wait_until(lambda: env["id"] in live_runtime.feeds and live_runtime.feeds[env["id"]].snapshot)
    snapshot = live_runtime.feeds[env["id"]].snapshot
    assert snapshot.depth == 0 and snapshot.stale is None
    assert snapshot.active is None and "No environment key" in snapshot.counts_note
    assert await sync_to_async(lambda: upstream.requests()["by_route"].get("list", 0))() == 0
    live_runtime.unwatch([env_key(env["id"])])


async def test_it_does_not_poll_an_environment_the_upstream_does_not_list(live_runtime, upstream):
    real, _ = await sync_to_async(environment)(upstream, "real")
    live_runtime.watch([env_key(real["id"]), env_key("env_doesnotexist")])
    await wait_until(lambda: real["id"] in live_runtime.feeds)
    await asyncio.sleep(2 * INTERVAL)
    assert set(live_runtime.feeds) == {real["id"]}
    live_runtime.unwatch([env_key(real["id"]), env_key("env_doesnotexist")])


async def test_a_failing_work_list_keeps_the_counts_and_says_why_without_making_the_numbers_stale(
    live_runtime, upstream
):
    env, _ = await sync_to_async(environment)(upstream, "list fails")
    live_runtime.watch([env_key(env["id"])])
    await wait_until(lambda: env["id"] in live_runtime.feeds and live_runtime.feeds[env["id"]].snapshot)
    await sync_to_async(upstream.set_fault)(route="list", status=503)
    await sync_to_async(upstream.enqueue)(env["id"])
    feed = live_runtime.feeds[env["id"]]
    await wait_until(lambda: feed.snapshot.depth == 1 and "not updated" in feed.snapshot.counts_note)
    assert feed.snapshot.stale is None and feed.snapshot.active == 0
    assert "The Work API is unavailable (request id req_" in feed.snapshot.counts_note
    await sync_to_async(upstream.clear_faults)()
    await wait_until(lambda: "not updated" not in feed.snapshot.counts_note)
    live_runtime.unwatch([env_key(env["id"])])


async def test_every_environment_with_a_key_is_indexed_without_viewers(live_runtime, upstream):
    env, _ = await sync_to_async(environment)(upstream, "indexed unwatched")
    keyless, _ = await sync_to_async(environment)(upstream, "no key", with_key=False)
    await sync_to_async(upstream.enqueue)(env["id"])
    await wait_until(lambda: env["id"] in live_runtime.feeds and live_runtime.feeds[env["id"]].polls >= 1)
    assert keyless["id"] not in live_runtime.feeds
    rows = await sync_to_async(lambda: list(IndexedWork.objects.filter(environment_id=env["id"])))()
    assert [row.state for row in rows] == ["queued"]


async def test_a_bulk_stop_whose_instance_died_is_finished_by_the_live_runtime_without_a_page_visit(
    live_runtime, upstream
):
    from django.contrib.auth.models import User

    from dashboard.models import BulkItem, BulkOperation

    env, key = await sync_to_async(environment)(upstream, "orphaned bulk")
    item = await sync_to_async(start_work)(upstream, env["id"], key, state="active")

    def orphan() -> BulkOperation:
        user = User.objects.create_user("bulk-admin")
        operation = BulkOperation.objects.create(
            environment_id=env["id"],
            reason="r",
            force=True,
            selection="selected",
            created_by=user,
            username="a",
        )
        BulkItem.objects.create(operation=operation, position=0, work_id=item.id)
        # Its runner's instance died an hour ago.
        BulkOperation.objects.filter(pk=operation.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        return operation

    operation = await sync_to_async(orphan)()

    def finished() -> bool:
        return BulkOperation.objects.get(pk=operation.pk).status == BulkOperation.Status.FINISHED

    await wait_until(lambda: sync_to_async(finished)(), timeout=15)
    assert await sync_to_async(lambda: BulkItem.objects.get(operation=operation).status)() == "stopped"


async def test_the_directory_read_names_each_indexed_environment(live_runtime, upstream):
    from dashboard.index.models import IndexedEnvironment
    from dashboard.index.queries import environment_name

    env, _ = await sync_to_async(environment)(upstream, "Payments")

    def stored_name():
        return (
            IndexedEnvironment.objects.filter(environment_id=env["id"]).values_list("name", flat=True).first()
        )

    await wait_until(sync_to_async(stored_name), timeout=10)
    assert await sync_to_async(stored_name)() == "Payments"
    assert await sync_to_async(environment_name)(env["id"]) == "Payments"
    assert await sync_to_async(environment_name)("env_unknown") == "env_unknown"
