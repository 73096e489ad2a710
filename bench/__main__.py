"""``python -m bench [NAME ...] [--quick] [--output PATH]``: run the benchmarks in turn, print a summary table and
write it in Markdown (with the machine it ran on) to ``--output``.

Names: upstream, fanout, proxy, memory, emulator, index (default: all, in that order). ``--quick`` runs them
with minimal sizes and windows (for the smoke test; its figures mean nothing) and writes no file unless
``--output`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from bench import emulator, fanout, index_scale, memory, proxy, upstream_cost
from bench.harness import Result, Workspace, machine

BENCHMARKS: dict[str, ModuleType] = {
    module.NAME: module for module in (upstream_cost, fanout, proxy, memory, emulator, index_scale)
}
# Inside the data directory, beside the other files a run leaves: the README quotes the latest figures from here.
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "var" / "bench-results.md"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

Runner = Callable[[Workspace, bool, str], Awaitable[Result]]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks, print the figures and write them in Markdown.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="minimal sizes (smoke test); figures mean nothing"
    )
    parser.add_argument(
        "--output", type=Path, default=None, help=f"Markdown results (default {DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
        help="Redis for the fan-out on Redis ('' to skip it)",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.output is None and not args.quick:
        args.output = DEFAULT_OUTPUT
    return args


def table(results: list[Result]) -> list[str]:
    lines = ["| Benchmark | Figure | Value |", "|---|---|---|"]
    for result in results:
        if result.error:
            lines.append(f"| {result.title} | failed | {result.error} |")
        for figure in result.figures:
            lines.append(f"| {result.title} | {figure.label} | {figure.value} |")
    return lines


def markdown(results: list[Result], info: dict[str, str], quick: bool) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"`make bench` (`python -m bench`), {when}{' — quick mode, figures not meaningful' if quick else ''}.",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} memory, Python {info['python']},"
        f" {info['os']}. Every server, client and fleet in a benchmark runs on this one machine.",
        "",
        *table(results),
        "",
        *(
            line
            for result in results
            for table_ in result.tables
            for line in (f"## {result.title}", "", *table_, "")
        ),
        "## Notes",
        "",
    ]
    for result in results:
        for note in result.notes:
            lines.append(f"- {result.title}: {note}")
        lines.append(
            f"- {result.title}: took {result.seconds:.0f} s; load average (1 min) when it started: {result.load:.1f}."
        )
    return "\n".join(lines) + "\n"


async def run_one(module: ModuleType, workspace: Workspace, quick: bool, redis_url: str) -> Result:
    print(f"Running {module.NAME}: {module.TITLE} …", flush=True)
    started = time.monotonic()
    load = os.getloadavg()[0]
    runner = cast(Runner, module.run)
    try:
        result = await asyncio.wait_for(runner(workspace, quick, redis_url), timeout=module.time_limit(quick))
    except Exception as exc:
        traceback.print_exc()
        result = Result(module.NAME, module.TITLE, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
    result.seconds = time.monotonic() - started
    result.load = load
    status = "failed: " + result.error if result.error else "done"
    print(f"  {module.NAME} {status} in {result.seconds:.1f} s", flush=True)
    for figure in result.figures:
        print(f"  {module.NAME}: {figure.label}: {figure.value}", flush=True)
    return result


async def main(names: list[str], quick: bool, redis_url: str) -> list[Result]:
    selected = [BENCHMARKS[n] for n in names] if names else list(BENCHMARKS.values())
    workspace = Workspace()
    results: list[Result] = []
    try:
        environments: list[dict[str, Any]] = []
        for module in selected:
            environments.extend(module.environments(quick))
        print(f"Preparing databases in {workspace.root} …", flush=True)
        await asyncio.to_thread(workspace.prepare, environments)
        # One at a time, quick mode too: side by side they starve each other's servers of the two cores, and a
        # smoke run that fails for want of CPU says nothing about the benchmarks.
        for module in selected:
            results.append(await run_one(module, workspace, quick, redis_url))
    finally:
        workspace.close()
    return results


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    with contextlib.suppress(ImportError):
        import uvloop

        return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)
    return None


def cli(argv: list[str]) -> int:
    args = parse_args(argv)
    # The clients use uvloop, as the servers do, so a measurement is not the client's event loop.
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        results = runner.run(main(args.names, args.quick, args.redis_url))
    info = machine()
    text = markdown(results, info, args.quick)
    print()
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"Written to {args.output}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
