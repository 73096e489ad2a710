"""The work index at scale: one item claimed, heartbeated once and abandoned, under 1,000 / 10,000 / 100,000 newer
stopped items. How long the dashboard takes to show it as stuck, what keeping the index costs (upstream requests a
minute, CPU, database rows), and how long its pages take, per history size, next to the answer of the window
approach that looked only at the newest items.

Per size, a stack of its own: a fresh emulator (``manage.py emulator`` subprocess, SQLite) whose admin call
(``POST /_emulator/environments/{env}/work/bulk``) creates the abandoned item (active, last heartbeat an hour ago,
its lease running on) and then N stopped items on top, timed; then the window approach's answer: the newest 2,000
items (the old stuck page; the tiles looked at 200) listed through ``workqueue.client``, newest first, and whether
the abandoned item is among them. Then a real dashboard (uvicorn subprocess, lifespan on, so the live feed starts
with it) with the environment's key and the product's default feed interval and index budget; the bench waits for
the item on ``/stuck/`` (polled every second), then on the environment page's stuck filter and in the overview
tile's stuck count, and for the fill walk to end (the dashboard's SQLite file, read beside it). Once filled: the
environment's upstream requests counted at the emulator over a window, scaled to a minute (beside the budget,
``INDEX_REQUESTS_PER_MINUTE``), the dashboard process's CPU over the same window, the index's rows, and the
median time of the environment page and the stuck page (one request at a time, after a warm-up).

``BENCH_INDEX_SIZES=1000,10000`` runs other sizes (full mode only).
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    Dashboard,
    Emulator,
    Result,
    Workspace,
    cpu_seconds,
    in_thread,
    percentile,
    start_all,
)
from workqueue.client import WorkAPIClient

NAME = "index"
TITLE = "Work index at scale"
WINDOW_ITEMS = 2000  # what the stuck page of the window approach looked at (the tiles: 200)
TILE_WINDOW_ITEMS = 200
LIST_PAGE = 100
# The abandoned item: claimed, heartbeated once an hour ago, its lease running on (the worker holding it is gone
# without a word). Stuck by the default heartbeat threshold (2 minutes) from the start.
ABANDONED = {
    "count": 1,
    "state": "active",
    "age_seconds": 4000,
    "heartbeat_age_seconds": 3500,
    "lease_expires_in_seconds": 86400,
    "metadata": {"owner": "bench", "ticket": "OPS-1"},
}
# The newer history: stopped items created over the last 50 minutes.
HISTORY_SPAN_SECONDS = 3000.0


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "sizes": (100, 400),
            "dashboard": {"FEED_INTERVAL_SECONDS": "0.25", "INDEX_REQUESTS_PER_MINUTE": "6000"},
            "interval": 0.25,
            "budget": 6000,
            "poll": 0.25,
            "window": 1.0,
            "page_requests": 2,
            "warmup": 1,
            "found_within": 60.0,
        }
    sizes = tuple(int(s) for s in os.environ.get("BENCH_INDEX_SIZES", "").split(",") if s.strip())
    return {
        "sizes": sizes or (1000, 10_000, 100_000),
        # The product's defaults (3 s, 120 a minute), stated here so the figures say what they were measured at.
        "dashboard": {"FEED_INTERVAL_SECONDS": "3", "INDEX_REQUESTS_PER_MINUTE": "120"},
        "interval": 3.0,
        "budget": 120,
        "poll": 1.0,
        "window": 60.0,
        "page_requests": 20,
        "warmup": 3,
        "found_within": 1500.0,
    }


def env_name(size: int) -> str:
    return f"index-{size}"


def environments(quick: bool) -> list[dict[str, Any]]:
    return [{"name": env_name(size), "items": 0} for size in settings(quick)["sizes"]]


def time_limit(quick: bool) -> float:
    return 90.0 if quick else 3600.0


def count(n: float) -> str:
    return f"{n:,.0f}"


@dataclass
class Measured:
    """One history size's figures."""

    size: int
    bulk_seconds: float = 0.0
    window_found: bool = False
    tile_window_found: bool = False
    window_seconds: float = 0.0
    found: dict[str, float] = field(default_factory=dict)  # surface -> seconds after the dashboard started
    fill_seconds: float = 0.0
    fill_requests: int = 0
    fill_cpu: float = 0.0
    walk_pages: int = 0
    steady_per_minute: float = 0.0
    steady_routes: dict[str, int] = field(default_factory=dict)
    steady_cpu_per_minute: float = 0.0
    rows: int = 0
    live_rows: int = 0
    events: int = 0
    database_mib: float = 0.0
    pages: dict[str, list[float]] = field(default_factory=dict)

    @property
    def found_after(self) -> float:
        return max(self.found.values()) if self.found else float("nan")

    def page_median(self, name: str) -> float:
        return statistics.median(self.pages[name])


