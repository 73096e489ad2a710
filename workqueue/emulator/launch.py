"""Start an emulator process on a port and wait until it answers: the one way the tests, the benchmarks and the demo
run the emulator.

``EmulatorProcess(port=free_port(), db_path=..., api_key=...).start("--seed")`` runs ``manage.py emulator`` in a
subprocess with its state in ``db_path`` (a SQLite file; unset, the emulator's default), its output in a log file
readable by its owner only, and returns once ``/_emulator/health`` answers. ``launch()`` and ``healthy()`` do the
two halves for a caller that starts several servers side by side; ``stop()`` ends the process (SIGTERM, then
SIGKILL after a grace period), whatever state it is in.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_SECONDS = 30.0
HEALTH_PATH = "/_emulator/health"


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmulatorFailed(RuntimeError):
    """The emulator exited, or did not answer in time; the message carries the end of its log."""


@dataclass
class EmulatorProcess:
    port: int
    api_key: str
    db_path: Path | None = None
    log_path: Path | None = None
    host: str = "127.0.0.1"
    # The environment the process starts from (this process's unless given); ``launch(env=...)`` adds to it.
    environ: Mapping[str, str] | None = field(default=None, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the emulator was not launched"
        return self.process.pid

    def start(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = STARTUP_TIMEOUT_SECONDS
    ) -> EmulatorProcess:
        """Launch the process and wait until it is healthy; a process that fails to become so is stopped."""
        self.launch(*args, env=env)
        self.wait_until_healthy(timeout)
        return self

    def launch(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        """Start the process without waiting for it (``--seed`` and other ``manage.py emulator`` options)."""
        if self.log_path is None:
            base = self.db_path if self.db_path is not None else REPO / "var" / "emulator.sqlite3"
            self.log_path = base.with_suffix(f".{self.port}.log")
        environ = os.environ if self.environ is None else self.environ
        child_env = {
            **environ,
            "DJANGO_SETTINGS_MODULE": "workqueue.emulator.settings",
            "EMULATOR_API_KEY": self.api_key,
            **(env or {}),
        }
        if self.db_path is not None:
            child_env["EMULATOR_DATABASE_URL"] = f"sqlite:///{self.db_path}"
        command = [
            sys.executable,
            "manage.py",
            "emulator",
            "--addr",
            self.host,
            "--port",
            str(self.port),
            *args,
        ]
        # The log names the seeded environments' keys: its owner's alone.
        with open(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=child_env, stdout=log, stderr=subprocess.STDOUT
            )

    def healthy(self, http: httpx.Client | None = None) -> bool:
        """One health check; raises ``EmulatorFailed`` if the process has exited."""
        if self.process is None:
            return False
        if self.process.poll() is not None:
            raise EmulatorFailed(f"the emulator exited with {self.process.returncode}:\n{self.log_tail()}")
        # A refused connection costs nothing; only a listening server gets an HTTP request.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex((self.host, self.port)) != 0:
                return False
        try:
            if http is not None:
                return http.get(self.base_url + HEALTH_PATH).status_code == 200
            return httpx.get(self.base_url + HEALTH_PATH, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_until_healthy(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        try:
            with httpx.Client(timeout=2.0) as http:
                while not self.healthy(http):
                    if time.monotonic() > deadline:
                        raise EmulatorFailed(
                            f"the emulator did not answer within {timeout:.0f} s:\n{self.log_tail()}"
                        )
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def exit_code(self) -> int | None:
        """The process's exit status once it has exited, else None."""
        return None if self.process is None else self.process.poll()

    def log_tail(self, size: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-size:]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if the process has not exited after ``grace`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
