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

from bench.harness import Result, Viewers, Workspace, in_thread, rss_kib, start_all

NAME = "memory"
TITLE = "Memory per websocket"
ENVIRONMENT = "memory-1"


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"sockets": 20, "warmup": 0.5, "settle": 0.2, "receive": 0.6, "interval": 0.2}
    return {"sockets": 500, "warmup": 3.0, "settle": 3.0, "receive": 10.0, "interval": 0.5}


def environments(quick: bool) -> list[dict[str, Any]]:
    return [{"name": ENVIRONMENT, "items": 10, "active": 2}]


def time_limit(quick: bool) -> float:
    return 60.0 if quick else 300.0


async def measure(workspace: Workspace, cfg: dict[str, Any], *, deflate: bool) -> dict[str, float]:
    """RSS before and after N idle and N receiving sockets, on a dashboard with or without permessage-deflate."""
    sockets, settle = cfg["sockets"], cfg["settle"]
    env = workspace.environment(ENVIRONMENT)
    idle_path = "/ws/live/"
    receiving_path = f"/ws/live/{env.id}/"
    name = f"{NAME}-{'deflate' if deflate else 'plain'}"
    with workspace.stack(name) as stack:
        emulator = stack.emulator()
        dashboard = stack.dashboard(
            emulator,
            environments=[env],
            settings={"FEED_INTERVAL_SECONDS": str(cfg["interval"])},
            deflate=deflate,
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
    # As shipped (no per-message compression) and with uvicorn's default (permessage-deflate), one after the other.
    plain = await measure(workspace, cfg, deflate=False)
    deflated = await measure(workspace, cfg, deflate=True)
    for label, m in (("", plain), ("with permessage-deflate: ", deflated)):
        result.add(f"{label}idle socket", f"{m['idle_kib']:.1f} KiB")
        result.add(f"{label}receiving socket", f"{m['receiving_kib']:.1f} KiB")
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
        "the shipped server declines it (uvicorn --ws-per-message-deflate false): frames are a few KiB of HTML "
        "on a local network, and a compression context per socket costs memory and CPU per frame."
    )
    return result