def bulk_create(emulator: Emulator, env_id: str, *groups: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(
        base_url=emulator.base_url, headers={"Authorization": f"Bearer {emulator.api_key}"}, timeout=300.0
    ) as http:
        response = http.post(f"/_emulator/environments/{env_id}/work/bulk", json={"groups": list(groups)})
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer


def history_group(size: int) -> dict[str, Any]:
    return {
        "count": size,
        "state": "stopped",
        "age_seconds": HISTORY_SPAN_SECONDS,
        "spacing_seconds": min(1.0, HISTORY_SPAN_SECONDS * 0.95 / size),
    }


async def window_answer(emulator: Emulator, env_id: str, key: str, buried: str) -> tuple[bool, bool]:
    """The window approach: is the item among the newest 2,000 (the old stuck page) / 200 (the old tiles)?"""
    newest: list[str] = []
    async with WorkAPIClient(api_key=emulator.api_key, base_url=emulator.base_url, timeout=30.0) as client:
        cursor: str | None = None
        while len(newest) < WINDOW_ITEMS:
            page = await client.list_work(env_id, environment_key=key, limit=LIST_PAGE, page=cursor)
            newest.extend(item.id for item in page.data)
            if page.next_page is None:
                break
            cursor = page.next_page
    return buried in newest[:WINDOW_ITEMS], buried in newest[:TILE_WINDOW_ITEMS]


def index_state(database: Path, env_id: str) -> dict[str, Any]:
    """What the dashboard's index holds for the environment, read from its SQLite file beside it."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as db:
        state = db.execute(
            "SELECT filled, walk_pages FROM dashboard_indexedenvironment WHERE environment_id = ?", (env_id,)
        ).fetchone()
        rows, live = db.execute(
            "SELECT COUNT(*), SUM(state != 'stopped') FROM dashboard_indexedwork WHERE environment_id = ?",
            (env_id,),
        ).fetchone()
        (events,) = db.execute(
            "SELECT COUNT(*) FROM dashboard_workevent WHERE environment_id = ?", (env_id,)
        ).fetchone()
    size = sum(p.stat().st_size for p in database.parent.glob(database.name + "*"))
    return {
        "filled": bool(state and state[0]),
        "walk_pages": int(state[1]) if state else 0,
        "rows": int(rows or 0),
        "live": int(live or 0),
        "events": int(events or 0),
        "mib": size / 1024 / 1024,
    }


def stuck_rows(html: str) -> list[str]:
    return re.findall(r'<tr class="is-stuck" data-work-id="(work_[\w-]+)">', html)


def tile_stuck(html: str, env_id: str) -> str:
    tile = re.search(
        rf'<article class="tile[^"]*" data-environment-id="{re.escape(env_id)}"[^>]*>(.*?)</article>',
        html,
        re.S,
    )
    figure = re.search(r'data-figure="stuck"[^>]*>(.*?)</dd>', tile.group(1), re.S) if tile else None
    return re.sub(r"<[^>]+>", "", figure.group(1)).strip() if figure else ""


async def wait_for_surfaces(
    http: httpx.AsyncClient, env_id: str, buried: str, started: float, cfg: dict[str, Any]
) -> dict[str, float]:
    """Seconds after ``started`` at which the item is on the stuck page, under the environment's stuck filter and
    counted on its tile. The stuck page is asked every poll; the others once it shows the item (the index is one
    read model: they follow within a round), so the bench's own requests cost the dashboard little meanwhile."""
    checks = {
        "stuck page": ("/stuck/", lambda html: stuck_rows(html) == [buried]),
        "stuck filter": (f"/environments/{env_id}/?stuck=1", lambda html: stuck_rows(html) == [buried]),
        "tile count": ("/", lambda html: tile_stuck(html, env_id) == "1"),
    }
    found: dict[str, float] = {}
    deadline = started + cfg["found_within"]
    while len(found) < len(checks):
        for surface, (path, shows) in checks.items():
            if surface in found or (surface != "stuck page" and "stuck page" not in found):
                continue
            response = await http.get(path)
            if response.status_code == 200 and shows(response.text):
                found[surface] = time.monotonic() - started
        if len(found) < len(checks):
            if time.monotonic() > deadline:
                missing = ", ".join(s for s in checks if s not in found)
                raise TimeoutError(
                    f"the abandoned item was not on {missing} within {cfg['found_within']:.0f} s"
                )
            await asyncio.sleep(cfg["poll"])
    return found


async def wait_filled(database: Path, env_id: str, started: float, cfg: dict[str, Any]) -> dict[str, Any]:
    deadline = started + cfg["found_within"]
    while True:
        state = await in_thread(index_state, database, env_id)
        if state["filled"]:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"the index was not filled within {cfg['found_within']:.0f} s")
        await asyncio.sleep(min(0.5, cfg["poll"]))


