"""Fan-out latency: from the live feed stamping a snapshot to the last of N websocket clients receiving it, on the
in-memory channel layer and on Redis.

One dashboard per layer (uvicorn subprocess; the Redis one with ``REDIS_URL``) against one emulator; N clients in
this one process (asyncio and uvloop, the ``websockets`` library, permessage-deflate as browsers negotiate it) on
one environment page. Every frame carries the snapshot's time (``data-live-at``: when the feed read the numbers,
right before it stores the history sample, renders the snapshot once and sends it to the group). For each
snapshot published after every socket was open and received by all of them: the delay to the first and to the
last client. p50/p99 over the snapshots. The same with a single client first gives the floor: the feed's own
publishing cost, without the fan-out. Client and server share the machine's CPUs, so the client's own receive
work is part of the figure.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Any

from bench.harness import (
    SHIPPED_WS,
    Dashboard,
    Result,
    Viewers,
    Workspace,
    cpu_seconds,
    in_thread,
    live_at,
    ms,
    percentile,
    start_all,
    wait_until,
)

NAME = "fanout"
TITLE = "Fan-out latency"
ENVIRONMENT = "fanout-1"
LEGACY_WS = "websockets"
# The figures of the run before the change (README, 2026-11-29), and the goals they are held to.
RECORDED = {"in-memory": (0.3404, 0.2023), "Redis": (0.5864, 0.2094)}
GOAL_P99 = {"in-memory": 0.100, "Redis": 0.250}
GOAL_CPU = 0.050


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"clients": 20, "snapshots": 3, "alone": 2, "interval": 0.2}
    return {"clients": 1000, "snapshots": 30, "alone": 10, "interval": 1.0}


def environments(quick: bool) -> list[dict[str, Any]]:
    return [{"name": ENVIRONMENT, "items": 10, "active": 2}]


def time_limit(quick: bool) -> float:
    return 60.0 if quick else 900.0


def redis_available(url: str) -> bool:
    if not url:
        return False
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def forget_redis_keys(url: str, prefix: str) -> None:
    """Remove what the run's dashboards left in Redis under their own prefix (leases, presence, snapshots)."""
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


async def measure(
    dashboard: Dashboard, environment_id: str, clients: int, snapshots: int, interval: float
) -> dict[str, Any]:
    arrivals: defaultdict[float, list[float]] = defaultdict(list)
    opened_at = float("inf")
    cpu_from = float("inf")
    published: set[float] = set()  # snapshots stamped since the CPU readings began

    def on_frame(index: int, received: float, frame: str) -> None:
        stamp = live_at(frame)
        if stamp is None:
            return
        if stamp > cpu_from:
            published.add(stamp)
        if stamp > opened_at:
            arrivals[stamp].append(received)

    def complete() -> list[float]:
        return sorted(stamp for stamp, times in arrivals.items() if len(times) >= clients)

    async with Viewers(dashboard, on_frame) as viewers:
        connect_started = time.monotonic()
        await viewers.open([f"/ws/live/{environment_id}/"] * clients)
        connect_seconds = time.monotonic() - connect_started
        # Count the snapshots from one interval after the last socket opened: every socket is then subscribed
        # and has read whatever came while the others were opening.
        cpu_from = time.time()
        opened_at = cpu_from + interval
        cpu_before = (cpu_seconds(dashboard.pid), time.process_time(), time.monotonic())
        await wait_until(
            lambda: len(complete()) >= snapshots, timeout=snapshots * interval * 4 + 60, what="the snapshots"
        )
        cpu_after = (cpu_seconds(dashboard.pid), time.process_time(), time.monotonic())
        stamps = complete()[:snapshots]
        incomplete = sum(
            1 for stamp, times in arrivals.items() if len(times) < clients and stamp < stamps[-1]
        )
    last = [max(arrivals[s]) - s for s in stamps]
    first = [min(arrivals[s]) - s for s in stamps]
    return {
        "last_p50": percentile(last, 50),
        "last_p99": percentile(last, 99),
        "first_p50": percentile(first, 50),
        "connect_seconds": connect_seconds,
        "server_cpu": (cpu_after[0] - cpu_before[0]) / (cpu_after[2] - cpu_before[2]) * 100,
        "client_cpu": (cpu_after[1] - cpu_before[1]) / (cpu_after[2] - cpu_before[2]) * 100,
        # CPU time per snapshot does not depend on what else the machine runs, unlike the delays.
        "server_cpu_per_snapshot": (cpu_after[0] - cpu_before[0]) / max(1, len(published)),
        "client_cpu_per_snapshot": (cpu_after[1] - cpu_before[1]) / max(1, len(published)),
        "snapshots": len(stamps),
        "incomplete": incomplete,
    }


