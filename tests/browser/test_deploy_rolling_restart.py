"""A rolling restart as deployed (tests/deploy_support.py: nginx as shipped, over TLS, in front of two instances
started by deploy/uvicorn/serve on PostgreSQL and Redis): the instance holding a browser's live socket, and
running a bulk force-stop an admin started through nginx, gets SIGTERM. The overview keeps updating, through
nginx, from the other instance, without a reload; the other instance finishes the bulk stop with nobody visiting
a page, every item stopped and audited once, and no audit entry written before the restart is lost."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from deploy_support import ADMIN_USERNAME, PASSWORD, USERNAME, Deployment, deployment
from instances_support import Instance, manage
from pages_support import record, worker_client

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

BULK_ITEMS = 20
STOP_LATENCY_MS = 1000


@pytest.fixture(scope="module")
def deployed(emulator_server, tmp_path_factory) -> Iterator[Deployment]:
    with deployment(
        emulator_server.base_url, emulator_server.api_key, tmp_path_factory.mktemp("rolling")
    ) as running:
        yield running


def open_sockets(port: int) -> float:
    """Live sockets an instance holds, from its own /metrics (Prometheus scrapes instances directly)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("dashboard_websockets_open{")
    )


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met in time"
        time.sleep(0.1)


def socket_holder(deployed: Deployment) -> Instance:
    """The instance holding the page's one live socket (once the socket of a page left is closed)."""

    def holder() -> Instance | None:
        counts = [open_sockets(instance.port) for instance in deployed.instances]
        return deployed.instances[counts.index(1)] if sorted(counts) == [0, 1] else None

    return wait_for(holder, what="one socket, on one instance")


