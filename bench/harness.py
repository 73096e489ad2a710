"""What every benchmark shares: the temporary workspace, the emulator and dashboard subprocesses, websocket
viewers, process memory and CPU readings, and the result figures.

A run has one ``Workspace``: a temporary directory (in ``/dev/shm`` when there is one, so SQLite's syncs do not
measure the disk), a generated ``SECRET_KEY`` and emulator API key, and the template databases ``bench.prepare``
made once. Each benchmark has a ``Stack``: a directory of its own with a copy of the templates, and the servers it
starts there (``Emulator``, ``Dashboard``: real subprocesses on free ports, ``manage.py emulator`` and uvicorn
serving ``dashboard.asgi``), stopped when the benchmark ends, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from workqueue.emulator.launch import EmulatorProcess, free_port

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_SECONDS = 60.0
PREPARE_TIMEOUT_SECONDS = 300.0
TEMPLATE_FILES = ("dashboard.sqlite3", "emulator.sqlite3")
# uvicorn's websocket implementation as deploy/uvicorn/serve runs it.
SHIPPED_WS = "websockets-sansio"


# --- Results ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    label: str
    value: str


@dataclass
class Result:
    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Markdown tables of the benchmark's own shape (e.g. one column per size), shown after the summary table.
    tables: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    load: float = 0.0  # the machine's 1-minute load average when it started: other work skews the figures
    error: str = ""

    def add(self, label: str, value: str) -> None:
        self.figures.append(Figure(label, value))

    def note(self, text: str) -> None:
        self.notes.append(text)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --- The machine --------------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "cpu": cpu or platform.processor() or "unknown",
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


# --- Processes ----------------------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Server:
    """A server subprocess on a free port, with its output in a log file; ``stop()`` always ends it."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], port: int, log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    health_path = "/"

    def launch(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *self.args], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def ready(self, http: httpx.Client) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
        # A refused connection costs nothing; only a listening server gets an HTTP request.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                return False
        try:
            return http.get(self.base_url + self.health_path).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""

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