async def page_times(
    http: httpx.AsyncClient, paths: dict[str, str], cfg: dict[str, Any]
) -> dict[str, list[float]]:
    """Each page, one request at a time, interleaved, after a warm-up; every answer must be a whole page."""
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(cfg["warmup"] + cfg["page_requests"]):
        for name, path in paths.items():
            begun = time.perf_counter()
            response = await http.get(path)
            took = time.perf_counter() - begun
            if response.status_code != 200:
                raise RuntimeError(f"{name} ({path}) answered {response.status_code}")
            if round_ >= cfg["warmup"]:
                samples[name].append(took)
    return samples


async def one_size(workspace: Workspace, size: int, cfg: dict[str, Any]) -> Measured:
    measured = Measured(size)
    env = workspace.environment(env_name(size))
    with workspace.stack(f"{NAME}-{size}") as stack:
        emulator = stack.emulator()
        await in_thread(start_all, emulator)
        begun = time.monotonic()
        buried = (await in_thread(bulk_create, emulator, env.id, ABANDONED))["ids"][0]
        await in_thread(bulk_create, emulator, env.id, history_group(size))
        measured.bulk_seconds = time.monotonic() - begun

        begun = time.monotonic()
        measured.window_found, measured.tile_window_found = await window_answer(
            emulator, env.id, env.key, buried
        )
        measured.window_seconds = time.monotonic() - begun

        dashboard: Dashboard = stack.dashboard(emulator, environments=[env], settings=cfg["dashboard"])
        await in_thread(emulator.reset_requests)
        started = time.monotonic()
        await in_thread(start_all, dashboard)
        database = stack.data / "dashboard.sqlite3"
        async with dashboard.http_client() as http:
            filled_task = asyncio.create_task(wait_filled(database, env.id, started, cfg))
            try:
                measured.found = await wait_for_surfaces(http, env.id, buried, started, cfg)
                state = await filled_task
            finally:
                filled_task.cancel()
            measured.fill_seconds = time.monotonic() - started
            measured.fill_cpu = cpu_seconds(dashboard.pid)
            counts = await in_thread(emulator.upstream_requests)
            measured.fill_requests = int(counts.get("by_environment", {}).get(env.id, {}).get("total", 0))
            measured.walk_pages = state["walk_pages"]

            # Steady state: filled, nobody on a page; what keeping the index in step costs.
            await asyncio.sleep(2 * cfg["interval"])
            await in_thread(emulator.reset_requests)
            cpu_before, window_started = cpu_seconds(dashboard.pid), time.monotonic()
            await asyncio.sleep(cfg["window"])
            counts = await in_thread(emulator.upstream_requests)
            elapsed = time.monotonic() - window_started
            measured.steady_cpu_per_minute = (cpu_seconds(dashboard.pid) - cpu_before) * 60.0 / elapsed
            routes = dict(counts.get("by_environment", {}).get(env.id, {}))
            total = int(routes.pop("total", 0))
            measured.steady_routes = routes
            measured.steady_per_minute = total * 60.0 / elapsed

            state = await in_thread(index_state, database, env.id)
            measured.rows, measured.live_rows, measured.events = state["rows"], state["live"], state["events"]
            measured.database_mib = state["mib"]
            measured.pages = await page_times(
                http, {"environment page": f"/environments/{env.id}/", "stuck page": "/stuck/"}, cfg
            )
    return measured


