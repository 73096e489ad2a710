"""A stateful property test of the emulator's engine (in process, on its own test database, with an injected
clock): random sequences of enqueue, poll, ack, heartbeat, stop, metadata update and clock advance are run against
the engine and against a small reference model of the lifecycle written from the spec, and after every step the
two must agree and the lifecycle's invariants must hold."""

from __future__ import annotations

import base64
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from workqueue.emulator import engine
from workqueue.emulator.engine import NO_HEARTBEAT, EmulatorError
from workqueue.emulator.models import WORK_STATES

pytestmark = pytest.mark.django_db(databases=["emulator"])

TTL = timedelta(seconds=60)
US = timedelta(microseconds=1)
START = datetime(2026, 7, 1, 8, 0, 0, tzinfo=UTC)

STAGES = ["queued", "delivered", "starting", "active", "stopping"]

# What the runs reached: the scripted test fails unless it exercised every path of the lifecycle.
reached: Counter[str] = Counter()


@dataclass
class ModelItem:
    """What the spec says an item's state is, tracked independently of the engine."""

    id: str
    created_at: datetime
    metadata: dict[str, str]
    state: str = "queued"
    delivered_at: datetime | None = None
    stored_heartbeat: str | None = None
    latest_heartbeat: datetime | None = None
    lease_expires_at: datetime | None = None
    heartbeats: list[str] = field(default_factory=list)