def start_all(*servers: Server) -> None:
    """Launch the servers side by side and wait until each answers its health check."""
    for server in servers:
        server.launch()
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    waiting = list(servers)
    # One client for all the checks: building one (and its TLS context) costs more CPU than the check itself.
    with httpx.Client(timeout=2.0) as http:
        while waiting:
            waiting = [s for s in waiting if not s.ready(http)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(s.name for s in waiting)
                raise RuntimeError(f"{names} did not start within {STARTUP_TIMEOUT_SECONDS:.0f} s")
            time.sleep(0.05)


# --- The workspace ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedEnvironment:
    name: str
    id: str
    key: str = field(repr=False)
    work_ids: list[str]
    active_ids: list[str]


class Workspace:
    """The run's temporary directory, secrets and template databases. ``close()`` removes it all."""

    def __init__(self) -> None:
        shm = Path("/dev/shm")
        parent = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.root = Path(tempfile.mkdtemp(prefix="dashboard-bench-", dir=parent))
        self.template = self.root / "template"
        self.template.mkdir()
        self.secret_key = secrets.token_urlsafe(50)
        self.api_key = "sk-ant-api03-bench-" + secrets.token_urlsafe(16)
        self.session_key = ""
        self.environments: dict[str, PreparedEnvironment] = {}
        self.redis_prefix = f"dashboard-bench:{os.getpid()}:{secrets.token_hex(4)}"
        self._stacks: list[Stack] = []

    def base_env(self, data_dir: Path) -> dict[str, str]:
        """What every child process gets: its own data directory and databases, never the repository's."""
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("REDIS_URL", "DATABASE_URL", "EMULATOR_DATABASE_URL", "ENVIRONMENT_KEYS")
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "dashboard.settings",
                "DASHBOARD_DATA_DIR": str(data_dir),
                "DATABASE_URL": f"sqlite:///{data_dir / 'dashboard.sqlite3'}",
                "EMULATOR_DATABASE_URL": f"sqlite:///{data_dir / 'emulator.sqlite3'}",
                "SECRET_KEY": self.secret_key,
                "EMULATOR_API_KEY": self.api_key,
                "ANTHROPIC_API_KEY": self.api_key,
                "LOG_LEVEL": "WARNING",
                "DEBUG": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def prepare(self, environments: list[dict[str, Any]]) -> None:
        """Make the template databases (both migrated; a viewer's session; the environments asked for)."""
        spec = json.dumps({"environments": environments})
        prepared: dict[str, Any] = {}
        # The dashboard's database and the emulator's, each by a process with its own settings, side by side.
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.prepare", spec],
                cwd=REPO,
                env={**self.base_env(self.template), "DJANGO_SETTINGS_MODULE": module},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for module in ("dashboard.settings", "workqueue.emulator.settings")
        ]
        for run in runs:
            out, err = run.communicate(timeout=PREPARE_TIMEOUT_SECONDS)
            if run.returncode != 0:
                raise RuntimeError(f"bench.prepare failed:\n{err.decode(errors='replace')[-3000:]}")
            prepared.update(json.loads(out.decode().strip().splitlines()[-1]))
        self.session_key = prepared["session_key"]
        self.environments = {e["name"]: PreparedEnvironment(**e) for e in prepared["environments"]}

    def environment(self, name: str) -> PreparedEnvironment:
        return self.environments[name]

    def copy(self, name: str) -> Path:
        """A fresh directory for one benchmark with its own copy of the template databases."""
        directory = self.root / name
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir()
        for file in self.template.iterdir():
            if file.name.startswith(TEMPLATE_FILES):
                shutil.copy2(file, directory / file.name)
        return directory

    def stack(self, name: str) -> Stack:
        stack = Stack(self, name)
        self._stacks.append(stack)
        return stack

    def close(self) -> None:
        for stack in self._stacks:
            stack.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class Stack:
    """One benchmark's servers, in a directory of its own with its own copy of the databases. Used as a context
    manager, it stops every server it started when the block ends, however it ends."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.data = workspace.copy(name)
        self.servers: list[Server] = []

    def emulator(self) -> Emulator:
        server = Emulator(self.workspace, self.data)
        self.servers.append(server)
        return server

    def dashboard(
        self,
        emulator: Emulator,
        *,
        environments: Sequence[PreparedEnvironment] = (),
        redis_url: str = "",
        name: str = "dashboard",
        settings: dict[str, str] | None = None,
        deflate: bool = False,
        ws: str = "",
    ) -> Dashboard:
        server = Dashboard(
            self.workspace,
            self.data,
            emulator,
            environments,
            redis_url,
            name,
            settings or {},
            deflate=deflate,
            ws=ws,
        )
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in reversed(self.servers):
            with contextlib.suppress(Exception):
                server.stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Emulator(Server):
    """``manage.py emulator`` started by ``workqueue.emulator.launch``, as the tests and the demo start it."""

    health_path = "/_emulator/health"

    def __init__(self, workspace: Workspace, data_dir: Path) -> None:
        self.launcher = EmulatorProcess(
            port=free_port(),
            api_key=workspace.api_key,
            db_path=data_dir / "emulator.sqlite3",
            log_path=data_dir / "emulator.log",
            environ=workspace.base_env(data_dir),
        )
        super().__init__(
            "emulator", [], dict(self.launcher.environ or {}), self.launcher.port, data_dir / "emulator.log"
        )
        self.api_key = workspace.api_key
        self._admin: httpx.Client | None = None

    def launch(self) -> None:
        self.launcher.launch()
        self.process = self.launcher.process

    def ready(self, http: httpx.Client) -> bool:
        return self.launcher.healthy(http)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """A call to the emulator's admin surface (``/_emulator/...``), e.g. its request counters."""
        if self._admin is None:
            self._admin = httpx.Client(
                base_url=self.base_url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=10.0
            )
        response = self._admin.request(method, f"/_emulator/{path}", json=body)
        response.raise_for_status()
        return response.json()

    def stop(self, grace: float = 10.0) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        super().stop(grace)

    def upstream_requests(self) -> dict[str, Any]:
        counts: dict[str, Any] = self.admin("GET", "requests")
        return counts

    def reset_requests(self) -> None:
        self.admin("DELETE", "requests")


