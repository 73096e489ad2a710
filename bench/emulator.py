"""The emulator: polls, acks and heartbeats per second it serves to the simulated fleet (``workqueue.fleet``) at
10, 50 and 200 workers, from the fleet's counters over a fixed window.

One emulator (``manage.py emulator`` subprocess, SQLite) with two environments holding a backlog, so that every
poll finds work; the fleet runs in this process. The largest size runs twice: with the fleet's HTTP connection pools
as they are (one per 8 workers) and, for comparison, with one pool for the whole fleet as it used to be. Each worker claims an item, heartbeats every second while it
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
    per_env = {size: size // len(envs) for size in cfg["sizes"]}

    def config(size: int, workers_per_client: int) -> FleetConfig:
        return FleetConfig(
            workers_per_env=per_env[size],
            work_seconds=cfg["work"],
            heartbeat_interval=(cfg["heartbeat"], cfg["heartbeat"]),
            workers_per_client=workers_per_client,
            seed=size,
        )

    largest = max(cfg["sizes"])
    # Every size with the fleet's default pools; the largest once more first, as it used to run: one connection
    # pool for the whole fleet (``workers_per_client=0``), for the before/after figure.
    runs = [(largest, 0), *((size, FleetConfig.workers_per_client) for size in cfg["sizes"])]
    rates: dict[tuple[int, int], dict[str, float]] = {}
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
        for size, per_client in runs:
            topped += await top_up(emulator, envs, items_needed(cfg, size))
            fleet = Fleet(
                emulator.base_url, [FleetEnvironment(e.id, e.key) for e in envs], config(size, per_client)
            )
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
            rates[size, per_client] = rate
            emulator_cpu = (cpu_after[0] - cpu_before[0]) / window * 100
            fleet_cpu = (cpu_after[1] - cpu_before[1]) / window * 100
            pools = f"{len(fleet.clients)} connection pool{'s' if len(fleet.clients) != 1 else ''}"
            if size != largest:
                result.add(
                    f"{size} workers",
                    f"{rate['polls']:.0f} polls/s, {rate['acks']:.0f} acks/s, {rate['heartbeats']:.0f} heartbeats/s",
                )
            result.note(
                f"{size} workers, {pools}: {rate['polls']:.1f} polls/s, {rate['acks']:.1f} acks/s, "
                f"{rate['heartbeats']:.1f} heartbeats/s, {rate['stops']:.1f} stops/s, {rate['errors']:.1f} errors/s, "
                f"{rate['empty_polls']:.1f} empty polls/s; CPU in the window: emulator {emulator_cpu:.0f}%, "
                f"fleet (this process) {fleet_cpu:.0f}%."
            )
        old, new = rates[largest, 0], rates[largest, FleetConfig.workers_per_client]
        second = sorted(cfg["sizes"])[-2]
        goal = rates[second, FleetConfig.workers_per_client]["polls"]
        result.add(
            f"{largest} workers",
            f"before {old['polls']:.0f} polls/s, {old['errors']:.1f} errors/s (one connection pool) → after "
            f"{new['polls']:.0f} polls/s, {new['acks']:.0f} acks/s, {new['heartbeats']:.0f} heartbeats/s, "
            f"{new['errors']:.1f} errors/s ({FleetConfig.workers_per_client} workers a pool); goal 0 errors, "
            f"≥ the {second}-worker figure ({goal:.0f} polls/s)",
        )
    low, high = cfg["work"]
    dried = f"the queue ran dry at {', '.join(map(str, dry))} workers" if dry else "the queue never ran dry"
    result.note(
        f"{largest} workers, before and after: the same fleet, once with one HTTP connection pool for all its "
        f"workers (`workers_per_client=0`, as it was) and once with one pool per "
        f"{FleetConfig.workers_per_client} workers (the default), in this run against the same emulator. Errors "
        "are failed requests the workers saw (timeouts, connection failures, an ack refused because its delivery "
        "had been handed to another worker, 5xx); a stop answered 409 'already stopped' is not counted, nor an "
        "empty poll."
    )
    result.note(
        f"Window {cfg['window']:g} s after a {cfg['warmup']:g} s warm-up; {len(envs)} environments with a backlog "
        f"of {backlog(quick)} items each; work {low:g}-{high:g} s, a heartbeat every {cfg['heartbeat']:g} s"
        + (f"; {topped} items added between sizes" if topped else "")
        + f"; {dried}."
    )
    return result
