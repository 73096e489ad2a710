"""The work index's reads: the stuck set agrees with dashboard.stuck, counts, paging both ways, search, freshness."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from dashboard import stuck
from dashboard.index import queries
from dashboard.index.sync import record_items
from workqueue.records import WorkItem

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def ts(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def work(
    n: int,
    state: str,
    *,
    env: str = "env_a",
    age: float = 0,
    ack_age: float | None = None,
    heartbeat_age: float | None = None,
    stop_age: float | None = None,
    metadata: dict[str, str] | None = None,
) -> WorkItem:
    created = NOW - timedelta(seconds=age)
    stopped = NOW if state == "stopped" else None
    return WorkItem.from_json(
        {
            "id": f"work_{n:06d}",
            "type": "work",
            "environment_id": env,
            "state": state,
            "data": {"type": "session", "id": f"session_{n:06d}"},
            "metadata": metadata or {},
            "created_at": ts(created),
            "acknowledged_at": ts(None if ack_age is None else NOW - timedelta(seconds=ack_age)),
            "started_at": ts(None if heartbeat_age is None else NOW - timedelta(seconds=heartbeat_age)),
            "latest_heartbeat_at": ts(
                None if heartbeat_age is None else NOW - timedelta(seconds=heartbeat_age)
            ),
            "stop_requested_at": ts(None if stop_age is None else NOW - timedelta(seconds=stop_age)),
            "stopped_at": ts(stopped),
            "secret": None,
        }
    )


def test_the_stuck_query_agrees_with_the_stuck_rule_item_by_item(settings):
    settings.STUCK_HEARTBEAT_SECONDS, settings.STUCK_STOPPING_SECONDS, settings.STUCK_QUEUED_SECONDS = (
        120,
        300,
        600,
    )
    rng = random.Random(11)
    items = []
    for n in range(400):
        state = rng.choice(["queued", "starting", "active", "stopping", "stopped"])
        age = rng.uniform(0, 2000)
        ack = rng.uniform(0, age) if state != "queued" and rng.random() < 0.8 else None
        beat = rng.uniform(0, ack) if ack is not None and state in ("active", "stopping") else None
        stop = rng.uniform(0, age) if state == "stopping" and rng.random() < 0.8 else None
        items.append(
            work(
                n,
                state,
                env=rng.choice(["env_a", "env_b"]),
                age=age,
                ack_age=ack,
                heartbeat_age=beat,
                stop_age=stop,
            )
        )
    for env in ("env_a", "env_b"):
        record_items(env, [i for i in items if i.environment_id == env], confirmed_at=NOW, now=NOW)

    expected = {i.id for i in items if stuck.is_stuck(i, NOW)}
    assert expected and len(expected) < len(items)  # the sample has both
    assert set(queries.stuck_items(now=NOW).values_list("work_id", flat=True)) == expected
    counts = queries.environment_counts(now=NOW)
    for env in ("env_a", "env_b"):
        mine = [i for i in items if i.environment_id == env]
        assert counts[env].stuck == sum(1 for i in mine if i.id in expected)
        assert counts[env]["active"] == sum(1 for i in mine if i.state == "active")
        assert counts[env].total == len(mine)
    assert queries.work_items("env_a", stuck_only=True, now=NOW).count() == counts["env_a"].stuck


def test_the_stopped_count_follows_every_write_of_the_index(settings):
    from dashboard.index.sync import forget_missing, prune, record_answer

    def stopped_count(env: str = "env_a") -> int:
        return queries.environment_counts([env], NOW)[env]["stopped"]

    record_items("env_a", [work(n, "active", heartbeat_age=5) for n in range(4)], confirmed_at=NOW, now=NOW)
    record_items("env_a", [work(n, "stopped", age=10) for n in range(4, 10)], confirmed_at=NOW, now=NOW)
    record_items("env_b", [work(n, "stopped", env="env_b") for n in range(10, 13)], confirmed_at=NOW, now=NOW)
    assert (stopped_count(), stopped_count("env_b")) == (6, 3)

    # Two of the active ones stop (one seen by the sync, one by an action's answer); read again, nothing changes.
    later = NOW + timedelta(seconds=1)
    record_items("env_a", [work(0, "stopped", heartbeat_age=5)], confirmed_at=later, now=later)
    record_answer(work(1, "stopped", heartbeat_age=5), at=later)
    record_items("env_a", [work(0, "stopped", heartbeat_age=5)], confirmed_at=later, now=later)
    assert stopped_count() == 8
    assert queries.work_items("env_a", state="stopped").count() == 8

    # One stopped and one active item the upstream no longer has; then the retention removes env_a's stopped rows.
    forget_missing("env_a", ["work_000004", "work_000002"])
    assert stopped_count() == 7
    settings.INDEX_STOPPED_RETENTION_HOURS = 1
    assert prune(NOW + timedelta(hours=2)) == 7 + 3
    assert (stopped_count(), stopped_count("env_b")) == (0, 0)
    assert queries.environment_counts(["env_a"], NOW)["env_a"].total == 1


def test_paging_goes_older_and_back_newer_with_a_total(settings):
    record_items("env_a", [work(n, "stopped", age=1000 - n) for n in range(130)], confirmed_at=NOW, now=NOW)
    rows = queries.work_items("env_a")

    first = queries.page(rows, limit=50)
    second = queries.page(rows, older=first.older, limit=50)
    third = queries.page(rows, older=second.older, limit=50)
    back = queries.page(rows, newer=third.newer, limit=50)

    assert first.total == 130 and first.newer is None
    assert [r.work_id for r in first][:2] == ["work_000129", "work_000128"]
    assert [r.work_id for r in third] == [f"work_{n:06d}" for n in range(29, -1, -1)]
    assert third.older is None
    assert [r.work_id for r in back] == [r.work_id for r in second]
    with pytest.raises(queries.InvalidCursor):
        queries.page(rows, older="not-a-cursor")


def test_search_by_id_session_key_value_and_free_text():
    record_items(
        "env_a",
        [
            work(1, "active", metadata={"owner": "Alice", "ticket": "OPS-12"}),
            work(2, "active", metadata={"owner": "bob", "note": "alice said hi"}),
            work(3, "queued"),
        ],
        confirmed_at=NOW,
        now=NOW,
    )

    def found(text: str) -> list[str]:
        return sorted(queries.work_items("env_a", q=text).values_list("work_id", flat=True))

    assert found("work_000003") == ["work_000003"]
    assert found("session_000002") == ["work_000002"]
    assert found("owner=alice") == ["work_000001"]
    assert found("alice") == ["work_000001", "work_000002"]
    assert found("alice ticket=ops-12") == ["work_000001"]
    assert found('"said hi"') == ["work_000002"]
    with pytest.raises(queries.InvalidSearch):
        queries.parse_search("x" * 600)


def test_freshness_names_the_oldest_confirmed_live_row():
    record_items("env_a", [work(1, "active")], confirmed_at=NOW - timedelta(seconds=40), now=NOW)
    record_items("env_a", [work(2, "active")], confirmed_at=NOW - timedelta(seconds=5), now=NOW)
    record_items("env_a", [work(3, "stopped")], confirmed_at=NOW - timedelta(seconds=900), now=NOW)

    fresh = queries.freshness("env_a", now=NOW)

    assert fresh.age_seconds == 40
