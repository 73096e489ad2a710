"""Dashboard instances as separate processes on one Redis and one PostgreSQL database, for the tests that run
several of them (tests/test_live_multi.py, tests/test_deploy_nginx.py).

- ``service_urls()``: TEST_REDIS_URL and TEST_POSTGRES_URL; skips without them, fails under REQUIRE_SERVICES=1.
- ``fresh_database(postgres_url)``: a database of its own for the instances, dropped afterwards.
- ``Instance``: one uvicorn process (``start``, ``stop`` with SIGTERM, ``kill``), logging to a file.
- ``manage(env, ...)``: ``manage.py`` with the instances' environment (migrations, users).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from conftest import REPO


def service_unavailable(reason: str) -> None:
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(reason + " (REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def service_urls() -> tuple[str, str]:
    redis_url = os.environ.get("TEST_REDIS_URL", "")
    postgres_url = os.environ.get("TEST_POSTGRES_URL", "")
    missing = [
        name
        for name, value in (("TEST_REDIS_URL", redis_url), ("TEST_POSTGRES_URL", postgres_url))
        if not value
    ]
    if missing:
        service_unavailable(
            f"{' and '.join(missing)} not set: the several-instances tests need Redis and PostgreSQL"
        )
    return redis_url, postgres_url


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@contextlib.contextmanager
def fresh_database(redis_url: str, postgres_url: str, prefix: str) -> Iterator[str]:
    """A new PostgreSQL database (its URL), once Redis and PostgreSQL are known to answer; dropped afterwards."""
    import psycopg
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_timeout=2).ping()
        admin = psycopg.connect(postgres_url, autocommit=True, connect_timeout=3)
    except Exception as exc:
        service_unavailable(f"Redis or PostgreSQL not answering: {type(exc).__name__}")
    name = f"{prefix}_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def uvicorn_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "dashboard.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on", "--log-level", "warning",
    ]  # fmt: skip


@dataclass
class Instance:
    port: int
    env: dict[str, str]
    log_path: Path
    # The command that serves; uvicorn with its defaults unless given (e.g. deploy/uvicorn/serve).
    command: list[str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Instance:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command or uvicorn_command(self.port),
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"instance on {self.port} did not start:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


VIEWER_SESSION = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Group, User
from django.contrib.sessions.backends.db import SessionStore
from dashboard.permissions import ensure_roles
ensure_roles()
user = User.objects.create_user("wall-viewer")
user.groups.add(Group.objects.get(name="viewer"))
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print(session.session_key)
"""
