"""``manage.py demo`` as a person runs it: one process tree serving the dashboard against the seeded emulator and a
fleet, the demo users able to sign in, the printed URLs and logins, and every process gone after a signal."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from workqueue.emulator.launch import free_port

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def sign_in(client: httpx.Client, username: str, password: str) -> httpx.Response:
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, "no CSRF token on the login page"
    return client.post(
        "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1), "next": "/"},
        headers={"Referer": f"{client.base_url}accounts/login/"},
    )


@pytest.fixture
def demo(tmp_path: Path):
    port, emulator_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "EMULATOR_DATABASE_URL")}
    env.update(
        DASHBOARD_DATA_DIR=str(tmp_path),
        PORT=str(port),
        EMULATOR_PORT=str(emulator_port),
        DEMO_PASSWORD="open sesame",
    )
    output = tmp_path / "demo.out"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "demo"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )
    try:
        wait_for(lambda: "Ctrl-C stops everything" in output.read_text(), 60, "the demo to start")
        yield process, port, emulator_port, output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_demo_serves_the_dashboard_against_the_seeded_emulator(demo):
    process, port, emulator_port, output = demo
    printed = output.read_text()
    assert f"http://127.0.0.1:{port}/" in printed
    assert f"http://127.0.0.1:{emulator_port}/" in printed
    assert "admin / operator / viewer" in printed and "open sesame" in printed
    assert "sk-ant-oat01" not in printed  # environment keys are never printed
    # The demo's logs (which may name the emulator's keys) are the owner's alone.
    for log in ("demo-emulator.log", "demo-fleet.log"):
        assert (output.parent / log).stat().st_mode & 0o777 == 0o600, log

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        assert sign_in(client, "viewer", "wrong").status_code == 200  # the form again, with an error
        assert sign_in(client, "operator", "open sesame").status_code == 302
        overview = client.get("/")
    assert overview.status_code == 200
    names = re.findall(r'<h2><a href="/environments/env_[\w-]+/">([^<]+)</a></h2>', overview.text)
    assert names == ["batch", "production", "staging"]
    assert "No environment key" not in overview.text  # the demo stored every key
    assert '<span class="role">operator</span>' in overview.text

    # SIGTERM reaches the demo alone (not its children): it must stop them itself.
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not answers(f"http://127.0.0.1:{emulator_port}/_emulator/health")
    assert not answers(f"http://127.0.0.1:{port}/healthz")
    leftovers = subprocess.run(
        ["pgrep", "-g", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == []
    assert "Demo stopped." in output.read_text()


def test_ctrl_c_stops_the_whole_process_tree(demo):
    process, port, emulator_port, output = demo

    os.killpg(process.pid, signal.SIGINT)  # what a terminal does on Ctrl-C

    process.wait(timeout=30)
    assert not answers(f"http://127.0.0.1:{emulator_port}/_emulator/health")
    assert not answers(f"http://127.0.0.1:{port}/healthz")
    leftovers = subprocess.run(
        ["pgrep", "-g", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == []
    assert "exited with status" not in output.read_text()  # a stop asked for is not reported as a crash


def test_a_busy_port_is_named_and_nothing_is_started(tmp_path: Path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "EMULATOR_DATABASE_URL")}
        env.update(DASHBOARD_DATA_DIR=str(tmp_path), PORT=str(port), EMULATOR_PORT=str(free_port()))

        result = subprocess.run(
            [sys.executable, "manage.py", "demo"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert result.returncode == 1
    assert f"Port {port} (the dashboard) is in use; set PORT to another port." in result.stderr
    assert not (tmp_path / "demo-emulator.log").exists()
