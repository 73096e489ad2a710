"""Proxy overhead: the environment page (50 items) and the work item page served by the dashboard, against the same
upstream calls made directly with ``workqueue.client``, in the same run, one request at a time, interleaved.

Dashboard: uvicorn subprocess, a signed-in viewer's session cookie, one keep-alive HTTP client. The environment
page (``?limit=50``) reads the environment, its stats and 50 work items; the item page reads the item and its
environment (the pages' own calls, concurrent as in the views). Direct: the same calls, concurrent, with one
long-lived ``WorkAPIClient``. The added milliseconds are what the dashboard costs on top of the upstream: its
client per request, session and permission lookups, the audit trail query, the template render, the HTTP hop.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.harness import Result, Workspace, in_thread, start_all
from workqueue.client import WorkAPIClient

NAME = "proxy"
TITLE = "Proxy overhead"
ENVIRONMENT = "proxy-1"
ITEMS = 50


def settings(quick: bool) -> dict[str, int]:
    return {"requests": 3, "warmup": 1} if quick else {"requests": 200, "warmup": 10}


def environments(quick: bool) -> list[dict[str, Any]]:
    return [{"name": ENVIRONMENT, "items": ITEMS, "active": 1}]


def time_limit(quick: bool) -> float:
    return 60.0 if quick else 300.0


async def timed(call: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def run(workspace: Workspace, quick: bool, redis_url: str) -> Result:
    cfg = settings(quick)
    result = Result(NAME, TITLE)
    env = workspace.environment(ENVIRONMENT)
    work_id = env.active_ids[0]
    samples: dict[str, list[float]] = {
        "env_dashboard": [],
        "env_direct": [],
        "item_dashboard": [],
        "item_direct": [],
        "bare": [],
    }
    with workspace.stack(NAME) as stack:
        emulator = stack.emulator()
        dashboard = stack.dashboard(emulator, environments=[env])
        await in_thread(start_all, emulator, dashboard)
        env_path = f"/environments/{env.id}/?limit={ITEMS}"
        item_path = f"/environments/{env.id}/work/{work_id}/"
        async with (
            dashboard.http_client() as http,
            WorkAPIClient(api_key=emulator.api_key, base_url=emulator.base_url, timeout=30.0) as client,
        ):

            async def env_dashboard() -> None:
                response = await http.get(env_path)
                if response.status_code != 200 or env.work_ids[0] not in response.text:
                    shown = re.findall(r'data-failure-kind="([^"]+)"', response.text)
                    raise RuntimeError(
                        f"environment page answered {response.status_code} without its items"
                        f" (failure banners: {', '.join(shown) or 'none'}; {response.text.count('<tr')} rows)"
                    )

            async def env_direct() -> None:
                _, _, page = await asyncio.gather(
                    client.retrieve_environment(env.id),
                    client.work_stats(env.id),
                    client.list_work(env.id, environment_key=env.key, limit=ITEMS),
                )
                if len(page.data) != ITEMS:
                    raise RuntimeError(f"listed {len(page.data)} items, not {ITEMS}")

            async def item_dashboard() -> None:
                response = await http.get(item_path)
                if response.status_code != 200 or work_id not in response.text:
                    raise RuntimeError(f"work item page answered {response.status_code}")

            async def item_direct() -> None:
                await asyncio.gather(
                    client.retrieve_work(env.id, work_id), client.retrieve_environment(env.id)
                )

            async def bare() -> None:
                (await http.get("/healthz")).raise_for_status()

            calls = {
                "bare": bare,
                "env_dashboard": env_dashboard,
                "env_direct": env_direct,
                "item_dashboard": item_dashboard,
                "item_direct": item_direct,
            }
            # The page reads the work index, which the dashboard's sync fills from the upstream after it starts.
            deadline = time.monotonic() + 90
            while True:
                try:
                    await env_dashboard()
                    break
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.25)
            for _ in range(cfg["warmup"]):
                for call in calls.values():
                    await call()
            # Interleaved, so drift (caches, the emulator's database growing) touches both ways alike.
            for _ in range(cfg["requests"]):
                for name, call in calls.items():
                    samples[name].append(await timed(call))

    for page, label in (("env", f"environment page ({ITEMS} items)"), ("item", "work item page")):
        through = statistics.median(samples[f"{page}_dashboard"])
        direct = statistics.median(samples[f"{page}_direct"])
        result.add(f"{label}: dashboard", f"{through * 1000:.1f} ms")
        result.add(f"{label}: direct client", f"{direct * 1000:.1f} ms")
        result.add(f"{label}: ratio", f"{through / direct:.1f}x")
        result.add(f"{label}: added", f"{(through - direct) * 1000:.1f} ms")
    result.note(
        f"Medians of {cfg['requests']} sequential requests each way, interleaved, after {cfg['warmup']} warm-up "
        "rounds; the dashboard opens a client per request, the direct side keeps one open. A bare request to the "
        f"dashboard (/healthz: the HTTP hop and the middleware, no upstream call) took "
        f"{statistics.median(samples['bare']) * 1000:.1f} ms."
    )
    return result