# Most calls go to an item the operation suits; a misdirected one goes to any item, to exercise the refusals.
misdirected = st.sampled_from([False, False, False, True])
heartbeat_modes = st.sampled_from(["echo", "echo", "stale", "no_heartbeat", "omitted"])
metadata_keys = st.sampled_from(["team", "owner", "ticket", "k" * 64, "k" * 65])
metadata_values = st.one_of(st.none(), st.sampled_from(["", "a", "v" * 512, "v" * 513]))


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        engine.reset()
        self.now = START
        self.env = engine.create_environment({"name": "prop"}, default_config="self_hosted", now=self.now).id
        self.items: dict[str, ModelItem] = {}
        self.ever_stopped: set[str] = set()
        self.seen_tokens: set[str] = set()
        self.last_seen: dict[str, dict[str, datetime | None]] = {}

    # --- the reference model's own clock-driven transitions -----------------------------------------------------

    def expire(self) -> None:
        for item in self.items.values():
            if item.lease_expires_at is None or item.lease_expires_at > self.now:
                continue
            if item.state in ("starting", "active"):
                reached["requeued by lease expiry"] += 1
                item.state, item.delivered_at = "queued", None
                item.stored_heartbeat, item.lease_expires_at = None, None
            elif item.state == "stopping":
                reached["stopped by lease expiry"] += 1
                item.state, item.lease_expires_at = "stopped", None

    def not_before(self, item: ModelItem) -> datetime:
        return max(self.now, item.latest_heartbeat) if item.latest_heartbeat else self.now

    def live(self) -> list[ModelItem]:
        return [i for i in self.items.values() if i.state in ("starting", "active", "stopping")]

    def deliveries(self) -> list[ModelItem]:
        return [i for i in self.items.values() if i.state == "queued" and i.delivered_at is not None]

    def choose(self, index: int, among: list[ModelItem] | None = None) -> ModelItem:
        """An item from ``among`` if any is left after expiry, else any item (to exercise the refusals too)."""
        self.expire()
        ids = sorted(i.id for i in among if i.id in self.items) if among else []
        ids = ids or sorted(self.items)
        return self.items[ids[index % len(ids)]]

    @initialize(stages=st.lists(st.sampled_from(STAGES), min_size=1, max_size=4))
    def some_work(self, stages: list[str]) -> None:
        """Start from items already part-way through the lifecycle, taken there through the checked steps
        (random sequences alone rarely get deep, as each example runs only some of the rules)."""
        for _ in stages:
            self.enqueue({})
        for item, stage in zip(list(self.items.values()), stages, strict=True):
            if stage == "queued":
                continue
            self.poll(None, "w1")  # delivers the oldest undelivered item: this one
            if STAGES.index(stage) >= STAGES.index("starting"):
                self.ack_item(item)
            if STAGES.index(stage) >= STAGES.index("active"):
                self.heartbeat_item(item, "echo")
            if stage == "stopping":
                self.stop_item(item, force=False)

    # --- rules ----------------------------------------------------------------------------------------------------

    @rule(
        metadata=st.dictionaries(st.sampled_from(["team", "owner"]), st.sampled_from(["a", "b"]), max_size=2)
    )
    def enqueue(self, metadata: dict[str, str]) -> None:
        created = engine.enqueue(self.env, metadata=metadata, now=self.now)
        assert created.state == "queued"
        self.items[created.id] = ModelItem(created.id, self.now, dict(metadata))

    @rule(reclaim_ms=st.sampled_from([None, 0, 1000, 5000]), worker=st.sampled_from([None, "w1", "w2"]))
    def poll(self, reclaim_ms: int | None, worker: str | None) -> None:
        self.expire()
        cutoff = self.now - timedelta(milliseconds=5000 if reclaim_ms is None else reclaim_ms)
        queued = sorted(
            (i for i in self.items.values() if i.state == "queued"), key=lambda i: (i.created_at, i.id)
        )
        reclaimable = [i for i in queued if i.delivered_at is not None and i.delivered_at <= cutoff]
        fresh = [i for i in queued if i.delivered_at is None]
        candidates = reclaimable or fresh
        expected = candidates[0] if candidates else None
        if reclaimable:
            reached["reclaimed"] += 1

        delivery = engine.poll(self.env, reclaim_older_than_ms=reclaim_ms, worker_id=worker, now=self.now)
        if expected is None:
            assert delivery is None
            return
        assert delivery is not None and delivery.item.id == expected.id
        assert delivery.item.state == "queued" and delivery.secret
        payload = json.loads(base64.urlsafe_b64decode(delivery.secret + "=" * (-len(delivery.secret) % 4)))
        assert payload["sessions_token"] == delivery.sessions_token
        assert delivery.sessions_token not in self.seen_tokens  # a fresh secret on every delivery
        self.seen_tokens.add(delivery.sessions_token)
        expected.delivered_at = self.now

    @precondition(lambda self: self.items)
    @rule(index=st.integers(min_value=0), misdirected=misdirected)
    def ack(self, index: int, misdirected: bool) -> None:
        self.ack_item(self.choose(index, None if misdirected else self.deliveries()))

    def ack_item(self, item: ModelItem) -> None:
        conflict = item.state in ("stopping", "stopped") or (
            item.state == "queued" and item.delivered_at is None
        )
        try:
            result = engine.ack(self.env, item.id, now=self.now)
        except EmulatorError as error:
            assert conflict and error.status == 409
            return
        assert not conflict and engine.work_json(result)["secret"] is None
        if item.state == "queued":
            reached["acked"] += 1
            item.state = "starting"
            item.lease_expires_at = self.not_before(item) + TTL
        assert result.state == item.state

    @precondition(lambda self: self.items)
    @rule(index=st.integers(min_value=0), misdirected=misdirected, mode=heartbeat_modes)
    def heartbeat(self, index: int, misdirected: bool, mode: str) -> None:
        self.heartbeat_item(self.choose(index, None if misdirected else self.live()), mode)

    @precondition(lambda self: self.live())
    @rule(index=st.integers(min_value=0))
    def renew_a_lease(self, index: int) -> None:
        """What a healthy worker does: echo the last heartbeat."""
        self.heartbeat_item(self.choose(index, self.live()), "echo")

    def heartbeat_item(self, item: ModelItem, mode: str) -> None:
        stale = next(
            (h for h in reversed(item.heartbeats) if h != item.stored_heartbeat),
            "2026-01-01T00:00:00.000000Z",
        )
        expected_value = {
            "echo": item.stored_heartbeat,
            "stale": stale,
            "no_heartbeat": NO_HEARTBEAT,
            "omitted": None,
        }[mode]
        if mode == "echo" and expected_value is None:
            expected_value = NO_HEARTBEAT
        if item.state == "queued":
            refused = True
        elif item.state in ("stopping", "stopped"):
            refused = False  # not compared
        elif expected_value is None:
            refused = False
        elif expected_value == NO_HEARTBEAT:
            refused = item.stored_heartbeat is not None
        else:
            refused = expected_value != item.stored_heartbeat
        try:
            result = engine.heartbeat(self.env, item.id, expected_last_heartbeat=expected_value, now=self.now)
        except EmulatorError as error:
            assert refused, (item, mode)
            reached["heartbeat refused"] += 1
            assert error.status == 412 and error.details is not None
            assert error.details["error_code"] == "heartbeat_precondition_failed"
            lease = error.details["current_state"]
            assert lease == {
                "last_heartbeat": item.stored_heartbeat,
                "lease_extended": False,
                "state": item.state,
                "ttl_seconds": 60,
            }
            return
        assert not refused, (item, mode)
        if item.state == "stopped":
            assert result["state"] == "stopped" and result["lease_extended"] is False
            assert result["last_heartbeat"] == (item.stored_heartbeat or "")
            return
        beat = result["last_heartbeat"]
        assert result["lease_extended"] is True
        assert beat not in item.heartbeats, "every successful heartbeat is a new value"
        moment = engine.parse_ts(beat)
        assert moment >= self.now
        if item.latest_heartbeat is not None:
            assert moment > item.latest_heartbeat
        reached[f"heartbeat while {item.state}"] += 1
        item.heartbeats.append(beat)
        item.stored_heartbeat, item.latest_heartbeat = beat, moment
        item.lease_expires_at = moment + TTL
        if item.state == "starting":
            item.state = "active"
        assert result["state"] == item.state

    @precondition(lambda self: self.items)
    @rule(index=st.integers(min_value=0), running=st.booleans(), force=st.booleans())
    def stop(self, index: int, running: bool, force: bool) -> None:
        self.stop_item(self.choose(index, self.live() if running else None), force)

    def stop_item(self, item: ModelItem, force: bool) -> None:
        try:
            result = engine.stop(self.env, item.id, force=force, now=self.now)
        except EmulatorError as error:
            assert item.state == "stopped" and error.status == 409
            return
        reached[f"{'forced' if force else 'graceful'} stop of {item.state}"] += 1
        if not force and item.state in ("starting", "active"):
            item.state = "stopping"
        else:
            item.state, item.lease_expires_at = "stopped", None
        assert result.state == item.state

    @precondition(lambda self: self.items)
    @rule(index=st.integers(min_value=0), patch=st.dictionaries(metadata_keys, metadata_values, max_size=4))
    def update(self, index: int, patch: dict[str, str | None]) -> None:
        item = self.choose(index)
        merged = {k: v for k, v in {**item.metadata, **patch}.items() if v is not None}
        valid = len(merged) <= 16 and all(len(k) <= 64 and len(v) <= 512 for k, v in merged.items())
        try:
            result = engine.update_metadata(self.env, item.id, {"metadata": patch}, now=self.now)
        except EmulatorError as error:
            assert not valid and error.status == 400
            assert error.details == {"error_code": "invalid_metadata"}
            return
        assert valid
        item.metadata = merged
        assert result.metadata == merged

    @rule(seconds=st.sampled_from([0.000001, 1, 6, 61, 700]))
    def advance_clock(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    # --- invariants ------------------------------------------------------------------------------------------------

    @invariant()
    def lifecycle_invariants_hold(self) -> None:
        self.expire()
        stats = engine.stats(self.env, now=self.now)  # applies the engine's lazy expiry too
        listed, next_page = engine.list_work(self.env, limit=100, now=self.now)
        assert next_page is None
        rows = {row.id: row for row in listed}

        # The engine and the reference model agree on every item.
        assert set(rows) == set(self.items)
        for item_id, item in self.items.items():
            row = rows[item_id]
            assert (row.state, row.stored_heartbeat, row.metadata) == (
                item.state,
                item.stored_heartbeat,
                item.metadata,
            )
            assert row.lease_expires_at == item.lease_expires_at
            if row.state == "queued":
                assert row.delivered_at == item.delivered_at

        # Queue accounting: depth + pending = queued work not yet acked.
        queued = [i for i in self.items.values() if i.state == "queued"]
        depth = sum(1 for i in queued if i.delivered_at is None)
        assert (stats["depth"], stats["pending"]) == (depth, len(queued) - depth)
        oldest = min((i.created_at for i in queued), default=None)
        assert stats["oldest_queued_at"] == (engine.format_ts(oldest) if oldest else None)

        for row in rows.values():
            assert row.state in WORK_STATES
            # Stopped is terminal.
            if row.id in self.ever_stopped:
                assert row.state == "stopped"
            if row.state == "stopped":
                self.ever_stopped.add(row.id)
            # The secret is for the poll response only; metadata limits always hold.
            assert engine.work_json(row)["secret"] is None
            assert len(row.metadata) <= 16
            assert all(len(k) <= 64 and len(v) <= 512 for k, v in row.metadata.items())
            # Timestamps are in lifecycle order and never move back.
            present = [t for t in (row.created_at, row.acknowledged_at, row.started_at) if t is not None]
            assert present == sorted(present)
            if row.started_at and row.latest_heartbeat_at:
                assert row.started_at <= row.latest_heartbeat_at
            if row.stop_requested_at:
                assert row.acknowledged_at is None or row.acknowledged_at <= row.stop_requested_at
            if row.stopped_at:
                others = (row.created_at, row.acknowledged_at, row.stop_requested_at, row.latest_heartbeat_at)
                assert all(t is None or t <= row.stopped_at for t in others)
            before = self.last_seen.get(row.id, {})
            for name in ("latest_heartbeat_at", "stopped_at"):
                value, earlier = getattr(row, name), before.get(name)
                if earlier is not None:
                    assert value is not None and value >= earlier, name
            self.last_seen[row.id] = {
                "latest_heartbeat_at": row.latest_heartbeat_at,
                "stopped_at": row.stopped_at,
            }


def test_the_lifecycle_holds_under_random_operations(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ids in creation order, so the same steps pick the same items on every replay (hypothesis requires it).
    sequence = itertools.count()
    monkeypatch.setattr(engine, "new_id", lambda prefix: f"{prefix}{next(sequence):020d}")
    reached.clear()
    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            # The same sequences on every run: the suite stays reproducible and the coverage check below stable.
            derandomize=True,
            # No shrinking: a failing run prints its sequence of at most ~35 steps as found, while shrinking it
            # can take minutes (each step is a few database round trips).
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    # Random runs must still get deep into the lifecycle; that each rarer path is checked against the model is
    # the scripted test's job below (how often a random run reaches one varies with the generator).
    assert reached["acked"] > 0 and reached["heartbeat while active"] > 0, dict(reached)


def test_every_lifecycle_path_is_checked_against_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """One scripted run through the same machine, with the invariants checked after every step, so every
    path of the lifecycle is compared with the model on every run."""
    sequence = itertools.count()
    monkeypatch.setattr(engine, "new_id", lambda prefix: f"{prefix}{next(sequence):020d}")
    reached.clear()
    machine = Lifecycle()

    def step() -> None:
        machine.lifecycle_invariants_hold()

    def started(heartbeats: int) -> ModelItem:
        """A new item, delivered to w1, acknowledged and heartbeated ``heartbeats`` times."""
        machine.enqueue({"team": "a"})
        step()
        item = list(machine.items.values())[-1]
        machine.poll(0, "w1")
        step()
        machine.ack_item(item)
        step()
        for _ in range(heartbeats):
            machine.advance_clock(1)
            machine.heartbeat_item(item, "echo")
            step()
        return item

    first = started(heartbeats=2)  # heartbeat while starting, then while active
    machine.heartbeat_item(first, "stale")
    step()
    machine.stop_item(first, force=False)  # graceful stop of active
    step()
    machine.heartbeat_item(first, "echo")  # heartbeat while stopping
    step()
    machine.stop_item(first, force=False)  # graceful stop of stopping
    step()

    second = started(heartbeats=1)
    machine.stop_item(second, force=False)
    step()
    machine.stop_item(second, force=True)  # forced stop of stopping
    step()

    machine.enqueue({})
    step()
    machine.stop_item(list(machine.items.values())[-1], force=True)  # forced stop of queued
    step()

    started(heartbeats=1)  # left to lapse: requeued by lease expiry
    stopping = started(heartbeats=1)
    machine.stop_item(stopping, force=False)  # left to lapse: stopped by lease expiry
    step()
    machine.advance_clock(61)
    step()

    machine.poll(None, "w2")  # delivers the requeued item, which is then never acknowledged
    step()
    machine.advance_clock(6)
    machine.poll(None, "w1")  # reclaimed
    step()

    for path in (
        "acked",
        "reclaimed",
        "heartbeat while starting",
        "heartbeat while active",
        "heartbeat while stopping",
        "heartbeat refused",
        "graceful stop of active",
        "graceful stop of stopping",
        "forced stop of stopping",
        "forced stop of queued",
        "requeued by lease expiry",
        "stopped by lease expiry",
    ):
        assert reached[path] > 0, f"the script did not reach: {path} ({dict(reached)})"
