"""A rolling restart as deployed (tests/deploy_support.py: nginx as shipped, over TLS, in front of two instances
started by deploy/uvicorn/serve on PostgreSQL and Redis): the instance holding a browser's live socket gets
SIGTERM, and the overview keeps updating, through nginx, from the other instance, without a reload."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from deploy_support import PASSWORD, USERNAME, Deployment, deployment

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


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


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_the_overview_keeps_updating_when_the_instance_holding_its_socket_is_stopped(browser, deployed):
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
    try:
        page.goto("/accounts/login/")
        page.fill("#id_username", USERNAME)
        page.fill("#id_password", PASSWORD)
        page.click("main button[type=submit]")
        page.wait_for_url(re.compile(r"/$"))
        deployed.upstream.enqueue(env_id)
        expect(depth).to_have_text("1")
        page.evaluate("window.notReloaded = true")

        # The instance holding the page's socket is the one to stop.
        holder = wait_for(lambda: [i for i in deployed.instances if open_sockets(i.port) >= 1])
        assert len(holder) == 1, "one socket, on one instance"
        victim = holder[0]
        survivor = next(instance for instance in deployed.instances if instance is not victim)
        victim.stop()  # SIGTERM, and wait for it to exit
        # uvicorn shuts down, then raises the SIGTERM it caught again, so that its exit says why: -15, not a
        # SIGKILL after a shutdown that hung (-9).
        assert victim.process is not None and victim.process.returncode == -15

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
        context.close()
    assert not errors, errors
