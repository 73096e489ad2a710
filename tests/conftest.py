"""Fixtures shared by the whole suite.

The emulator runs the way it runs in production use: ``manage.py emulator`` in a subprocess on a free port, with a
SQLite file of its own in a temporary directory, reached over real HTTP (started by ``workqueue.emulator.launch``,
as the benchmarks and the demo start it).

- ``emulator_server`` (session): the running process (``.base_url``, ``.api_key``, ``.db_path``).
- ``emulator`` (function): an ``EmulatorControl`` for that process, with all state wiped first.
- ``start_emulator`` (function): a factory for extra emulator processes (e.g. to restart one on the same database);
  every process it starts is stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from workqueue.emulator.control import EmulatorControl
from workqueue.emulator.launch import EmulatorProcess, free_port

# The dashboard pointed at the test emulator (``upstream``) and a live runtime on it (``live_runtime``), for every
# module that asks for them by name.
pytest_plugins = ["pages_support", "live_support"]

REPO = Path(__file__).resolve().parent.parent
EMULATOR_TEST_API_KEY = "sk-ant-api03-emulator-test"


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    db_path = tmp_path_factory.mktemp("emulator") / "emulator.sqlite3"
    server = EmulatorProcess(port=free_port(), api_key=EMULATOR_TEST_API_KEY, db_path=db_path).start()
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
        server = EmulatorProcess(
            port=free_port(), api_key=EMULATOR_TEST_API_KEY, db_path=db_path or tmp_path / "emulator.sqlite3"
        )
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
