"""Page speed: what each read page asks of the upstream, and what it costs on top of those calls.

Dashboard: uvicorn subprocess, a signed-in viewer's session cookie, one keep-alive HTTP client, a demo-like set of
environments (15; 3 in quick mode), their work index filled by the live feed before anything is timed.

- Upstream calls per page: counted at the emulator (its request counters, by route), the median over several
  requests of each page, so the feed's own calls in the same instant do not count.
- Proxy overhead: the environment page (50 items) and the work item page against the same upstream calls made
  directly with one long-lived ``WorkAPIClient`` (the calls counted above, concurrent as in the views), one request
  at a time, interleaved.
- With latency: the emulator answers every call 100 ms late (its fault injection); each page's time ÷ one call's
  time (an environment retrieve), interleaved. A page that makes its calls at once, and reads the rest from the
  work index, takes about one call.

There is no switch back to the pages as they were; the figures before are the ones recorded by the earlier run.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.harness import Emulator, Result, Workspace, in_thread, start_all
from workqueue.client import WorkAPIClient

NAME = "proxy"
TITLE = "Page speed"
ENVIRONMENT = "proxy-1"
ITEMS = 50
LATENCY_MS = 100
GOAL_DIRECT = 1.3
GOAL_LATENCY = 1.2
# The earlier run's figures (pages read the upstream directly then), for "before".
RECORDED_DIRECT = {"env": "2.9x (+50 ms)", "item": "3.0x (+26 ms)"}
RECORDED_LATENCY = {
    "overview": "1,394 ms (14x)",
    "stuck": "1,852 ms (18x)",
    "environment": "144 ms (1.4x)",
    "item": "129 ms (1.3x)",
}


def settings(quick: bool) -> dict[str, int]:
    if quick:
        return {"requests": 3, "warmup": 1, "latency_requests": 2, "count_requests": 3, "environments": 3}
    return {"requests": 50, "warmup": 5, "latency_requests": 15, "count_requests": 9, "environments": 15}


def environments(quick: bool) -> list[dict[str, Any]]:
    others = settings(quick)["environments"] - 1
    return [
        {"name": ENVIRONMENT, "items": ITEMS, "active": 1},
        *({"name": f"proxy-demo-{n:02d}", "items": 20, "active": 2} for n in range(2, others + 2)),
    ]


def time_limit(quick: bool) -> float:
    return 90.0 if quick else 420.0


async def timed(call: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def counted(emulator: Emulator, call: Callable[[], Awaitable[None]]) -> dict[str, int]:
    before = (await in_thread(emulator.upstream_requests))["by_route"]
    await call()
    after = (await in_thread(emulator.upstream_requests))["by_route"]
    return {route: after.get(route, 0) - before.get(route, 0) for route in set(before) | set(after)}


def ratio_text(page: float, base: float) -> str:
    return f"{page / base:.1f}x ({(page - base) * 1000:+.0f} ms)"


async def run(workspace: Workspace, quick: bool, redis_url: str) -> Result:
    cfg = settings(quick)
    result = Result(NAME, TITLE)
    envs = [workspace.environment(spec["name"]) for spec in environments(quick)]
    env = envs[0]
    work_id = env.active_ids[0]
    with workspace.stack(NAME) as stack:
        emulator = stack.emulator()
        dashboard = stack.dashboard(emulator, environments=envs)
        await in_thread(start_all, emulator, dashboard)
        paths = {
            "overview": "/",
            "stuck": "/stuck/",
            "environment": f"/environments/{env.id}/?limit={ITEMS}",
            "item": f"/environments/{env.id}/work/{work_id}/",
        }
        async with (
            dashboard.http_client() as http,
            WorkAPIClient(api_key=emulator.api_key, base_url=emulator.base_url, timeout=30.0) as client,
        ):

            def page(name: str, must_show: str) -> Callable[[], Awaitable[None]]:
                async def get() -> None:
                    response = await http.get(paths[name])
                    if response.status_code != 200 or must_show not in response.text:
                        shown = re.findall(r'data-failure-kind="([^"]+)"', response.text)
                        raise RuntimeError(
                            f"{name} page answered {response.status_code} without {must_show}"
                            f" (failure banners: {', '.join(shown) or 'none'})"
                        )

                return get

            pages = {
                "overview": page("overview", env.name),
                "stuck": page("stuck", "Stuck"),
                "environment": page("environment", env.work_ids[0]),
                "item": page("item", work_id),
            }
            # The pages read the work index, which the dashboard's feed fills from the upstream after it starts.
            deadline = time.monotonic() + (60 if quick else 180)
            for each in envs:
                while True:
                    response = await http.get(f"/environments/{each.id}/?limit={ITEMS}")
                    if response.status_code == 200 and each.work_ids[0] in response.text:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the work index of {each.name} did not fill")
                    await asyncio.sleep(0.25)

            # What each page asks of the upstream, counted where it arrives.
            calls: dict[str, dict[str, int]] = {}
            for name, get in pages.items():
                rounds = [await counted(emulator, get) for _ in range(cfg["count_requests"])]
                routes = {route for r in rounds for route in r}
                medians = {route: int(statistics.median(r.get(route, 0) for r in rounds)) for route in routes}
                calls[name] = {route: n for route, n in sorted(medians.items()) if n}

            # The direct side: the same calls the page made, at once.
            direct_call: dict[str, Callable[[], Awaitable[Any]]] = {
                "environments.list": lambda: client.list_environments(limit=100),
                "environments.retrieve": lambda: client.retrieve_environment(env.id),
                "stats": lambda: client.work_stats(env.id),
                "retrieve": lambda: client.retrieve_work(env.id, work_id),
                "list": lambda: client.list_work(env.id, environment_key=env.key, limit=ITEMS),
            }

            def direct(name: str) -> Callable[[], Awaitable[None]]:
                made = [direct_call[route] for route, n in calls[name].items() for _ in range(n)]

                async def go() -> None:
                    await asyncio.gather(*(call() for call in made))

                return go

            async def one_call() -> None:
                await client.retrieve_environment(env.id)

            async def bare() -> None:
                (await http.get("/healthz")).raise_for_status()

            compared = {
                "bare": bare,
                "env_dashboard": pages["environment"],
                "env_direct": direct("environment"),
                "item_dashboard": pages["item"],
                "item_direct": direct("item"),
            }
            samples: dict[str, list[float]] = {name: [] for name in compared}
            for _ in range(cfg["warmup"]):
                for call in compared.values():
                    await call()
            # Interleaved, so drift (load, caches, the emulator's database growing) touches both ways alike.
            for _ in range(cfg["requests"]):
                for name, call in compared.items():
                    samples[name].append(await timed(call))

            slow: dict[str, list[float]] = {name: [] for name in [*pages, "one_call"]}
            await in_thread(emulator.admin, "POST", "faults", {"route": "*", "latency_ms": LATENCY_MS})
            try:
                for call in (*pages.values(), one_call):
                    await call()
                for _ in range(cfg["latency_requests"]):
                    for name, call in (*pages.items(), ("one_call", one_call)):
                        slow[name].append(await timed(call))
            finally:
                await in_thread(emulator.admin, "DELETE", "faults")

    def described(name: str) -> str:
        return ", ".join(f"{route} ×{n}" for route, n in calls[name].items()) or "none"

    result.add("upstream calls per page", "; ".join(f"{name}: {described(name)}" for name in pages))
    for key, label in (
        ("env", f"environment page ({ITEMS} items) ÷ direct calls"),
        ("item", "work item page ÷ direct calls"),
    ):
        through = statistics.median(samples[f"{key}_dashboard"])
        alone = statistics.median(samples[f"{key}_direct"])
        result.add(
            label,
            f"before {RECORDED_DIRECT[key]}, recorded → after {ratio_text(through, alone)}"
            f" ({through * 1000:.1f} / {alone * 1000:.1f} ms); goal ≤ {GOAL_DIRECT}x",
        )
    one = statistics.median(slow["one_call"])
    for name, label in (
        ("overview", "overview"),
        ("stuck", "stuck page"),
        ("environment", "environment page"),
        ("item", "work item page"),
    ):
        took = statistics.median(slow[name])
        result.add(
            f"{label}, {LATENCY_MS} ms on every upstream call ÷ one call ({len(envs)} environments)",
            f"before {RECORDED_LATENCY[name]}, recorded → after {took * 1000:.0f} ms ({took / one:.2f}x);"
            f" goal ≤ {GOAL_LATENCY}x",
        )
    result.note(
        f"Medians of {cfg['requests']} sequential requests each way, interleaved, after {cfg['warmup']} warm-up "
        "rounds; the direct side makes the calls the page was counted making at the emulator (median of "
        f"{cfg['count_requests']} requests per page), concurrently, on one long-lived client. A bare request to "
        f"the dashboard (/healthz: the HTTP hop and the middleware) took {statistics.median(samples['bare']) * 1000:.1f}"
        f" ms. With {LATENCY_MS} ms injected on every emulator route, one environment retrieve took "
        f"{one * 1000:.0f} ms (median of {cfg['latency_requests']}, interleaved with the pages). The feed and the "
        'index sync keep running meanwhile, as in production. "Before" is the earlier run\'s figure: the old '
        "behaviour cannot be selected any more."
    )
    return result
