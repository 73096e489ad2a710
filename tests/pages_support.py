"""Helpers for the page tests (tests/test_pages_*.py) and the browser tests (tests/browser/): the dashboard pointed
at the test emulator, users in each role, stored environment keys, and work items driven into a given state through
the emulator's HTTP API with the environment key, the way a worker would. The official SDK plays the worker, and
the other party that reads or stops work upstream: the dashboard's own client is what the tests are watching."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import cache

from dashboard.models import EnvironmentKey
from dashboard.permissions import ensure_roles
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


def worker_client(emulator: EmulatorControl) -> anthropic.Anthropic:
    """The official SDK with the emulator's API key, to read or stop work beside the dashboard
    (``c.beta.environments.work.retrieve(work_id, environment_id=env_id)``)."""
    return anthropic.Anthropic(api_key=emulator.api_key, base_url=emulator.base_url, max_retries=0)


def worker(emulator: EmulatorControl, key: str) -> anthropic.Anthropic:
    """The official SDK with an environment key, as a worker holds it (poll, ack, heartbeat, list)."""
    return anthropic.Anthropic(auth_token=key, base_url=emulator.base_url, max_retries=0)


def record(sdk_item: Any) -> WorkItem:
    """The SDK's work item as the dashboard's client reads it (the SDK keeps the answer's fields as sent)."""
    return WorkItem.from_json(sdk_item.to_dict())


def start_work(
    emulator: EmulatorControl,
    env_id: str,
    key: str,
    *,
    metadata: dict[str, str] | None = None,
    state: str = "active",
) -> WorkItem:
    """Enqueue an item and take it to ``state`` (pending, starting, active, stopping) as a worker would."""
    work_id = emulator.enqueue(env_id, metadata=metadata or {})["id"]
    with worker(emulator, key) as w, worker_client(emulator) as c:
        delivered = w.beta.environments.work.poll(env_id, anthropic_worker_id="test-worker")
        assert delivered is not None and delivered.id == work_id, "the emulator delivered another item"
        if state == "pending":
            return record(c.beta.environments.work.retrieve(work_id, environment_id=env_id))
        w.beta.environments.work.ack(work_id, environment_id=env_id)
        if state == "starting":
            return record(c.beta.environments.work.retrieve(work_id, environment_id=env_id))
        w.beta.environments.work.heartbeat(
            work_id, environment_id=env_id, expected_last_heartbeat=NO_HEARTBEAT
        )
        if state == "stopping":
            return record(c.beta.environments.work.stop(work_id, environment_id=env_id))
        return record(c.beta.environments.work.retrieve(work_id, environment_id=env_id))


def fill_index(emulator: EmulatorControl, env_id: str, key: str) -> int:
    """Put every work item of the environment in the work index as the upstream lists it now (the way the sync's
    fill walk does), and mark the environment's index filled. Returns the number of items recorded."""
    from django.utils import timezone

    from dashboard.index.models import IndexedEnvironment
    from dashboard.index.sync import record_items

    now = timezone.now()
    with worker(emulator, key) as w:
        items = [record(item) for item in w.beta.environments.work.list(env_id, limit=100)]
    record_items(env_id, items, confirmed_at=now, now=now)
    IndexedEnvironment.objects.update_or_create(
        environment_id=env_id, defaults={"filled": True, "filled_at": now, "head_read_at": now}
    )
    return len(items)