def rows(deployed: Deployment, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """What the instances wrote to their database (read behind the pages' back: no page visit resumes anything)."""
    with psycopg.connect(deployed.database_url) as connection:
        return connection.execute(sql, params).fetchall()


def start_bulk_force_stop(deployed: Deployment, work_ids: list[str]) -> tuple[str, str]:
    """An admin, through nginx, confirms a force-stop of the items and starts it: (the operation's id, the address
    of the instance that took the request and runs it)."""
    env_id = deployed.environment["id"]
    with deployed.sign_in(ADMIN_USERNAME) as admin:
        form = {"csrfmiddlewaretoken": admin.cookies["csrftoken"]}
        referer = {"Referer": f"{deployed.url}/environments/{env_id}/"}
        confirm = admin.post(
            f"/environments/{env_id}/bulk/", data={**form, "work_ids": work_ids}, headers=referer
        )
        assert confirm.status_code == 200, confirm.text[:1000]
        plan = re.search(r'name="plan" value="([^"]*)"', confirm.text)
        assert plan is not None
        started = admin.post(
            f"/environments/{env_id}/bulk/start/",
            data={
                **form,
                "plan": html.unescape(plan.group(1)),
                "mode": "force_stop",
                "reason": "rolling restart drill",
                "confirm": "deployed",
            },
            headers=referer,
        )
        assert started.status_code == 302, started.text[:1000]
    operation_id = started.headers["location"].rstrip("/").rsplit("/", 1)[1]
    # nginx writes the access log line once the answer has gone out, so it may come a moment after the client has it.
    line = rf"^302 POST /environments/{env_id}/bulk/start/ upstream=(\S+)$"
    runner = wait_for(
        lambda: re.findall(line, (deployed.nginx.directory / "access.log").read_text(), re.M),
        timeout=5,
        what="nginx's access log naming the instance that started the bulk stop",
    )
    assert len(runner) == 1, runner
    return operation_id, runner[0]


def audit_entries(deployed: Deployment) -> list[tuple[int, str]]:
    return [
        (int(sequence), str(digest))
        for sequence, digest in rows(
            deployed, "SELECT sequence, hash FROM dashboard_auditentry ORDER BY sequence"
        )
    ]


def test_a_rolling_restart_keeps_the_overview_updating_and_hands_a_running_bulk_stop_over(browser, deployed):
    from playwright.sync_api import expect

    errors: list[str] = []
    sockets: list[str] = []
    context = browser.new_context(base_url=deployed.url, ignore_https_errors=True)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("websocket", lambda socket: sockets.append(socket.url))
    env_id = deployed.environment["id"]
    depth = page.locator(f"#figures-{env_id} [data-figure=depth]")
    # Work in hand on some worker, for the bulk stop (active items are not in the queue depth the page shows).
    work_ids = deployed.upstream.bulk_create(
        env_id, {"count": BULK_ITEMS, "state": "active", "age_seconds": 60, "lease_expires_in_seconds": 3600}
    )["ids"]
    try:
        page.goto("/accounts/login/")
        page.fill("#id_username", USERNAME)
        page.fill("#id_password", PASSWORD)
        page.click("main button[type=submit]")
        page.wait_for_url(re.compile(r"/$"))

        # Each stop takes a while upstream, so the bulk stop is still running when its instance is stopped.
        deployed.upstream.set_fault(route="stop", latency_ms=STOP_LATENCY_MS)
        operation_id, runner = start_bulk_force_stop(deployed, work_ids)
        victim = next(i for i in deployed.instances if f"127.0.0.1:{i.port}" == runner)
        survivor = next(instance for instance in deployed.instances if instance is not victim)
        # The instance to stop holds the page's socket too (nginx spreads the page's reconnections over both).
        for _ in range(8):
            if socket_holder(deployed) is victim:
                break
            page.goto("/")
        assert socket_holder(deployed) is victim, (
            "the page's socket never reached the instance running the stop"
        )
        deployed.upstream.enqueue(env_id)
        expect(depth).to_have_text("1")
        page.evaluate("window.notReloaded = true")
        written_before = audit_entries(deployed)

        victim.stop()  # SIGTERM, and wait for it to exit
        # uvicorn shuts down, then raises the SIGTERM it caught again, so that its exit says why: -15, not a
        # SIGKILL after a shutdown that hung (-9).
        assert victim.process is not None and victim.process.returncode == -15
        pending = rows(
            deployed,
            "SELECT count(*) FROM dashboard_bulkitem WHERE operation_id = %s AND status = 'pending'",
            operation_id,
        )[0][0]
        assert 0 < pending < BULK_ITEMS, "the bulk stop was not running when its instance stopped"
        deployed.upstream.clear_faults()

        # The page reconnected (through nginx, to the other instance) and goes on updating.
        deployed.upstream.enqueue(env_id)
        expect(depth).to_have_text("2")
        assert len(sockets) >= 2, sockets
        assert open_sockets(survivor.port) >= 1
        deployed.upstream.enqueue(env_id)
        expect(depth).to_have_text("3")
        expect(page.locator("[data-live-status]")).to_be_hidden()
        assert page.evaluate("window.notReloaded") is True, "the page was reloaded"
    finally:
        deployed.upstream.clear_faults()
        context.close()
    assert not errors, errors

    # The other instance took the bulk stop over and finished it, nobody visiting its page (well before a dead
    # runner's heartbeat would go stale, which is about a minute).
    wait_for(
        lambda: (
            rows(deployed, "SELECT status FROM dashboard_bulkoperation WHERE id = %s", operation_id)
            == [("finished",)]
        ),
        timeout=30,
        what="the bulk stop finished on the other instance",
    )
    items = rows(deployed, "SELECT status FROM dashboard_bulkitem WHERE operation_id = %s", operation_id)
    assert [status for (status,) in items] == ["stopped"] * BULK_ITEMS
    with worker_client(deployed.upstream) as api:
        states = {
            record(api.beta.environments.work.retrieve(w, environment_id=env_id)).state for w in work_ids
        }
    assert states == {"stopped"}
    # Each item stopped and audited once: none lost with the stopped instance, none stopped twice.
    stops = rows(
        deployed,
        "SELECT work_id, outcome FROM dashboard_auditentry WHERE action = 'force_stop' AND via = 'bulk'",
    )
    assert sorted(stops) == sorted((work_id, "succeeded") for work_id in work_ids)
    # Every entry written before the restart is still there, unchanged, and the chain verifies.
    after = set(audit_entries(deployed))
    assert set(written_before) <= after, set(written_before) - after
    assert "intact" in manage(deployed.settings, "verify_audit_chain")
