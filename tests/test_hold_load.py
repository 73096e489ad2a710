"""Load: 1,000 websocket viewers on one dashboard instance, receiving live updates while pages keep being served.

One dashboard (uvicorn subprocess serving ``dashboard.asgi``, in-memory channel layer, lifespan on) against one
emulator subprocess, both on SQLite files of their own in a temporary directory, migrated and seeded by
``bench.prepare`` (which also signs a viewer in; the sockets and the page client carry that session cookie and an
Origin matching the host). The servers, the viewers and the percentiles come from ``bench.harness``.

What a person would notice is asserted: every one of the 1,000 screens shows each new queue depth after work is
enqueued through the emulator's admin surface, no socket is dropped, every page asked for meanwhile answers 200, and
the server logs no traceback. The figures (server memory, delivery time from enqueue to receipt, page latency
meanwhile) are printed at the end of the run; they are not compared with anything beyond generous sanity bounds,
because the machine is shared and has two cores.

Select it with ``-m load`` (or deselect it with ``-m "not load"``).
"""

from __future__ import annotations

import asyncio
import re
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from bench.harness import (
    Dashboard,
    Emulator,
    Viewers,
    Workspace,
    in_thread,
    ms,
    percentile,
    rss_kib,
    start_all,
    wait_until,
)

pytestmark = [pytest.mark.load, pytest.mark.timeout(240)]

VIEWERS = 1000
ROUNDS = 5  # work enqueued this many times, one item each, each time waited for on every screen
FEED_INTERVAL_SECONDS = 1.0
ENVIRONMENT = "load-1"
QUEUED_AT_START = 12
# Sanity bounds only: far above what the machine does even when busy, so only a stall or a loss trips them.
DELIVERY_BOUND_SECONDS = 45.0
PAGE_BOUND_SECONDS = 30.0
WANTED_FILES = 4 * VIEWERS + 1024  # this process's sockets, plus what the servers (which inherit it) need

DEPTH = re.compile(r'data-figure="depth">\s*(\d+)\s*<')


class _Summary:
    """Prints the load figures at the end of the run (``make test`` shows them)."""

    lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.write_sep("=", f"hold: load ({VIEWERS} websocket viewers on one instance)")
            for line in self.lines:
                terminalreporter.write_line(line)


