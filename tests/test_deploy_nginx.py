"""nginx as shipped (``deploy/nginx/dashboard.conf``) in front of two instances as shipped (``deploy/uvicorn/serve``)
on PostgreSQL and Redis, over TLS: a person signs in and reads pages, live frames reach a websocket through the
proxy, both instances serve, and the shipped limits refuse a 1 MiB header, an oversized body, a slow-loris
connection and a login flood while normal requests keep being served.

Set-up and what is substituted in the shipped files: tests/deploy_support.py. Skipped without nginx, Redis or
PostgreSQL unless REQUIRE_SERVICES=1 (then it fails).
"""

from __future__ import annotations

import asyncio
import re
import select
import socket
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest
from deploy_support import USERNAME, Deployment, deployment

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture(scope="module")
def deployed(emulator_server, tmp_path_factory) -> Iterator[Deployment]:
    with deployment(
        emulator_server.base_url, emulator_server.api_key, tmp_path_factory.mktemp("deploy")
    ) as running:
        yield running


def tls_socket(deployed: Deployment) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", deployed.https_port), timeout=10)
    return deployed.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")


def test_a_person_signs_in_over_tls_and_both_instances_serve(deployed):
    with deployed.sign_in() as person:
        overview = person.get("/")
        assert overview.status_code == 200
        assert "deployed" in overview.text and USERNAME in overview.text
        # The dashboard sees the request as HTTPS (X-Forwarded-Proto): HSTS is sent, nothing is redirected, and
        # the session and CSRF cookies are marked Secure.
        assert overview.headers["strict-transport-security"].startswith("max-age=")
        assert overview.headers["server"] == "nginx"
        assert {cookie.name for cookie in person.cookies.jar} == {"csrftoken", "sessionid"}
        for cookie in person.cookies.jar:
            assert cookie.secure, cookie.name
        for _ in range(6):
            assert person.get("/healthz").status_code == 200

    served = set(deployed.nginx.served_by())
    assert {f"127.0.0.1:{instance.port}" for instance in deployed.instances} <= served, served

    # Plain HTTP is redirected to HTTPS; /metrics is not served through the proxy.
    with httpx.Client(timeout=10) as plain:
        redirected = plain.get(f"{deployed.http_url}/stuck/")
        assert redirected.status_code == 301
        assert redirected.headers["location"].startswith("https://127.0.0.1/stuck/")
    with deployed.client() as anonymous:
        refused = anonymous.get("/metrics")
        assert refused.status_code == 404 and "dashboard_" not in refused.text
        assert anonymous.get("/").status_code == 302  # to the login form
    # nginx answered that itself: no instance was asked (whatever METRICS_TOKEN says).
    access = (deployed.nginx.directory / "access.log").read_text()
    assert re.findall(r"^\d+ GET /metrics upstream=(\S+)$", access, re.M) == ["-"], access[-1000:]
    # Probes and Prometheus reach the instances directly over HTTP, SECURE_SSL_REDIRECT notwithstanding.
    for instance in deployed.instances:
        assert httpx.get(f"http://127.0.0.1:{instance.port}/readyz", timeout=10).status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{instance.port}/metrics", timeout=10)
        assert metrics.status_code == 200 and "dashboard_feeds_held" in metrics.text


async def test_live_frames_reach_a_websocket_through_nginx(deployed):
    from websockets.asyncio.client import connect
    from websockets.typing import Origin

    with deployed.sign_in() as person:
        session = person.cookies["sessionid"]
    environment_id = deployed.environment["id"]
    async with connect(
        f"wss://127.0.0.1:{deployed.https_port}/ws/live/{environment_id}/",
        ssl=deployed.ssl_context(),
        origin=Origin(deployed.url),
        additional_headers={"Cookie": f"sessionid={session}"},
    ) as socket_:
        for _ in range(3):
            await asyncio.to_thread(deployed.upstream.enqueue, environment_id)
        deadline = time.monotonic() + 10
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no frame with the new queue depth came through nginx"
            frame = await asyncio.wait_for(socket_.recv(), timeout=remaining)
            if re.search(r'data-figure="depth">3<', str(frame)):
                break


def test_a_one_mebibyte_header_is_refused_and_the_next_request_is_served(deployed):
    with deployed.client() as client:
        refused = client.get("/healthz", headers={"X-Padding": "a" * (1024 * 1024)})
        # nginx's 494 "Request Header Or Cookie Too Large" goes out as 400.
        assert refused.status_code == 400, refused.status_code
        assert "Too Large" in refused.text
    with deployed.client() as client:
        assert client.get("/healthz").status_code == 200


def test_a_body_over_the_limit_is_refused(deployed):
    with deployed.client() as client:
        refused = client.post("/gateway/v1/environments", content=b"{" + b" " * (300 * 1024) + b"}")
        assert refused.status_code == 413
        # A body within the limit reaches the dashboard (which wants a token for it).
        assert client.post("/gateway/v1/environments", content=b"{}").status_code == 401


def test_a_slow_loris_connection_is_closed_while_pages_are_served(deployed):
    request = (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    )
    slow = tls_socket(deployed)
    sent = 0
    closed = False
    try:
        # One byte every 0.1 s: the whole header would take 23 s; nginx gives it client_header_timeout in all.
        while sent < len(request):
            try:
                slow.sendall(request[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                closed = True
                break
            sent += 1
            readable, _, _ = select.select([slow], [], [], 0.1)
            if readable:
                try:
                    answer = slow.recv(4096)
                except (ConnectionResetError, ssl.SSLError):
                    answer = b""
                # Closed without an answer, or at most with a 408.
                assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
                closed = True
                break
            if sent == 10:
                # Meanwhile other people's requests are served.
                with deployed.client() as client:
                    assert client.get("/healthz").status_code == 200
    finally:
        slow.close()
    assert closed, "nginx let a connection send its headers one byte at a time until the end"
    assert sent < len(request)
    with deployed.client() as client:
        assert client.get("/healthz").status_code == 200


def test_the_login_form_is_rate_limited_per_address(deployed):
    # Runs last: the address is 127.0.0.1 for every test, and the limit holds for a minute.
    with deployed.client() as client:
        statuses = [client.get("/accounts/login/").status_code for _ in range(20)]
        assert 429 in statuses, statuses
        assert statuses[0] == 200
        # Pages other than the login form are not limited by it.
        assert client.get("/healthz").status_code == 200
