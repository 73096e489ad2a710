"""Two dashboard instances (uvicorn subprocesses) on one Redis and one PostgreSQL database, behind no balancer:
viewers on either see the same updates, the upstream sees one stats poll per environment per interval (not one per
viewer or per instance), and killing the instance that holds a feed moves it to the other within two intervals.

Needs TEST_REDIS_URL and TEST_POSTGRES_URL; skipped without them unless REQUIRE_SERVICES=1 (then it fails).
The instances use a database of their own, created and migrated here and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import time
from collections.abc import Iterator

import pytest
from instances_support import VIEWER_SESSION, Instance, fresh_database, service_urls
from instances_support import manage as _manage

from workqueue.emulator.launch import free_port

INTERVAL = 0.5
pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture
def services() -> Iterator[tuple[str, str]]:
    """Redis and a fresh PostgreSQL database for the instances (dropped afterwards)."""
    redis_url, postgres_url = service_urls()
    with fresh_database(redis_url, postgres_url, "live_multi") as database_url:
        yield redis_url, database_url


def _pid_of(holder: bytes | str | None) -> int:
    """The pid in a lease holder's name (``host:pid:random``)."""
    assert holder is not None, "nobody holds the feed"
    text = holder.decode() if isinstance(holder, bytes) else holder
    return int(text.split(":")[1])


async def _next_frame(socket, pattern: str, timeout: float = 10.0) -> str:
    import re

    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no frame matching {pattern!r} within {timeout} s"
        text = await asyncio.wait_for(socket.recv(), timeout=remaining)
        if re.search(pattern, text):
            return str(text)


async def test_two_instances_share_one_feed_per_environment_and_take_over_from_each_other(
    services,
    upstream,
    tmp_path,  # noqa: F811
):
    from redis.asyncio import Redis
    from websockets.asyncio.client import connect
    from websockets.typing import Origin

    redis_url, database_url = services
    busy, busy_key = upstream.create_environment("busy")
    quiet, quiet_key = upstream.create_environment("quiet")
    prefix = f"test-live-{secrets.token_hex(4)}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(40),
        "ANTHROPIC_BASE_URL": upstream.base_url,
        "ANTHROPIC_API_KEY": upstream.api_key,
        "ENVIRONMENT_KEYS": f"{busy['id']}={busy_key},{quiet['id']}={quiet_key}",
        "FEED_INTERVAL_SECONDS": str(INTERVAL),
        "FEED_DIRECTORY_INTERVAL_SECONDS": "1",
        "LIVE_REDIS_PREFIX": prefix,
        "DASHBOARD_DATA_DIR": str(tmp_path),
        "DEBUG": "0",
    }
    _manage(env, "migrate", "--noinput", "-v0")
    session_key = _manage(env, "shell", "-c", VIEWER_SESSION).strip().splitlines()[-1]
    instances = [Instance(free_port(), env, tmp_path / f"instance-{n}.log").start() for n in range(2)]
    redis = Redis.from_url(redis_url)
    sockets = []
    try:
        for instance in instances:
            for environment in (busy, busy, quiet):
                sockets.append(
                    await connect(
                        f"ws://127.0.0.1:{instance.port}/ws/live/{environment['id']}/",
                        origin=Origin(f"http://127.0.0.1:{instance.port}"),
                        additional_headers={"Cookie": f"sessionid={session_key}"},
                    )
                )
        busy_sockets = [sockets[0], sockets[1], sockets[3], sockets[4]]

        # The same update reaches viewers on both instances, byte for byte.
        for _ in range(3):
            upstream.enqueue(busy["id"])
        frames = [await _next_frame(s, r'data-figure="depth">3<') for s in busy_sockets]
        assert len(set(frames)) == 1, "viewers on both instances see the same snapshot"

        # One stats poll per environment per interval: six viewers on two instances cost what one viewer costs.
        upstream.reset_requests()
        started = time.monotonic()
        await asyncio.sleep(4.0)
        stats = upstream.requests()["by_route"].get("stats", 0)
        intervals = (time.monotonic() - started) / INTERVAL
        # Never more than one poll an interval per environment; on a busy machine a poll may run late, not twice.
        assert 2 * max(1, math.floor(intervals) // 2) <= stats <= 2 * (math.ceil(intervals) + 1), (
            stats,
            intervals,
        )

        # Each feed is held by exactly one instance; kill the one holding the busy environment's feed.
        holder_pid = _pid_of(await redis.get(f"{prefix}:lock:feed:{busy['id']}"))
        victim = next(i for i in instances if i.pid == holder_pid)
        survivor = next(i for i in instances if i is not victim)
        survivor_socket = sockets[3] if survivor is instances[1] else sockets[0]
        victim.kill()
        killed_at = time.monotonic()
        while True:
            current = await redis.get(f"{prefix}:lock:feed:{busy['id']}")
            if current is not None and _pid_of(current) == survivor.pid:
                break
            assert time.monotonic() - killed_at < 5, "the feed was not taken over"
            await asyncio.sleep(0.02)
        took_over = time.monotonic() - killed_at
        # Within two intervals (and a little slack for two processes on a busy machine).
        assert took_over <= 2 * INTERVAL + 0.3, took_over

        upstream.enqueue(busy["id"])
        await _next_frame(survivor_socket, r'data-figure="depth">4<', timeout=3 * INTERVAL + 2)
        upstream.reset_requests()
        await asyncio.sleep(2.0)
        assert 2 * 2 <= upstream.requests()["by_route"].get("stats", 0) <= 2 * (2 / INTERVAL + 2)
    finally:
        for socket in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(), timeout=2)
        for instance in instances:
            instance.stop()
        keys = [key async for key in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
