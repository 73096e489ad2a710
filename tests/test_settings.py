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
        ("OIDC_ROLE_MAP", "ops=root", "OIDC_ROLE_MAP entry 1 is not group=viewer"),
        ("OIDC_ISSUER", "http://sso.example.com", "OIDC_ISSUER must use https"),
        ("PASSWORD_LOGIN", "off", "PASSWORD_LOGIN=off needs OIDC_ISSUER"),
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


def settings_in_a_clean_environment(tmp_path: Path, names: list[str], **env: str) -> dict[str, object]:
    """The values ``names`` take in a fresh process whose environment sets nothing of the dashboard's but ``env``."""
    import json

    environment = {
        key: value for key, value in os.environ.items() if key in {"PATH", "HOME", "LANG", "VIRTUAL_ENV"}
    }
    environment.update({"DASHBOARD_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "dashboard.settings"})
    environment.update(env)
    script = (
        "import json, sys, django; django.setup(); from django.conf import settings; "
        "print(json.dumps({n: getattr(settings, n, None) for n in sys.argv[1:]}, default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *names],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    values: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return values


def _read_from_environment() -> set[str]:
    import re

    source = "".join(
        (ROOT / path).read_text()
        for path in ("dashboard/settings.py", "dashboard/env.py", "workqueue/emulator/settings.py")
    )
    return set(re.findall(r'env_\w+\(\s*"([A-Z][A-Z_0-9]+)"', source))


def _documented_rows() -> list[tuple[list[str], list[str]]]:
    """The README's settings tables: (names in the first column, the defaults column split like the names)."""
    import re

    rows = []
    for line in (ROOT / "README.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        names = re.findall(r"`([A-Z][A-Z_0-9]+)`", cells[0])
        separator = " / " if " / " in cells[0] else ", "
        rows.append((names, [d.strip() for d in cells[1].split(separator)] if len(cells) > 1 else []))
    return rows


def test_every_setting_read_from_the_environment_is_documented_and_every_documented_one_is_read():
    import re

    read = _read_from_environment()
    readme = (ROOT / "README.md").read_text()
    undocumented = sorted(name for name in read if not re.search(rf"`{name}[`=]", readme))
    assert not undocumented, f"read in the settings but not in the README: {undocumented}"
    tabled = {name for names, _ in _documented_rows() for name in names}
    # The table's rows name settings of the dashboard (the Django ones it sets from the environment included).
    unread = sorted(name for name in tabled if name not in read and name not in {"EMULATOR_PORT"})
    assert not unread, f"in the README's tables but read from no environment variable: {unread}"


def test_the_defaults_the_readme_states_are_the_ones_in_force(tmp_path):
    read = _read_from_environment()
    stated: dict[str, float] = {}
    for names, defaults in _documented_rows():
        if len(names) != len(defaults):
            continue
        for name, default in zip(names, defaults, strict=True):
            try:
                stated[name] = float(default.replace(",", ""))
            except ValueError:
                continue
    stated = {name: value for name, value in stated.items() if name in read}
    values = settings_in_a_clean_environment(tmp_path, sorted(stated))
    # A variable whose setting has another name (LOGIN_THROTTLE is AXES_ENABLED) is not compared here.
    stated = {name: value for name, value in stated.items() if values[name] is not None}
    assert {"DISPLAY_STUCK_CRITICAL", "FEED_MAX_WATCHED_ITEMS", "LIVE_REAUTH_SECONDS"} <= set(stated)
    wrong = {
        name: (stated[name], values[name]) for name in stated if float(str(values[name])) != stated[name]
    }
    assert not wrong, f"README default vs. the one in force: {wrong}"


def test_a_live_setting_exported_in_the_environment_takes_effect(tmp_path):
    """The live layer reads the one settings layer: exporting a variable changes what the wall display does."""
    script = (
        "import django; django.setup(); from dashboard.live import conf; "
        "print(conf.stuck_critical_count(), conf.oldest_warning_seconds(), conf.feed_max_watched_items(), "
        "conf.feed_timeout(), conf.directory_interval(), conf.reauth_seconds())"
    )
    environment = {key: value for key, value in os.environ.items() if key in {"PATH", "HOME", "LANG"}}
    environment.update(
        {
            "DASHBOARD_DATA_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DISPLAY_STUCK_CRITICAL": "10",
            "DISPLAY_OLDEST_WARNING_SECONDS": "90",
            "FEED_MAX_WATCHED_ITEMS": "7",
            "FEED_TIMEOUT_SECONDS": "2.5",
            "FEED_DIRECTORY_INTERVAL_SECONDS": "45",
            "LIVE_REAUTH_SECONDS": "30",
        }
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10", "90.0", "7", "2.5", "45.0", "30.0"]


def test_the_dashboards_settings_hold_no_emulator(tmp_path):
    """The emulator runs beside the product, with settings of its own (``workqueue.emulator.settings``)."""
    names = [
        "INSTALLED_APPS",
        "DATABASES",
        "DATABASE_ROUTERS",
        "EMULATOR_API_KEY",
        "EMULATOR_LEASE_TTL_SECONDS",
    ]
    values = settings_in_a_clean_environment(tmp_path, names)
    apps = values["INSTALLED_APPS"]
    assert isinstance(apps, list) and "dashboard" in apps
    assert not [app for app in apps if "emulator" in app]
    assert values["DATABASES"] and list(values["DATABASES"]) == ["default"]  # type: ignore[call-overload]
    assert not values["DATABASE_ROUTERS"]
    assert values["EMULATOR_API_KEY"] is None and values["EMULATOR_LEASE_TTL_SECONDS"] is None