async def run(workspace: Workspace, quick: bool, redis_url: str) -> Result:
    cfg = settings(quick)
    clients, snapshots, interval = cfg["clients"], cfg["snapshots"], cfg["interval"]
    result = Result(NAME, TITLE)
    env = workspace.environment(ENVIRONMENT)
    use_redis = redis_available(redis_url)
    feed = {"FEED_INTERVAL_SECONDS": str(interval)}
    measured: dict[str, dict[str, Any]] = {}
    alone: dict[str, dict[str, Any]] = {}  # one client: the publishing cost without the fan-out
    with workspace.stack(NAME) as stack:
        emulator = stack.emulator()
        in_memory = stack.dashboard(emulator, environments=[env], name="memory", settings=feed)
        # The same in-memory dashboard on uvicorn's older websocket implementation (``--ws websockets``), which the
        # recorded figures were measured on: the side-by-side "before".
        legacy = stack.dashboard(emulator, environments=[env], name="legacy", settings=feed, ws=LEGACY_WS)
        on_redis = None
        if use_redis:
            on_redis = stack.dashboard(
                emulator, environments=[env], name="redis", redis_url=redis_url, settings=feed
            )
        # Started together (an idle dashboard costs next to nothing), measured one after the other.
        await in_thread(start_all, emulator, in_memory, legacy, *([on_redis] if on_redis else []))
        try:
            alone["legacy"] = await measure(legacy, env.id, 1, cfg["alone"], interval)
            measured["legacy"] = await measure(legacy, env.id, clients, snapshots, interval)
            await in_thread(legacy.stop)
            alone["in-memory"] = await measure(in_memory, env.id, 1, cfg["alone"], interval)
            measured["in-memory"] = await measure(in_memory, env.id, clients, snapshots, interval)
            await in_thread(in_memory.stop)
            if on_redis is not None:
                alone["Redis"] = await measure(on_redis, env.id, 1, cfg["alone"], interval)
                measured["Redis"] = await measure(on_redis, env.id, clients, snapshots, interval)
                await in_thread(on_redis.stop)
        finally:
            if use_redis:
                await in_thread(stack.stop)
                await in_thread(forget_redis_keys, redis_url, workspace.redis_prefix)

    legacy_m = measured.pop("legacy", None)
    legacy_alone = alone.pop("legacy", None)
    for layer, m in measured.items():
        before_p99, before_cpu = RECORDED[layer]
        side_p99 = side_cpu = ""
        if layer == "in-memory" and legacy_m is not None:
            side_p99 = f"; this run, --ws {LEGACY_WS}: {ms(legacy_m['last_p99'])}"
            side_cpu = f"; this run, --ws {LEGACY_WS}: {ms(legacy_m['server_cpu_per_snapshot'])}"
        result.add(
            f"fan-out p99, last of {clients} sockets, {layer}",
            f"before {ms(before_p99)} (recorded){side_p99} → after {ms(m['last_p99'])}; "
            f"goal ≤ {ms(GOAL_P99[layer])}",
        )
        result.add(
            f"server CPU per snapshot sent to {clients} sockets, {layer}",
            f"before {ms(before_cpu)} (recorded){side_cpu} → after {ms(m['server_cpu_per_snapshot'])}; "
            f"goal ≤ {ms(GOAL_CPU)}",
        )
        result.add(f"{layer}: last of {clients} clients, p50", ms(m["last_p50"]))
        result.add(f"{layer}: a single client, p50", ms(alone[layer]["last_p50"]))
        result.note(
            f"{layer}: {m['snapshots']} snapshots at {interval:g} s intervals (the first of {clients} clients: "
            f"p50 {ms(m['first_p50'])}; a single client: {alone[layer]['snapshots']} snapshots, server CPU "
            f"{ms(alone[layer]['server_cpu_per_snapshot'])} per snapshot: polling, rendering, publishing)"
            + (f", {m['incomplete']} not received by every client" if m["incomplete"] else "")
            + f"; opening the {clients} sockets took {m['connect_seconds']:.1f} s; CPU while the snapshots went "
            f"out: server {m['server_cpu']:.0f}% of a core, clients (this process) {m['client_cpu']:.0f}% "
            f"({ms(m['client_cpu_per_snapshot'])} per snapshot)."
        )
    if legacy_m is not None and legacy_alone is not None:
        result.note(
            f"Before/after: the in-memory layer was measured twice in this run, one after the other, on uvicorn's "
            f"--ws {LEGACY_WS} (as before) and --ws {SHIPPED_WS} (as shipped now): p50 {ms(legacy_m['last_p50'])} "
            f"→ {ms(measured['in-memory']['last_p50'])}, a single client's server CPU per snapshot "
            f"{ms(legacy_alone['server_cpu_per_snapshot'])} → {ms(alone['in-memory']['server_cpu_per_snapshot'])}. "
            "The Redis layer runs as shipped only; its 'before' is the recorded figure."
        )
    if not use_redis:
        result.note(
            f"Redis not reachable at {redis_url or '(none given)'}: the Redis layer was not measured."
        )
    result.note(
        "Clients and server share the CPUs (and the machine's other load: a server that gets less than a core "
        "while the snapshots go out is waiting for CPU); the delay counts from the snapshot's timestamp, so it "
        "includes the feed's history write and its one render. Snapshots come every interval whatever the "
        "fan-out takes: when one takes longer than the interval, the next waits behind it."
    )
    return result
