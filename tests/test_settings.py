"""Settings come from the environment; a malformed value stops the process at start, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ANTHROPIC_BASE_URL"}
    }
    environment.update({"DASHBOARD_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "dashboard.settings"})
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_embedded_default_needs_nothing(tmp_path):
    result = run_check(tmp_path)
    assert result.returncode == 0, result.stderr
    # The generated secret is kept in the data directory, readable by its owner only.
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_the_data_directory_it_creates_is_the_owners_alone(tmp_path):
    data_dir = tmp_path / "data"
    result = run_check(tmp_path, DASHBOARD_DATA_DIR=str(data_dir))
    assert result.returncode == 0, result.stderr
    assert data_dir.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG must be one of"),
        ("DATABASE_URL", "mysql://user:hunter2-password@db/x", "DATABASE_URL must use one of the schemes"),
        ("DATABASE_URL", "postgres:///nohost", "DATABASE_URL has no host"),
        ("REDIS_URL", "http://127.0.0.1:6379", "REDIS_URL must use one of the schemes"),
        ("ANTHROPIC_BASE_URL", "ftp://api.example.com", "ANTHROPIC_BASE_URL must use one of the schemes"),
        ("SECRET_KEY", "short", "SECRET_KEY must be at least 32 characters long"),
        ("FEED_INTERVAL_SECONDS", "fast", "FEED_INTERVAL_SECONDS must be a number"),
        ("FEED_INTERVAL_SECONDS", "0", "FEED_INTERVAL_SECONDS must be at least"),
        ("STUCK_HEARTBEAT_SECONDS", "2", "STUCK_HEARTBEAT_SECONDS must be at least 10"),
        ("GATEWAY_RATE_PER_MINUTE", "lots", "GATEWAY_RATE_PER_MINUTE must be a whole number"),
        (
            "ENVIRONMENT_KEYS",
            "sk-ant-oat01-secretvalue",
            "ENVIRONMENT_KEYS entry 1 is not environment_id=key",
        ),
    ],
)
def test_a_malformed_value_stops_the_start_and_names_the_variable(tmp_path, variable, value, message):
    result = run_check(tmp_path, **{variable: value})
    assert result.returncode != 0
    assert message in result.stderr
    # Credentials inside a rejected value are never echoed back.
    assert "hunter2-password" not in result.stderr + result.stdout
    assert "secretvalue" not in result.stderr + result.stdout
