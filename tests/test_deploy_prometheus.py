"""The shipped Prometheus rules and Grafana dashboard (``deploy/``): ``promtool`` accepts the rules and their unit
tests pass, every alert links to a runbook that exists in the README, and every metric the rules and the dashboard
name is one a running dashboard really serves at ``/metrics``.

promtool comes with Debian's ``prometheus`` package; without it the promtool tests are skipped with the reason,
unless ``REQUIRE_SERVICES=1``, where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from asgiref.sync import sync_to_async
from conftest import REPO
from django.test import AsyncClient
from live_support import communicator, receive_matching, session_cookie
from pages_support import environment, make_user

DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
GRAFANA = DEPLOY / "grafana" / "dashboard.json"
METRIC_NAME = re.compile(r"\b((?:workqueue|dashboard)_[a-z0-9_]+)\b")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not installed (apt-get install prometheus)"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(reason + "; REQUIRE_SERVICES=1 needs it")
        pytest.skip(reason)
    return path


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def rule_expressions() -> Iterator[str]:
    for rule in alert_rules():
        yield rule["expr"]


def grafana_expressions() -> Iterator[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query") and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    return walk(json.loads(GRAFANA.read_text()))


def test_promtool_accepts_the_rules(promtool):
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_the_rules_unit_tests_pass(promtool):
    done = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_unit_tests_that_see_it_fire_and_stay_quiet():
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    checks = [check for case in cases for check in case.get("alert_rule_test", [])]
    for rule in alert_rules():
        mine = [check for check in checks if check["alertname"] == rule["alert"]]
        assert any(check["exp_alerts"] for check in mine), f"{rule['alert']}: no case where it fires"
        assert any(not check["exp_alerts"] for check in mine), (
            f"{rule['alert']}: no case where it stays quiet"
        )


def _readme_anchors() -> set[str]:
    anchors = set()
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("#"):
            # GitHub's anchors: lower case, punctuation dropped, spaces to hyphens.
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_every_alert_links_to_its_runbook_in_the_readme():
    anchors = _readme_anchors()
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.split("#", 1)[0].endswith("/README.md"), url
        anchor = url.split("#", 1)[1]
        assert anchor == f"alert-{rule['alert'].lower()}", url
        assert anchor in anchors, f"{rule['alert']}: the README has no section #{anchor}"
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in ("warning", "critical")


def exported_names(text: str) -> set[str]:
    """Every sample name a /metrics answer carries, and every family it declares (a labelled family with no
    samples yet, such as a counter nothing has incremented, is declared by its TYPE line)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "count", "sum"))
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.mark.django_db(transaction=True)
async def test_every_metric_the_rules_and_the_dashboard_name_is_served(live_runtime, upstream, settings):
    settings.METRICS_TOKEN = ""
    env, _ = await sync_to_async(environment)(upstream, "scraped")
    await sync_to_async(upstream.enqueue)(env["id"])
    viewer = communicator(
        f"/ws/live/{env['id']}/", cookie=await session_cookie(await sync_to_async(make_user)("viewer"))
    )
    assert (await viewer.connect())[0]
    await receive_matching(viewer, r'data-figure="depth">1<')
    text = (await AsyncClient().get("/metrics", REMOTE_ADDR="127.0.0.1")).content.decode()
    await viewer.disconnect()
    served = exported_names(text)

    named = {name for expr in rule_expressions() for name in METRIC_NAME.findall(expr)}
    assert len(named) >= 8, named
    assert named - served == set(), "the alert rules name metrics /metrics does not serve"
    shown = {name for expr in grafana_expressions() for name in METRIC_NAME.findall(expr)}
    assert len(shown) >= 10, shown
    assert shown - served == set(), "the Grafana dashboard names metrics /metrics does not serve"
    # The environment's gauges carry its id, which is the label every rule groups by.
    assert f'workqueue_queue_depth{{environment="{env["id"]}"}} 1.0' in text
