"""The emulator: polls, acks and heartbeats per second it serves to the simulated fleet (``workqueue.fleet``) at
10, 50 and 200 workers, from the fleet's counters over a fixed window.

One emulator (``manage.py emulator`` subprocess, SQLite) with two environments holding a backlog, so that every
poll finds work; the fleet runs in this process. Each worker claims an item, heartbeats every second while it
works on it for 1-3 s, then stops it, and polls again. The window starts after a warm-up. The CPU the emulator and
the fleet used in the window is reported too: on two cores, either can be the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

import httpx

from bench.harness import (
    Emulator,
    PreparedEnvironment,
    Result,
    Workspace,
    cpu_seconds,
    in_thread,
    start_all,
)
from workqueue.client import WorkAPIClient
from workqueue.fleet import Fleet, FleetConfig, FleetEnvironment

NAME = "emulator"
TITLE = "Emulator throughput"
ENVIRONMENTS = ("fleet-1", "fleet-2")


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"sizes": (2, 4), "warmup": 0.3, "window": 0.7, "work": (0.1, 0.3), "heartbeat": 0.1}
    return {"sizes": (10, 50, 200), "warmup": 3.0, "window": 20.0, "work": (1.0, 3.0), "heartbeat": 1.0}


def items_needed(cfg: dict[str, Any], workers: int) -> int:
    """Items one environment needs queued so ``workers`` never find it empty (a fifth more than they can take)."""
    per_worker_second = 1.2 / (sum(cfg["work"]) / 2)
    return math.ceil(workers / len(ENVIRONMENTS) * (cfg["warmup"] + cfg["window"]) * per_worker_second)


def backlog(quick: bool) -> int:
    cfg = settings(quick)
    return sum(items_needed(cfg, size) for size in cfg["sizes"])


def environments(quick: bool) -> list[dict[str, Any]]:
    return [{"name": name, "backlog": backlog(quick)} for name in ENVIRONMENTS]


def time_limit(quick: bool) -> float:
    return 60.0 if quick else 420.0


async def depths(emulator: Emulator, envs: list[PreparedEnvironment]) -> list[int]:
    async with WorkAPIClient(api_key=emulator.api_key, base_url=emulator.base_url, retry_total=0) as client:
        stats = await asyncio.gather(*(client.work_stats(e.id) for e in envs))
    return [s.depth for s in stats]


async def top_up(emulator: Emulator, envs: list[PreparedEnvironment], wanted: int) -> int:
    """Enqueue (through the admin surface) until every environment has ``wanted`` items queued."""
    missing = [(e, max(0, wanted - d)) for e, d in zip(envs, await depths(emulator, envs), strict=True)]
    semaphore = asyncio.Semaphore(16)
    async with httpx.AsyncClient(
        base_url=emulator.base_url, headers={"Authorization": f"Bearer {emulator.api_key}"}, timeout=30
    ) as http:

        async def one(env_id: str) -> None:
            async with semaphore:
                (
                    await http.post(f"/_emulator/environments/{env_id}/work", json={"type": "session"})
                ).raise_for_status()

        await asyncio.gather(*(one(e.id) for e, count in missing for _ in range(count)))
    return sum(count for _, count in missing)


async def run(workspace: Workspace, quick: bool, redis_url: str) -> Result:
    cfg = settings(quick)
    result = Result(NAME, TITLE)
    envs = [workspace.environment(name) for name in ENVIRONMENTS]
    config_for = {
        size: FleetConfig(
            workers_per_env=size // len(envs),
            work_seconds=cfg["work"],
            heartbeat_interval=(cfg["heartbeat"], cfg["heartbeat"]),
            seed=size,
        )
        for size in cfg["sizes"]
    }
    dry: list[int] = []
    topped = 0
    # An overloaded emulator makes workers log every timeout and redelivery; the counters already count them.
    fleet_log = logging.getLogger("workqueue")
    level = fleet_log.level
    fleet_log.setLevel(logging.CRITICAL)
    with contextlib.ExitStack() as restore, workspace.stack(NAME) as stack:
        restore.callback(fleet_log.setLevel, level)
        emulator = stack.emulator()
        await in_thread(start_all, emulator)
        for size, config in config_for.items():
            topped += await top_up(emulator, envs, items_needed(cfg, size))
            fleet = Fleet(emulator.base_url, [FleetEnvironment(e.id, e.key) for e in envs], config)
            await fleet.start()
            try:
                await asyncio.sleep(cfg["warmup"])
                before = fleet.counters.as_dict()
                cpu_before = (cpu_seconds(emulator.pid), time.process_time())
                started = time.monotonic()
                await asyncio.sleep(cfg["window"])
                after = fleet.counters.as_dict()
                cpu_after = (cpu_seconds(emulator.pid), time.process_time())
                window = time.monotonic() - started
            finally:
                await fleet.stop()
            if min(await depths(emulator, envs)) == 0:
                dry.append(size)
            rate = {k: (after[k] - before[k]) / window for k in after}
            emulator_cpu = (cpu_after[0] - cpu_before[0]) / window * 100
            fleet_cpu = (cpu_after[1] - cpu_before[1]) / window * 100
            result.add(
                f"{size} workers",
                f"{rate['polls']:.0f} polls/s, {rate['acks']:.0f} acks/s, {rate['heartbeats']:.0f} heartbeats/s",
            )
            result.note(
                f"{size} workers: also {rate['stops']:.0f} stops/s, {rate['errors']:.1f} errors/s, "
                f"{rate['empty_polls']:.1f} empty polls/s; CPU in the window: emulator {emulator_cpu:.0f}%, "
                f"fleet (this process) {fleet_cpu:.0f}%."
            )
    low, high = cfg["work"]
    dried = f"the queue ran dry at {', '.join(map(str, dry))} workers" if dry else "the queue never ran dry"
    result.note(
        f"Window {cfg['window']:g} s after a {cfg['warmup']:g} s warm-up; {len(envs)} environments with a backlog "
        f"of {backlog(quick)} items each; work {low:g}-{high:g} s, a heartbeat every {cfg['heartbeat']:g} s"
        + (f"; {topped} items added between sizes" if topped else "")
        + f"; {dried}."
    )
    return result
