"""Fixtures shared by the whole suite.

The emulator runs the way it runs in production use: ``manage.py emulator`` in a subprocess on a free port, with a
SQLite file of its own in a temporary directory, reached over real HTTP.

- ``emulator_server`` (session): the running process (``.base_url``, ``.api_key``, ``.db_path``).
- ``emulator`` (function): an ``EmulatorControl`` for that process, with all state wiped first.
- ``start_emulator`` (function): a factory for extra emulator processes (e.g. to restart one on the same database);
  every process it starts is stopped when the test ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from workqueue.emulator.control import EmulatorControl

REPO = Path(__file__).resolve().parent.parent
EMULATOR_TEST_API_KEY = "sk-ant-api03-emulator-test"
STARTUP_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmulatorProcess:
    """A ``manage.py emulator`` subprocess. ``stop()`` ends it (SIGTERM, then SIGKILL after 10 s)."""

    db_path: Path
    port: int
    api_key: str = EMULATOR_TEST_API_KEY
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra_args: str, env: dict[str, str] | None = None) -> EmulatorProcess:
        self.log_path = self.log_path or self.db_path.with_suffix(f".{self.port}.log")
        child_env = {
            **os.environ,
            "EMULATOR_DATABASE_URL": f"sqlite:///{self.db_path}",
            "EMULATOR_API_KEY": self.api_key,
            **(env or {}),
        }
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "emulator",
                    "--addr",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *extra_args,
                ],
                cwd=REPO,
                env=child_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_healthy()
        return self

    def _wait_until_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the emulator exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/_emulator/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"the emulator did not answer within {STARTUP_TIMEOUT_SECONDS} s:\n{self.log_tail()}"
        )

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    db_path = tmp_path_factory.mktemp("emulator") / "emulator.sqlite3"
    server = EmulatorProcess(db_path=db_path, port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def emulator(emulator_server: EmulatorProcess) -> Iterator[EmulatorControl]:
    control = EmulatorControl(emulator_server.base_url, emulator_server.api_key)
    control.reset()
    yield control
    control.close()


@pytest.fixture
def start_emulator(tmp_path: Path) -> Iterator[Callable[..., EmulatorProcess]]:
    started: list[EmulatorProcess] = []

    def start(*args: str, db_path: Path | None = None, env: dict[str, str] | None = None) -> EmulatorProcess:
        server = EmulatorProcess(db_path=db_path or tmp_path / "emulator.sqlite3", port=free_port())
        started.append(server)
        return server.start(*args, env=env)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def _fresh_refusal_allowance() -> Iterator[None]:
    """Each test starts with every person's allowance of audited refusals full (it is per process)."""
    from dashboard import audit

    audit._refusals.clear()
    yield
    audit._refusals.clear()