def side_by_side(runs: list[Measured], budget: int) -> list[str]:
    """One column per history size, so what grows with history shows."""
    head = "| | " + " | ".join(f"{count(m.size)} items" for m in runs) + " |"
    lines = [head, "|---" * (len(runs) + 1) + "|"]

    def row(label: str, values: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    row("history created by the emulator's bulk call", [f"{m.bulk_seconds:.1f} s" for m in runs])
    row(
        f"window approach (newest {count(WINDOW_ITEMS)}): abandoned item found",
        ["yes" if m.window_found else "**no**" for m in runs],
    )
    row(
        f"window approach (tiles, newest {TILE_WINDOW_ITEMS}): found",
        ["yes" if m.tile_window_found else "**no**" for m in runs],
    )
    row("index: on /stuck/ after", [f"{m.found['stuck page']:.0f} s" for m in runs])
    row("index: on the stuck filter and the tile count after", [f"{m.found_after:.0f} s" for m in runs])
    row(
        "fill: time / upstream requests", [f"{m.fill_seconds:.0f} s / {count(m.fill_requests)}" for m in runs]
    )
    # The budget is per minute: a fill shorter than a minute spent its total within one.
    row(
        f"fill: upstream requests a minute (budget {budget}; a fill under a minute: its total)",
        [f"{m.fill_requests * 60.0 / max(m.fill_seconds, 60.0):.0f}" for m in runs],
    )
    row("fill: dashboard CPU (from its start)", [f"{m.fill_cpu:.1f} s" for m in runs])
    row(
        f"filled: upstream requests a minute (budget {budget})",
        [f"{m.steady_per_minute:.0f}" for m in runs],
    )
    row("filled: dashboard CPU a minute", [f"{m.steady_cpu_per_minute:.2f} s" for m in runs])
    row(
        "index rows (live) / timeline events",
        [f"{count(m.rows)} ({m.live_rows}) / {count(m.events)}" for m in runs],
    )
    row("dashboard database (SQLite, with WAL)", [f"{m.database_mib:.1f} MiB" for m in runs])
    for name in ("environment page", "stuck page"):
        row(
            f"{name}: median (p90)",
            [
                f"{m.page_median(name) * 1000:.1f} ms ({percentile(m.pages[name], 90) * 1000:.1f})"
                for m in runs
            ],
        )
    return lines


async def run(workspace: Workspace, quick: bool, redis_url: str) -> Result:
    cfg = settings(quick)
    result = Result(NAME, TITLE)
    runs: list[Measured] = []
    for size in cfg["sizes"]:
        print(f"  {NAME}: {count(size)} items of history …", flush=True)
        runs.append(await one_size(workspace, size, cfg))
    first, last = runs[0], runs[-1]
    budget = int(cfg["budget"])
    sizes = " / ".join(count(m.size) for m in runs)

    def per_size(values: list[str], unit: str = "") -> str:
        return " / ".join(values) + (f" {unit}" if unit else "")

    result.add("history sizes (items)", sizes)
    result.add(
        "emulator bulk call, history created in", per_size([f"{m.bulk_seconds:.1f}" for m in runs], "s")
    )
    result.add(
        f"window approach (newest {count(WINDOW_ITEMS)}): abandoned item found",
        per_size([f"{count(m.size)}: {'yes' if m.window_found else 'no'}" for m in runs]),
    )
    result.add(
        "index: abandoned item on /stuck/, stuck filter and tile count after",
        per_size([f"{m.found_after:.0f}" for m in runs], "s"),
    )
    result.add("index: fill walk took", per_size([f"{m.fill_seconds:.0f}" for m in runs], "s"))
    result.add(
        "index: fill walk, upstream requests", per_size([count(m.fill_requests) for m in runs], "requests")
    )
    result.add(
        f"index: filled, upstream requests per minute (budget {budget})",
        per_size([f"{m.steady_per_minute:.0f}" for m in runs], "req/min"),
    )
    result.add(
        "index: filled, dashboard CPU per minute",
        per_size([f"{m.steady_cpu_per_minute:.2f}" for m in runs], "s"),
    )
    result.add("index: rows (live)", per_size([f"{count(m.rows)} ({m.live_rows})" for m in runs]))
    result.add("index: timeline events", per_size([count(m.events) for m in runs]))
    for name in ("environment page", "stuck page"):
        ratio = last.page_median(name) / first.page_median(name)
        result.add(
            f"{name}, median",
            per_size([f"{m.page_median(name) * 1000:.1f}" for m in runs], "ms")
            + f" ({count(last.size)} ÷ {count(first.size)}: {ratio:.2f}x)",
        )
    ratio = last.steady_per_minute / first.steady_per_minute if first.steady_per_minute else float("nan")
    result.add(f"filled upstream cost, {count(last.size)} ÷ {count(first.size)}", f"{ratio:.2f}x")
    over = [m for m in runs if m.steady_per_minute >= budget]
    if over:
        result.error = f"over the budget once filled: {', '.join(f'{m.steady_per_minute:.0f} at {m.size}' for m in over)}"
    table = side_by_side(runs, budget)
    result.tables.append(table)
    print("\n".join(table), flush=True)
    result.note(
        "Per size a fresh emulator and dashboard (SQLite, the embedded default); one environment holding one item "
        "claimed, heartbeated once and abandoned an hour ago (active, its lease running on), under N newer "
        f"stopped items; the dashboard at FEED_INTERVAL_SECONDS={cfg['interval']:g} and INDEX_REQUESTS_PER_MINUTE="
        f"{budget}, nobody watching the environment (the index follows every environment with a key). Times "
        f"count from the dashboard's launch; /stuck/ is asked every {cfg['poll']:g} s. The window approach lists "
        f"the newest {count(WINDOW_ITEMS)} items through workqueue.client, as the old stuck page did."
    )
    result.note(
        f"Filled figures over {cfg['window']:g} s after the fill, counted at the emulator for that environment and "
        f"scaled to a minute; page medians of {cfg['page_requests']} requests each, one at a time, interleaved, "
        "while the feed runs."
    )
    for m in runs:
        parts = ", ".join(f"{route} {n}" for route, n in sorted(m.steady_routes.items()))
        result.note(f"{count(m.size)} items: filled, requests by route in the window: {parts or 'none'}.")
    return result
