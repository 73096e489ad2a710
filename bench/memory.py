"""Memory per open websocket: the dashboard server's resident memory (``VmRSS`` of the uvicorn process, read from
``/proc/<pid>/status``) before and after opening N sockets, idle and receiving.

One dashboard (uvicorn subprocess, in-memory channel layer) against the emulator. After a warm-up (a few sockets of
each kind opened, fed and closed, so imports, the live runtime and the first render are paid for), N idle sockets
(overview screens showing no environment: accepted, subscribed, sent nothing) are opened; then N more on an
environment page whose feed publishes every half second, read for a few seconds. Each step's growth divided by N
is the cost of one socket of that kind. Clients negotiate permessage-deflate as browsers do.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.harness import SHIPPED_WS, Result, Viewers, Workspace, in_thread, rss_kib, start_all

NAME = "memory"
TITLE = "Memory per websocket"
ENVIRONMENT = "memory-1"
LEGACY_WS = "websockets"
# The figures of the run before the change (README, 2026-11-29), and the goals they are held to (KiB).
RECORDED = {"idle": 71.4, "receiving": 86.2}
GOALS = {"idle": 32.0, "receiving": 40.0}


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"sockets": 20, "warmup": 0.5, "settle": 0.2, "receive": 0.6, "interval": 0.2}
    return {"sockets": 500, "warmup": 3.0, "settle": 3.0, "receive": 10.0, "interval": 0.5}


def environments(quick: bool) -> list[dict[str, Any]]:
    return [{"name": ENVIRONMENT, "items": 10, "active": 2}]


def time_limit(quick: bool) -> float:
    return 60.0 if quick else 300.0


async def measure(
    workspace: Workspace, cfg: dict[str, Any], *, deflate: bool, ws: str = ""
) -> dict[str, float]:
    """RSS before and after N idle and N receiving sockets, on a dashboard with or without permessage-deflate."""
    sockets, settle = cfg["sockets"], cfg["settle"]
    env = workspace.environment(ENVIRONMENT)
    idle_path = "/ws/live/"
    receiving_path = f"/ws/live/{env.id}/"
    name = f"{NAME}-{'deflate' if deflate else 'plain'}{'-' + ws if ws else ''}"
    with workspace.stack(name) as stack:
        emulator = stack.emulator()
        dashboard = stack.dashboard(
            emulator,
            environments=[env],
            settings={"FEED_INTERVAL_SECONDS": str(cfg["interval"])},
            deflate=deflate,
            ws=ws,
        )
        await in_thread(start_all, emulator, dashboard)
        pid = dashboard.pid
        async with Viewers(dashboard) as warmup:
            await warmup.open([idle_path] * 5 + [receiving_path] * 5)
            await asyncio.sleep(cfg["warmup"])
        await asyncio.sleep(settle)
        before = rss_kib(pid)
        async with Viewers(dashboard) as idle:
            await idle.open([idle_path] * sockets)
            await asyncio.sleep(settle)
            with_idle = rss_kib(pid)
            async with Viewers(dashboard) as receiving:
                await receiving.open([receiving_path] * sockets)
                receiving.frames = 0
                await asyncio.sleep(cfg["receive"])
                with_receiving = rss_kib(pid)
                frames = receiving.frames
    return {
        "before": before,
        "idle": with_idle,
        "receiving": with_receiving,
        "idle_kib": (with_idle - before) / sockets,
        "receiving_kib": (with_receiving - with_idle) / sockets,
        "frames": frames,
    }


async def run(workspace: Workspace, quick: bool, redis_url: str) -> Result:
    cfg = settings(quick)
    sockets = cfg["sockets"]
    result = Result(NAME, TITLE)
    # As shipped (no per-message compression, --ws websockets-sansio), then on uvicorn's older websocket
    # implementation, then with uvicorn's default permessage-deflate, one after the other.
    plain = await measure(workspace, cfg, deflate=False)
    legacy = await measure(workspace, cfg, deflate=False, ws=LEGACY_WS)
    deflated = await measure(workspace, cfg, deflate=True)
    for kind in ("idle", "receiving"):
        result.add(
            f"memory per {kind} websocket",
            f"before {RECORDED[kind]:.1f} KiB (recorded); this run, --ws {LEGACY_WS}: "
            f"{legacy[kind + '_kib']:.1f} KiB, with permessage-deflate: {deflated[kind + '_kib']:.1f} KiB → after "
            f"{plain[kind + '_kib']:.1f} KiB; goal ≤ {GOALS[kind]:.0f} KiB",
        )
    for label, m in (("", plain), (f"--ws {LEGACY_WS}: ", legacy), ("with permessage-deflate: ", deflated)):
        result.add(
            f"{label}server RSS: start / +{sockets} idle / +{sockets} receiving",
            f"{m['before'] / 1024:.0f} / {m['idle'] / 1024:.0f} / {m['receiving'] / 1024:.0f} MiB",
        )
    if plain["idle_kib"] > 0 and plain["receiving_kib"] > 0:
        result.add(
            "deflate ÷ plain: idle / receiving",
            f"{deflated['idle_kib'] / plain['idle_kib']:.1f}x / {deflated['receiving_kib'] / plain['receiving_kib']:.1f}x",
        )
    result.note(
        f"{sockets} sockets of each kind; the receiving ones read {plain['frames']:.0f} frames (plain) and "
        f"{deflated['frames']:.0f} (deflate) in {cfg['receive']:g} s (a snapshot every {cfg['interval']:g} s). "
        "RSS includes allocator slack, so small N is noisy. The clients offer permessage-deflate as browsers do; "
        f"the shipped server (--ws {SHIPPED_WS}) declines it (uvicorn --ws-per-message-deflate false): frames are a few KiB of HTML "
        "on a local network, and a compression context per socket costs memory and CPU per frame. The recorded "
        "'before' (README, 2026-11-29) is the figure this change is held against."
    )
    return result
