"""Example environments and work for ``manage.py emulator --seed``: three self-hosted environments with items in
every state and a variety of metadata. Seeding twice changes nothing."""

from __future__ import annotations

from typing import Any, Protocol

from workqueue.emulator import engine
from workqueue.emulator.models import Environment


class Writer(Protocol):
    def write(self, text: str) -> Any: ...


SEED_ENVIRONMENTS: tuple[tuple[str, str], ...] = (
    ("production", "Customer-facing sessions"),
    ("staging", "Pre-release checks"),
    ("batch", "Nightly batch jobs"),
)


def _drive(env_id: str, state: str, metadata: dict[str, Any], work_type: str = "session") -> None:
    """Enqueue one item and take it to ``state`` the way a worker would (poll, ack, heartbeat, stop)."""
    item = engine.enqueue(env_id, work_type=work_type, metadata=metadata)
    if state == "queued":
        return
    delivery = engine.poll(env_id, worker_id="seed-worker")
    assert delivery is not None and delivery.item.id == item.id
    if state == "pending":
        return
    engine.ack(env_id, item.id)
    if state == "starting":
        return
    engine.heartbeat(env_id, item.id, expected_last_heartbeat=engine.NO_HEARTBEAT)
    if state == "active":
        return
    engine.stop(env_id, item.id, force=(state == "stopped"))


def _seed_production(env_id: str) -> None:
    for state, meta in (
        ("stopped", {"team": "payments", "ticket": "OPS-101"}),
        ("stopping", {"team": "payments", "priority": "high"}),
        ("active", {"team": "search", "owner": "dana"}),
        ("active", {"team": "payments", "owner": "lee", "priority": "high"}),
        ("starting", {"team": "search"}),
        ("pending", {"team": "growth"}),
        ("queued", {"team": "payments", "priority": "high"}),
        ("queued", {"team": "growth", "priority": "low"}),
    ):
        _drive(env_id, state, meta)
    _drive(env_id, "queued", {"probe": "liveness"}, work_type="healthcheck")


def _seed_staging(env_id: str) -> None:
    _drive(env_id, "active", {"release": "2026.07.1", "owner": "sam"})
    for n in range(3):
        _drive(env_id, "queued", {"release": "2026.07.1", "suite": f"smoke-{n + 1}"})


def _seed_batch(env_id: str) -> None:
    for shard in range(12):
        _drive(env_id, "queued", {"job": "nightly-export", "shard": str(shard)})


_SEEDERS = {"production": _seed_production, "staging": _seed_staging, "batch": _seed_batch}


def seed(out: Writer) -> list[Environment]:
    """Create the example environments unless they exist; print each one's id and environment key."""
    envs: list[Environment] = []
    for name, description in SEED_ENVIRONMENTS:
        env = Environment.objects.using(engine.DB).filter(name=name).order_by("created_at").first()
        if env is None:
            env = engine.create_environment(
                {"name": name, "description": description, "metadata": {"seeded": "true"}},
                default_config="self_hosted",
            )
            _SEEDERS[name](env.id)
        envs.append(env)
    for env in envs:
        out.write(f"{env.name:<12} {env.id}  environment key: {env.environment_key}\n")
    return envs
