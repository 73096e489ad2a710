"""Smoke run of every benchmark (``python -m bench --quick``) so they do not rot: each must start its servers, measure
something, stop them, and land in the Markdown table. Figures from a quick run mean nothing; none is checked
against a time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.__main__ import BENCHMARKS

REPO = Path(__file__).resolve().parent.parent


def test_every_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    output = tmp_path / "README-bench.md"
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    table = output.read_text()
    assert "quick mode" in table
    assert re.search(r"Machine: \d+ CPUs .*, Python 3\.", table)
    # The summary table's rows (a benchmark's own tables, after it, have other columns).
    titles = tuple(f"| {module.TITLE} |" for module in BENCHMARKS.values())
    rows = [line for line in table.splitlines() if line.startswith(titles)]
    for module in BENCHMARKS.values():
        mine = [row for row in rows if row.startswith(f"| {module.TITLE} |")]
        assert mine, f"no figures from {module.NAME}"
        assert not any("| failed |" in row for row in mine), mine
    # Every figure is a number with its unit, not an error or a NaN.
    for row in rows:
        value = row.rstrip(" |").rsplit("|", 1)[1]
        assert re.search(r"\d", value) and "nan" not in value, row
    # The work index's figures side by side, one column per history size, so what grows with history shows.
    assert re.search(r"^\| \| [\d,]+ items \| [\d,]+ items \|$", table, re.M)
    assert re.search(r"^\| stuck page: median \(p90\) \| [\d.]+ ms", table, re.M)
    # Nothing a benchmark prints or writes carries a credential (the emulator's API key, environment keys).
    assert "sk-ant-" not in completed.stdout + completed.stderr + table
    # The run's workspace (temporary databases, logs) is gone.
    workspace = re.search(r"Preparing databases in (\S+) ", completed.stdout)
    assert workspace is not None and not Path(workspace.group(1)).exists()


def test_a_single_benchmark_can_be_chosen_and_unknown_names_are_refused() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "nonsense"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "unknown benchmark nonsense" in completed.stderr
