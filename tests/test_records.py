"""Strict parsing of the Work API's answers into records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from test_client_upstream import ENVIRONMENT, HEARTBEAT, STATS, TS, WORK_ITEM

from workqueue.errors import MalformedResponse
from workqueue.records import Environment, Heartbeat, LeaseState, Page, QueueStats, WorkItem, parse_timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TS, datetime(2026, 7, 1, 8, 15, 6, 120394, tzinfo=UTC)),
        ("2026-07-01T08:15:06Z", datetime(2026, 7, 1, 8, 15, 6, tzinfo=UTC)),
        ("2026-07-01t08:15:06.5z", datetime(2026, 7, 1, 8, 15, 6, 500000, tzinfo=UTC)),
        ("2026-07-01T08:15:06.123456789Z", datetime(2026, 7, 1, 8, 15, 6, 123456, tzinfo=UTC)),
        ("2026-07-01T10:15:06+02:00", datetime(2026, 7, 1, 10, 15, 6, tzinfo=timezone(timedelta(hours=2)))),
    ],
)
def test_rfc3339_timestamps_become_aware_datetimes(text, expected):
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize(
    "text", ["2026-07-01T08:15:06", "2026-07-01", "2026-07-01 08:15:06Z ", "yesterday", ""]
)
def test_timestamps_without_a_zone_or_time_are_refused(text):
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_a_healthcheck_item_parses():
    item = WorkItem.from_json({**WORK_ITEM, "data": {"type": "healthcheck", "id": "hc_1"}, "stopped_at": TS})
    assert item.data.type == "healthcheck"
    assert item.stopped_at == parse_timestamp(TS)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"type": "environment"}, "work item.type should be 'work'"),
        ({"data": {"type": "session"}}, "work item.data.id is missing"),
        ({"metadata": None}, "work item.metadata should be an object of strings"),
        ({"secret": 5}, "work item.secret should be a string or null but is a number"),
        ({"id": None}, "work item.id should be a string but is null"),
    ],
)
def test_a_mistyped_work_item_names_the_field(changes, message):
    with pytest.raises(MalformedResponse, match=message):
        WorkItem.from_json({**WORK_ITEM, **changes})


def test_stats_heartbeat_and_lease_state_parse_and_refuse_booleans_as_numbers():
    assert QueueStats.from_json({**STATS, "workers_polling": None}).workers_polling is None
    assert (
        QueueStats.from_json({k: v for k, v in STATS.items() if k != "workers_polling"}).workers_polling
        is None
    )
    assert Heartbeat.from_json({**HEARTBEAT, "last_heartbeat": ""}).last_heartbeat == ""
    assert LeaseState.from_json({**HEARTBEAT, "last_heartbeat": None}).last_heartbeat is None
    with pytest.raises(MalformedResponse, match="depth should be an integer but is a boolean"):
        QueueStats.from_json({**STATS, "depth": True})
    with pytest.raises(MalformedResponse, match="lease_extended should be true or false"):
        Heartbeat.from_json({**HEARTBEAT, "lease_extended": "yes"})


def test_an_environment_keeps_its_config_type_and_raw_json():
    cloud = {
        **ENVIRONMENT,
        "config": {"type": "cloud", "networking": {"type": "unrestricted"}},
        "archived_at": TS,
    }
    environment = Environment.from_json(cloud)
    assert (environment.config_type, environment.scope) == ("cloud", "organization")
    assert environment.archived_at == parse_timestamp(TS)
    assert environment.raw is cloud
    with pytest.raises(MalformedResponse, match="environment.config is missing"):
        Environment.from_json({k: v for k, v in ENVIRONMENT.items() if k != "config"})


def test_a_page_with_an_empty_cursor_is_the_last_page():
    page = Page.parse({"data": [WORK_ITEM], "next_page": ""}, WorkItem.from_json)
    assert page.next_page is None
    assert [item.id for item in page.data] == [WORK_ITEM["id"]]
    with pytest.raises(MalformedResponse, match="page.data should be an array"):
        Page.parse({"next_page": None}, WorkItem.from_json)
