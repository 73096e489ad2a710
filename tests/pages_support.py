"""Helpers for the page tests (tests/test_pages_*.py) and the browser tests (tests/browser/): the dashboard pointed
at the test emulator, users in each role, stored environment keys, and work items driven into a given state through
the emulator's HTTP API with the environment key, the way a worker would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import cache

from dashboard.models import EnvironmentKey
from dashboard.permissions import ensure_roles
from workqueue.client import SyncWorkAPIClient
from workqueue.emulator.control import EmulatorControl
from workqueue.records import NO_HEARTBEAT, WorkItem

PASSWORD = "correct horse battery staple"


@pytest.fixture
def upstream(emulator: EmulatorControl, settings: Any) -> Iterator[EmulatorControl]:
    """The dashboard's upstream is the test emulator; failures surface at once (no retry wait) in tests."""
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = emulator.api_key
    settings.UPSTREAM_RETRY_TOTAL_SECONDS = 0
    settings.UPSTREAM_TIMEOUT_SECONDS = 5
    settings.ENVIRONMENT_KEYS = {}
    cache.clear()
    yield emulator
    cache.clear()


def make_user(role: str, username: str | None = None, password: str | None = None) -> User:
    """A user in the role's group ("viewer", "operator", "admin"), or in none for ``role="none"``.

    Without a password the account can only be used with ``force_login`` (hashing one costs most of a second).
    """
    ensure_roles()
    user = User.objects.create_user(username or role, password=password)
    if role != "none":
        user.groups.add(Group.objects.get(name=role))
    return user


def store_key(environment_id: str, key: str, name: str = "") -> None:
    """Store an environment key the way an admin does on the configuration page (encrypted)."""
    stored = EnvironmentKey(environment_id=environment_id, name=name, updated_by="test")
    stored.set_key(key)
    stored.save()


def environment(emulator: EmulatorControl, name: str, *, with_key: bool = True) -> tuple[dict[str, Any], str]:
    env, key = emulator.create_environment(name)
    if with_key:
        store_key(env["id"], key)
    return env, key


def worker_client(emulator: EmulatorControl) -> SyncWorkAPIClient:
    return SyncWorkAPIClient(api_key=emulator.api_key, base_url=emulator.base_url, retry_total=0)


def start_work(
    emulator: EmulatorControl,
    env_id: str,
    key: str,
    *,
    metadata: dict[str, str] | None = None,
    state: str = "active",
) -> WorkItem:
    """Enqueue an item and take it to ``state`` (pending, starting, active, stopping) as a worker would."""
    created = emulator.enqueue(env_id, metadata=metadata or {})
    with worker_client(emulator) as c:
        delivered = c.poll_work(env_id, environment_key=key, worker_id="test-worker")
        assert delivered is not None and delivered.id == created["id"], "the emulator delivered another item"
        if state == "pending":
            return c.retrieve_work(env_id, created["id"])
        c.ack_work(env_id, created["id"], credential=key)
        if state == "starting":
            return c.retrieve_work(env_id, created["id"])
        c.heartbeat_work(env_id, created["id"], credential=key, expected_last_heartbeat=NO_HEARTBEAT)
        if state == "stopping":
            return c.stop_work(env_id, created["id"])
        return c.retrieve_work(env_id, created["id"])


def fill_index(emulator: EmulatorControl, env_id: str, key: str) -> int:
    """Put every work item of the environment in the work index as the upstream lists it now (the way the sync's
    fill walk does), and mark the environment's index filled. Returns the number of items recorded."""
    from django.utils import timezone

    from dashboard.index.models import IndexedEnvironment
    from dashboard.index.sync import record_items

    now = timezone.now()
    with worker_client(emulator) as c:
        items = list(c.iter_work(env_id, environment_key=key, limit=100))
    record_items(env_id, items, confirmed_at=now, now=now)
    IndexedEnvironment.objects.update_or_create(
        environment_id=env_id, defaults={"filled": True, "filled_at": now, "head_read_at": now}
    )
    return len(items)
