"""Upstream cost of viewers: Work API requests per environment per minute, counted at the emulator
(``/_emulator/requests``), with 1 and with many websocket viewers of a real dashboard, next to a per-viewer polling
baseline in which every open screen asks for the stats itself (as the Sidekiq Web and Hangfire dashboards do).

Ours: the dashboard (uvicorn subprocess) against the emulator (subprocess); viewers are websocket clients, half on
the overview (watching every environment), half on an environment page (watching its first rows). The live feed
polls at ``FEED_INTERVAL_SECONDS`` (3 s, the default). Baseline: N simulated screens, each calling ``work_stats``
for every environment through ``workqueue.client`` at the same interval, starting at random moments. Both are
counted over the same window, after a warm-up, and scaled to a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Any

import httpx

from bench.harness import (
    Dashboard,
    Emulator,
    PreparedEnvironment,
    Result,
    Viewers,
    Workspace,
    in_thread,
    start_all,
)
from workqueue.client import WorkAPIClient

NAME = "upstream"
TITLE = "Upstream cost of viewers"
ENVIRONMENTS = ("upstream-1", "upstream-2")
ROWS_PER_PAGE = 25


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"interval": 0.25, "window": 0.75, "viewers": (1, 4)}
    return {"interval": 3.0, "window": 30.0, "viewers": (1, 500)}


def environments(quick: bool) -> list[dict[str, Any]]:
    return [{"name": name, "items": 30, "active": 2} for name in ENVIRONMENTS]


def time_limit(quick: bool) -> float:
    return 60.0 if quick else 420.0


def viewer_paths(count: int, envs: list[PreparedEnvironment]) -> list[str]:
    """Half overview screens (every environment), half environment pages (its first rows), alternating."""
    overview = "/ws/live/?" + "&".join(f"env={e.id}" for e in envs)
    paths = []
    for n in range(count):
        if n % 2 == 0:
            paths.append(overview)
        else:
            env = envs[(n // 2) % len(envs)]
            rows = "&".join(f"work={w}" for w in env.work_ids[:ROWS_PER_PAGE])
            paths.append(f"/ws/live/{env.id}/?{rows}")
    return paths


async def counted(emulator: Emulator, window: float) -> dict[str, int]:
    """The upstream requests the emulator served during ``window`` seconds, by route."""
    await in_thread(emulator.reset_requests)
    await asyncio.sleep(window)
    counts = await in_thread(emulator.upstream_requests)
    by_route: dict[str, int] = counts.get("by_route", {})
    return by_route


def per_env_minute(by_route: dict[str, int], environments: int, window: float) -> float:
    return sum(by_route.values()) / environments * 60.0 / window


async def ours(
    dashboard: Dashboard,
    emulator: Emulator,
    envs: list[PreparedEnvironment],
    viewers: int,
    interval: float,
    window: float,
) -> tuple[dict[str, int], int]:
    async with Viewers(dashboard) as screens:
        await screens.open(viewer_paths(viewers, envs))
        # The supervisor starts the feeds at once; after two intervals they poll at their steady pace.
        await asyncio.sleep(2 * interval)
        by_route = await counted(emulator, window)
        return by_route, len(screens.sockets)


@dataclass
class Baseline:
    served: dict[str, int]  # by route, counted at the emulator
    failed: int = (
        0  # stats calls started in the window that failed (timeouts when the emulator cannot keep up)
    )


async def baseline(
    emulator: Emulator, envs: list[PreparedEnvironment], viewers: int, interval: float, window: float
) -> Baseline:
    """Every screen polls the stats of every environment itself, every interval."""
    limits = httpx.Limits(max_connections=min(200, viewers * len(envs) + 4), max_keepalive_connections=200)
    client = WorkAPIClient(
        api_key=emulator.api_key,
        base_url=emulator.base_url,
        timeout=10.0,
        retry_total=0,
        transport=httpx.AsyncHTTPTransport(limits=limits),
    )
    measured = Baseline(served={})
    counting = False

    async def screen() -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + random.uniform(0, interval)
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            counts = counting
            answers = await asyncio.gather(*(client.work_stats(e.id) for e in envs), return_exceptions=True)
            if counts:
                measured.failed += sum(1 for a in answers if isinstance(a, BaseException))
            due += interval
            now = loop.time()
            if due < now:  # behind (the upstream is slow): skip the missed polls, as a browser timer would
                due += ((now - due) // interval + 1) * interval

    tasks = [asyncio.create_task(screen()) for _ in range(viewers)]
    try:
        await asyncio.sleep(interval)
        counting = True
        measured.served = await counted(emulator, window)
        counting = False
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await client.aclose()
    return measured


async def run(workspace: Workspace, quick: bool, redis_url: str) -> Result:
    cfg = settings(quick)
    interval, window = cfg["interval"], cfg["window"]
    few, many = cfg["viewers"]
    result = Result(NAME, TITLE)
    envs = [workspace.environment(name) for name in ENVIRONMENTS]
    with workspace.stack(NAME) as stack:
        emulator = stack.emulator()
        dashboard = stack.dashboard(
            emulator, environments=envs, settings={"FEED_INTERVAL_SECONDS": str(interval)}
        )
        await in_thread(start_all, emulator, dashboard)
        rates: dict[str, float] = {}
        routes: dict[str, dict[str, int]] = {}
        for viewers in (few, many):
            by_route, opened = await ours(dashboard, emulator, envs, viewers, interval, window)
            assert opened == viewers
            rates[f"ours@{viewers}"] = per_env_minute(by_route, len(envs), window)
            routes[f"ours@{viewers}"] = by_route
        # The dashboard has no part in the baseline: stop it so it does not share the CPU.
        await in_thread(dashboard.stop)
        failed: dict[int, int] = {}
        for viewers in (few, many):
            measured = await baseline(emulator, envs, viewers, interval, window)
            rates[f"baseline@{viewers}"] = per_env_minute(measured.served, len(envs), window)
            routes[f"baseline@{viewers}"] = measured.served
            failed[viewers] = measured.failed

    unit = "req/env/min"
    result.add(f"ours, {few} viewer", f"{rates[f'ours@{few}']:.1f} {unit}")
    result.add(f"ours, {many} viewers", f"{rates[f'ours@{many}']:.1f} {unit}")
    saturated = False
    for viewers in (few, many):
        served = rates[f"baseline@{viewers}"]
        scheduled = viewers * 60.0 / interval  # what the screens' timers ask for, per environment
        shown = f"{served:.1f} {unit}"
        if served < 0.9 * scheduled:
            # The emulator could not keep up: the served figure is its ceiling; say what the screens asked for.
            saturated = True
            shown += f" served; the screens' timers ask {scheduled:.0f}"
            if failed[viewers]:
                shown += f" ({failed[viewers]} calls timed out or failed)"
        result.add(f"baseline (per-screen polling), {viewers} viewer{'s' if viewers > 1 else ''}", shown)
    ours_many = rates[f"ours@{many}"]
    ratio = rates[f"baseline@{many}"] / ours_many if ours_many else float("inf")
    shown = f"{ratio:.0f}x"
    if saturated:
        shown += f" served, {many * 60.0 / interval / ours_many:.0f}x asked" if ours_many else ""
    result.add(f"ratio baseline/ours at {many} viewers", shown)
    growth = ours_many / rates[f"ours@{few}"] if rates[f"ours@{few}"] else float("inf")
    result.add(f"ours@{many} / ours@{few}", f"{growth:.2f}")
    result.note(
        f"{len(envs)} environments; the feed and the baseline's screens both every {interval:g} s; counted at "
        f"the emulator over {window:g} s after a warm-up, scaled to a minute. Ours also lists each environment's "
        "newest work every interval (active and stuck counts, live rows), hence about twice the baseline at 1 "
        "viewer. The emulator serves requests one at a time on one engine thread; when the baseline's screens "
        "ask for more than it can serve, what it served is its ceiling, not the demand (each screen waits for "
        "its answer before its next timer, so the screens slow down with it)."
    )
    for label, by_route in routes.items():
        parts = ", ".join(f"{route} {count}" for route, count in sorted(by_route.items()))
        result.note(f"{label} requests by route in the window: {parts or 'none'}.")
    return result