@pytest.fixture
def load_figures(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    manager = request.config.pluginmanager
    summary = manager.get_plugin("hold-load-figures")
    if summary is None:
        summary = _Summary()
        manager.register(summary, "hold-load-figures")
    yield summary.lines


def raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


class PageLoop:
    """A signed-in person reloading the overview and the environment page, one request after the other."""

    def __init__(self, dashboard: Dashboard, environment_id: str) -> None:
        self.dashboard = dashboard
        self.paths = ["/", f"/environments/{environment_id}/"]
        # What the screens were doing when each page was asked for: "open" (no screen yet), "connecting",
        # "receiving".
        self.phase = "open"
        self.latencies: dict[str, list[float]] = {"open": [], "connecting": [], "receiving": []}
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def fetch(self, client: httpx.AsyncClient, path: str) -> None:
        started = time.monotonic()
        try:
            response = await client.get(path)
        except httpx.HTTPError as exc:
            self.failures.append(f"{path}: {exc!r}")
            return
        self.latencies[self.phase].append(time.monotonic() - started)
        if response.status_code != 200:
            self.failures.append(f"{path}: {response.status_code}")

    async def _run(self) -> None:
        async with self.dashboard.http_client() as client:
            n = 0
            while True:
                await self.fetch(client, self.paths[n % len(self.paths)])
                n += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def test_a_thousand_viewers_receive_every_update_while_pages_are_served(
    load_figures: list[str],
) -> None:
    raise_file_limit(WANTED_FILES)
    workspace = Workspace()
    try:
        await in_thread(workspace.prepare, [{"name": ENVIRONMENT, "items": QUEUED_AT_START}])
        env = workspace.environment(ENVIRONMENT)
        with workspace.stack("load") as stack:
            emulator = stack.emulator()
            dashboard = stack.dashboard(
                emulator, environments=[env], settings={"FEED_INTERVAL_SECONDS": str(FEED_INTERVAL_SECONDS)}
            )
            await in_thread(start_all, emulator, dashboard)
            await _run(emulator, dashboard, env.id, load_figures)
        # Read once both have stopped, so a failure while shutting down counts too.
        for server in (dashboard, emulator):
            log = server.log_path.read_text(errors="replace")
            assert "Traceback" not in log, f"{server.name}: {log[log.index('Traceback') - 500 :][:3000]}"
    finally:
        await in_thread(workspace.close)


async def _run(emulator: Emulator, dashboard: Dashboard, env_id: str, figures: list[str]) -> None:
    # Each viewer's first frame showing each round's depth: (round, viewer) -> time received.
    seen: dict[tuple[int, int], float] = {}
    screens_with: Counter[int] = Counter()  # round -> how many viewers have seen its depth
    target = {"depth": -1, "round": -1}

    def on_frame(index: int, received: float, frame: str) -> None:
        match = DEPTH.search(frame)
        key = (target["round"], index)
        if match and int(match.group(1)) == target["depth"] and key not in seen:
            seen[key] = received
            screens_with[target["round"]] += 1

    def everyone_has(round_: int) -> Callable[[], bool]:
        return lambda: screens_with[round_] >= VIEWERS

    # Warm-up: the first pages and the first socket pay for imports, the live runtime and the first render.
    pages = PageLoop(dashboard, env_id)
    async with dashboard.http_client() as client:
        for n in range(6):
            await pages.fetch(client, pages.paths[n % 2])
    assert not pages.failures, pages.failures
    async with Viewers(dashboard) as warmup:
        await warmup.open([f"/ws/live/{env_id}/"])
        await wait_until(lambda: warmup.frames > 0, timeout=30, what="the first live frame")
    rss_before = rss_kib(dashboard.pid)

    delivery: list[float] = []
    async with Viewers(dashboard, on_frame) as viewers:
        # Pages are asked for from the moment the screens start connecting (they get frames as they connect).
        pages.phase = "connecting"
        pages.start()
        depth = QUEUED_AT_START
        try:
            opening = time.monotonic()
            await viewers.open([f"/ws/live/{env_id}/"] * VIEWERS)
            open_seconds = time.monotonic() - opening
            pages.phase = "receiving"
            for round_ in range(ROUNDS):
                depth += 1
                target.update(depth=depth, round=round_)
                enqueued_at = time.time()
                await in_thread(emulator.admin, "POST", f"environments/{env_id}/work", {"type": "session"})
                try:
                    await wait_until(everyone_has(round_), timeout=DELIVERY_BOUND_SECONDS, what="delivery")
                except TimeoutError:
                    pytest.fail(
                        f"depth {depth} reached {screens_with[round_]} of {VIEWERS} screens "
                        f"in {DELIVERY_BOUND_SECONDS:.0f} s"
                    )
                delivery.extend(t - enqueued_at for (k, _), t in seen.items() if k == round_)
        finally:
            await pages.stop()
        still_open = sum(1 for ws in viewers.sockets if ws.close_code is None)
        frames = viewers.frames
        rss_after = rss_kib(dashboard.pid)

    figures.extend(
        [
            f"opening {VIEWERS} sockets: {open_seconds:.1f} s; {frames} frames received; {ROUNDS} updates, "
            f"each seen on every screen (the feed polls every {FEED_INTERVAL_SECONDS:g} s)",
            f"server RSS: {rss_before / 1024:.0f} MiB before, {rss_after / 1024:.0f} MiB with {VIEWERS} viewers "
            f"({(rss_after - rss_before) / VIEWERS:.0f} KiB per viewer)",
            f"delivery, enqueue to receipt ({len(delivery)} receipts): p50 {ms(percentile(delivery, 50))}, "
            f"p99 {ms(percentile(delivery, 99))}, max {ms(max(delivery))}",
            *(
                f"page latency, {what} ({len(times)} pages): p50 {ms(percentile(times, 50))}, "
                f"p99 {ms(percentile(times, 99))}, max {ms(max(times, default=0))}"
                for what, times in (
                    ("no screen open", pages.latencies["open"]),
                    (f"while {VIEWERS} screens connect", pages.latencies["connecting"]),
                    (f"while {VIEWERS} screens receive the updates", pages.latencies["receiving"]),
                )
            ),
        ]
    )
    assert len(delivery) == VIEWERS * ROUNDS
    assert still_open == VIEWERS, f"{VIEWERS - still_open} sockets were closed"
    assert not pages.failures, pages.failures[:10]
    assert len(pages.latencies["receiving"]) >= ROUNDS, "pages stopped being served"
    assert max(max(times) for times in pages.latencies.values()) < PAGE_BOUND_SECONDS