class Dashboard(Server):
    health_path = "/healthz"

    def __init__(
        self,
        workspace: Workspace,
        data_dir: Path,
        emulator: Emulator,
        environments: Sequence[PreparedEnvironment],
        redis_url: str,
        name: str,
        settings: dict[str, str],
        *,
        deflate: bool = False,
        ws: str = "",
    ) -> None:
        port = free_port()
        env = workspace.base_env(data_dir)
        env.update(
            {
                "ANTHROPIC_BASE_URL": emulator.base_url,
                "ENVIRONMENT_KEYS": ",".join(f"{e.id}={e.key}" for e in environments),
                "LIVE_REDIS_PREFIX": f"{workspace.redis_prefix}:{name}",
                # The scenarios sign every screen in as one viewer: lift the per-person socket cap for them.
                "LIVE_MAX_SOCKETS_PER_USER": "10000",
                "LIVE_MAX_WATCHED_ITEMS_PER_USER": "100000",
                **settings,
            }
        )
        if redis_url:
            env["REDIS_URL"] = redis_url
        # uvicorn as deployed: uvloop, httptools, the websockets protocol, lifespan on (starts the live feed),
        # permessage-deflate off (``deflate=True`` turns it on, as uvicorn's default, for a side-by-side figure).
        args = [
            "-m",
            "uvicorn",
            "dashboard.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--lifespan",
            "on",
            "--ws-per-message-deflate",
            "true" if deflate else "false",
        ]
        # ``ws``: uvicorn's websocket implementation (``--ws``), for a side-by-side figure; "" is the shipped one.
        args += ["--ws", ws or SHIPPED_WS]
        super().__init__(name, args, env, port, data_dir / f"{name}.log")
        self.session_cookie = f"sessionid={workspace.session_key}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Cookie": self.session_cookie},
            timeout=30.0,
            follow_redirects=False,
        )


# --- Websocket viewers --------------------------------------------------------------------------------------------

LIVE_AT = re.compile(r'data-live-at="([^"]+)"')


def live_at(frame: str) -> float | None:
    """The snapshot's timestamp carried by a live frame (when the feed read the numbers it publishes)."""
    match = LIVE_AT.search(frame)
    if match is None:
        return None
    return datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()


OnFrame = Callable[[int, float, str], None]


class Viewers:
    """Websocket clients of one dashboard, each with a task that reads (and so acknowledges) every frame."""

    def __init__(self, dashboard: Dashboard, on_frame: OnFrame | None = None) -> None:
        self.dashboard = dashboard
        self.on_frame = on_frame
        self.sockets: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.frames = 0

    async def _open_one(self, path: str) -> ClientConnection:
        return await connect(
            self.dashboard.ws_url + path,
            origin=Origin(self.dashboard.base_url),
            additional_headers={"Cookie": self.dashboard.session_cookie},
            proxy=None,
            open_timeout=30,
            max_size=4 * 1024 * 1024,
        )

    async def _read(self, index: int, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for frame in ws:
                received = time.time()
                self.frames += 1
                if self.on_frame is not None:
                    self.on_frame(index, received, frame if isinstance(frame, str) else frame.decode())

    async def open(self, paths: Sequence[str], concurrency: int = 25) -> None:
        """Open one socket per path, ``concurrency`` handshakes at a time (as browsers arrive, not all at once)."""
        semaphore = asyncio.Semaphore(concurrency)

        async def one(path: str) -> None:
            async with semaphore:
                ws = await self._open_one(path)
            # Read from the start, so early sockets do not pile up frames while the others open.
            self.readers.append(asyncio.create_task(self._read(len(self.sockets), ws)))
            self.sockets.append(ws)

        opened = await asyncio.gather(*(one(p) for p in paths), return_exceptions=True)
        failures = [o for o in opened if isinstance(o, BaseException)]
        if failures:
            await self.close()
            raise RuntimeError(f"{len(failures)} of {len(paths)} websockets failed to open: {failures[0]!r}")

    async def close(self) -> None:
        sockets, self.sockets = self.sockets, []
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.readers.clear()

    async def __aenter__(self) -> Viewers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(step)


async def in_thread(func: Callable[..., Any], *args: Any) -> Any:
    """Blocking harness calls (process start, admin requests) off the event loop, so viewers keep reading."""
    return await asyncio.to_thread(func, *args)
