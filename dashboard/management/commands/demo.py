"""``manage.py demo``: the whole product on one machine, in one process tree, with nothing but Python.

It starts the local Work API emulator (seeded with example environments) as a child process, stores the environment
keys the emulator reports in the dashboard (encrypted, as an admin would), starts the simulated worker fleet, some of
whose workers misbehave so that there is stuck work to find, creates the demo users ``admin``, ``operator`` and
``viewer`` (password from ``DEMO_PASSWORD``, default ``demo``), and serves the dashboard with uvicorn. Ctrl-C (or
SIGTERM) stops everything; if a child dies, the demo stops too rather than run half-broken.

Ports: ``PORT`` (dashboard, default 8000) and ``EMULATOR_PORT`` (default 8100). Child output goes to log files in the
data directory. Stuck thresholds are lowered for the demo (so stuck work shows within a minute) unless they are set
in the environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.env import env_int, env_str
from dashboard.models import EnvironmentKey
from dashboard.permissions import ensure_roles

REPO = Path(__file__).resolve().parents[3]
DEMO_USERS = ("admin", "operator", "viewer")
STARTUP_SECONDS = 30.0
# Short enough that stuck work shows within a minute; healthy fleet workers heartbeat at least every 30 s.
DEMO_STUCK_THRESHOLDS = {
    "STUCK_HEARTBEAT_SECONDS": 45,
    "STUCK_STOPPING_SECONDS": 60,
    "STUCK_QUEUED_SECONDS": 120,
}
# The fleet: 3 workers per environment, some crash mid-lease (stuck active items), some never honour a stop (stuck
# stopping items), some ack late (pending items). Leases last 5 minutes, so abandoned work stays stuck a while.
FLEET_ARGS = (
    "--workers-per-env", "3",
    "--crash", "0.25",
    "--ignore-stop", "0.15",
    "--slow-ack", "0.1",
    "--enqueue-per-minute", "8",
    "--desired-ttl", "300",
    "--report-every", "60",
)  # fmt: skip


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers will: connections of a previous run lingering in TIME_WAIT do not make a port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Children:
    """The demo's child processes; ``stop()`` ends them all (SIGTERM, then SIGKILL after a grace period)."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def start(
        self, name: str, args: list[str], log_path: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "manage.py", *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.adopt(name, process, log_path)
        return process

    def adopt(self, name: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        """A child started elsewhere (the emulator, by its launcher), watched and stopped with the others."""
        self.processes[name] = process
        self.logs[name] = log_path

    def exited(self) -> tuple[str, int] | None:
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


# The live sockets only send: a client frame is never read, so anything past a few KiB is refused (uvicorn closes
# the socket with 1009) rather than buffered. The README's production command passes the same flags.
WS_MAX_SIZE = 64 * 1024


def server_config(port: int, host: str = "127.0.0.1") -> Any:
    """The ASGI server as the demo runs it (and as the README's production command starts it)."""
    import uvicorn

    return uvicorn.Config(
        "dashboard.asgi:application",
        host=host,
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=WS_MAX_SIZE,
    )


class Command(BaseCommand):
    help = "Run the demo: the emulator, a simulated fleet with misbehaving workers, and the dashboard."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=None, help="dashboard port (default: PORT or 8000)")
        parser.add_argument(
            "--emulator-port", type=int, default=None, help="emulator port (default: EMULATOR_PORT or 8100)"
        )
        parser.add_argument("--no-fleet", action="store_true", help="do not start the simulated fleet")

    def handle(self, *args: Any, **options: Any) -> None:
        port = options["port"] or env_int("PORT", 8000, minimum=1, maximum=65535)
        emulator_port = options["emulator_port"] or env_int("EMULATOR_PORT", 8100, minimum=1, maximum=65535)
        password = os.environ.get("DEMO_PASSWORD", "demo")
        if not password:
            raise CommandError("DEMO_PASSWORD is set but empty")
        for name, number, variable in (
            ("dashboard", port, "PORT"),
            ("emulator", emulator_port, "EMULATOR_PORT"),
        ):
            if not port_is_free(number):
                raise CommandError(f"Port {number} (the {name}) is in use; set {variable} to another port.")

        call_command("migrate", interactive=False, verbosity=0)
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        api_key = env_str("EMULATOR_API_KEY", "sk-ant-api03-emulator")
        self._configure(emulator_url, api_key)
        self._create_users(password)

        children = Children()
        child_env = {**os.environ, "EMULATOR_API_KEY": api_key, "ANTHROPIC_BASE_URL": emulator_url}
        # A terminal's Ctrl-C reaches the whole process group; SIGTERM reaches only us. Either way, we stop the rest.
        self._stopping = False
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.stdout.write(f"Starting the emulator on {emulator_url} …")
            environments = self._start_emulator(children, emulator_port, api_key, child_env)
            stored = self._store_keys(environments)
            self.stdout.write(f"Stored the environment keys of {stored} environment(s) in the dashboard.")
            if not options["no_fleet"]:
                children.start(
                    "fleet",
                    ["fleet", "--base-url", emulator_url, "--from-emulator", *FLEET_ARGS],
                    Path(settings.DATA_DIR) / "demo-fleet.log",
                    child_env,
                )
            if self._stopping:
                return
            self._serve(port, emulator_url, password, children)
        finally:
            children.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stdout.write("Demo stopped.")

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stopping = True
        raise KeyboardInterrupt

    def _configure(self, emulator_url: str, api_key: str) -> None:
        # The demo's dashboard talks to the emulator it just started, whatever the environment says.
        settings.ANTHROPIC_BASE_URL = emulator_url
        settings.ANTHROPIC_API_KEY = api_key
        for name, value in DEMO_STUCK_THRESHOLDS.items():
            if not os.environ.get(name):
                setattr(settings, name, value)

    def _create_users(self, password: str) -> None:
        ensure_roles()
        for role in DEMO_USERS:
            user, _ = User.objects.get_or_create(username=role)
            user.set_password(password)
            user.is_active = True
            user.save()
            user.groups.set([Group.objects.get(name=role)])

    def _start_emulator(
        self, children: Children, port: int, api_key: str, env: dict[str, str]
    ) -> list[dict[str, Any]]:
        """The seeded emulator, healthy, and its environments with their keys."""
        from workqueue.emulator.control import EmulatorControl
        from workqueue.emulator.launch import EmulatorFailed, EmulatorProcess

        log_path = Path(settings.DATA_DIR) / "demo-emulator.log"
        emulator = EmulatorProcess(port=port, api_key=api_key, log_path=log_path, environ=env)
        emulator.launch("--seed")
        assert emulator.process is not None
        children.adopt("emulator", emulator.process, log_path)
        try:
            emulator.wait_until_healthy(STARTUP_SECONDS)
        except EmulatorFailed:
            raise CommandError(f"The emulator did not start; see {log_path}") from None
        with EmulatorControl(emulator.base_url, api_key, timeout=5.0) as control:
            return control.environments()

    def _store_keys(self, environments: list[dict[str, Any]]) -> int:
        stored = 0
        for entry in environments:
            env = entry.get("environment") or {}
            if (env.get("config") or {}).get("type") != "self_hosted" or env.get("archived_at"):
                continue
            record = EnvironmentKey.objects.filter(environment_id=env["id"]).first() or EnvironmentKey(
                environment_id=env["id"]
            )
            record.name = str(env.get("name", ""))[:200]
            record.updated_by = "demo"
            record.set_key(entry["environment_key"])
            record.save()
            stored += 1
        return stored

    def _serve(self, port: int, emulator_url: str, password: str, children: Children) -> None:
        import uvicorn

        server = uvicorn.Server(server_config(port))

        def watch_children() -> None:
            # A dead emulator or fleet would leave a demo that only shows errors: stop instead, and say why.
            while not server.should_exit:
                exited = children.exited()
                if exited is not None and not server.should_exit:
                    name, code = exited
                    self.stderr.write(f"The {name} exited with status {code}; see {children.logs[name]}")
                    server.should_exit = True
                    return
                time.sleep(0.5)

        def announce() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.1)
            if server.started:
                self.stdout.write(
                    "\n"
                    f"  Dashboard:  http://127.0.0.1:{port}/\n"
                    f"  Emulator:   {emulator_url}/  (the Work API, with seeded environments)\n"
                    f"  Logins:     admin / operator / viewer, password {password!r} (DEMO_PASSWORD)\n"
                    f"  Logs:       {', '.join(str(path) for path in children.logs.values())}\n"
                    "  Ctrl-C stops everything.\n"
                )

        threading.Thread(target=watch_children, name="demo-watch", daemon=True).start()
        threading.Thread(target=announce, name="demo-announce", daemon=True).start()
        # uvicorn installs its own SIGINT/SIGTERM handlers for a graceful shutdown, and restores ours after.
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
