"""The starting state the benchmarks copy: run once per ``python -m bench`` as ``python -m bench.prepare SPEC``.

It runs in its own processes because Django reads its settings from the environment once: the caller points
``DASHBOARD_DATA_DIR``, ``DATABASE_URL`` and ``EMULATOR_DATABASE_URL`` at template files in a temporary directory.
With the dashboard's settings it migrates the dashboard's database and creates a viewer and a signed-in session for
them; with the emulator's (``workqueue.emulator.settings``) it migrates the emulator's database and creates its
environments and work through the emulator's own engine (as ``manage.py emulator --seed`` does). Each prints one
JSON line: the session key, or per environment its id, key and work ids. The benchmarks then copy the two
SQLite files, so no benchmark pays for migrations and the emulator and the dashboard can start side by side.

SPEC (JSON): ``{"environments": [{"name": "bench-a", "items": 50, "active": 1, "backlog": 0}, ...]}`` — ``items``
work items with metadata, the first ``active`` of them driven to ``active`` the way a worker would; ``backlog``
more plain queued items (for the fleet).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def _session_for(username: str, role: str) -> str:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import Group, User
    from django.contrib.sessions.backends.db import SessionStore

    from dashboard.permissions import ensure_roles

    ensure_roles()
    user = User.objects.create_user(username)  # no password: the session below is the only way in
    user.groups.add(Group.objects.get(name=role))
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    assert session.session_key is not None
    return session.session_key


def _environment(spec: dict[str, Any]) -> dict[str, Any]:
    from django.db import transaction

    from workqueue.emulator import engine

    env = engine.create_environment({"name": spec["name"]}, default_config="self_hosted")
    work_ids: list[str] = []
    active_ids: list[str] = []
    teams = ("payments", "search", "growth", "batch")
    with transaction.atomic(using="emulator"):
        for n in range(int(spec.get("items", 0))):
            metadata = {"team": teams[n % len(teams)], "ticket": f"OPS-{1000 + n}", "priority": "normal"}
            work_ids.append(engine.enqueue(env.id, metadata=metadata).id)
        for _ in range(int(spec.get("active", 0))):
            delivery = engine.poll(env.id, worker_id="bench-prepare")
            assert delivery is not None
            engine.ack(env.id, delivery.item.id)
            engine.heartbeat(env.id, delivery.item.id, expected_last_heartbeat=engine.NO_HEARTBEAT)
            active_ids.append(delivery.item.id)
        for _ in range(int(spec.get("backlog", 0))):
            engine.enqueue(env.id)
    return {
        "name": spec["name"],
        "id": env.id,
        "key": env.environment_key,
        "work_ids": work_ids,
        "active_ids": active_ids,
    }


def main(argv: list[str]) -> None:
    spec = json.loads(argv[1]) if len(argv) > 1 else {}
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    prepared: dict[str, Any]
    if "workqueue.emulator" in settings.INSTALLED_APPS:  # the emulator's settings
        call_command("migrate", database="emulator", interactive=False, verbosity=0)
        prepared = {"environments": [_environment(e) for e in spec.get("environments", [])]}
    else:
        call_command("migrate", interactive=False, verbosity=0)
        prepared = {"session_key": _session_for("bench-viewer", "viewer")}
    sys.stdout.write(json.dumps(prepared) + "\n")


if __name__ == "__main__":
    main(sys.argv)
