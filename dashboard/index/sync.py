"""Keeping the work index in step with the upstream.

Writing rows (synchronous, one transaction per batch):

- ``record_items(environment_id, items, confirmed_at=…)``: upsert what a list page or a retrieve returned, and
  turn the changes it shows into timeline events (``WorkEvent``). A row confirmed later than ``confirmed_at``
  (an action's answer that arrived meanwhile) is not overwritten by an older read.
- ``record_answer(item)``: what an action (stop, force-stop, metadata patch) got back, written at once.
- ``prune(now)``: stopped items past ``INDEX_STOPPED_RETENTION_HOURS`` leave the index, with their events.

The sync itself (``EnvironmentSync``, driven by the live feed while it holds the environment's lease) is below.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dashboard import stuck
from dashboard.index.models import IndexedEnvironment, IndexedWork, WorkEvent, WorkState
from dashboard.index.queries import metadata_search_text
from workqueue.records import WorkItem

logger = logging.getLogger(__name__)

# The fields a read of the upstream can change on a row (everything but identity and bookkeeping).
UPSTREAM_FIELDS = (
    "state",
    "data_type",
    "session_id",
    "metadata",
    "search_text",
    "created_at",
    "acknowledged_at",
    "started_at",
    "latest_heartbeat_at",
    "stop_requested_at",
    "stopped_at",
    "worker_id",
    "stuck_since",
)


def row_values(item: WorkItem) -> dict[str, Any]:
    """The index columns for one upstream record."""
    return {
        "state": item.state,
        "data_type": item.data.type,
        "session_id": item.data.id,
        "metadata": dict(item.metadata),
        "search_text": metadata_search_text(item.metadata),
        "created_at": item.created_at,
        "acknowledged_at": item.acknowledged_at,
        "started_at": item.started_at,
        "latest_heartbeat_at": item.latest_heartbeat_at,
        "stop_requested_at": item.stop_requested_at,
        "stopped_at": item.stopped_at,
        "worker_id": str(item.raw.get("worker_id") or "")[:512] if isinstance(item.raw, dict) else "",
        "stuck_since": stuck.reference_time(
            item.state,
            created_at=item.created_at,
            acknowledged_at=item.acknowledged_at,
            latest_heartbeat_at=item.latest_heartbeat_at,
            stop_requested_at=item.stop_requested_at,
        ),
    }


def _events_of_new(values: dict[str, Any]) -> list[tuple[str, datetime]]:
    """A row seen for the first time: its timeline so far, from the upstream's timestamps."""
    events: list[tuple[str, datetime]] = [(WorkEvent.Kind.QUEUED, values["created_at"])]
    for kind, name in (
        (WorkEvent.Kind.ACKNOWLEDGED, "acknowledged_at"),
        (WorkEvent.Kind.FIRST_HEARTBEAT, "started_at"),
        (WorkEvent.Kind.STOP_REQUESTED, "stop_requested_at"),
        (WorkEvent.Kind.STOPPED, "stopped_at"),
    ):
        if values[name] is not None:
            events.append((kind, values[name]))
    return events


def _events_of_change(row: IndexedWork, values: dict[str, Any], now: datetime) -> list[tuple[str, datetime]]:
    """What changed between the row the index had and the record just read, as timeline events."""
    events: list[tuple[str, datetime]] = []
    old_ack, new_ack = row.acknowledged_at, values["acknowledged_at"]
    was_leased = row.state in (WorkState.STARTING, WorkState.ACTIVE)
    requeued = (was_leased and values["state"] == WorkState.QUEUED) or (
        old_ack is not None and new_ack is not None and new_ack != old_ack
    )
    if requeued:
        # The upstream gives no time for a lease running out: the moment is when the index saw it (or, when a
        # new acknowledgement shows it was delivered again in between, just before that).
        events.append((WorkEvent.Kind.REQUEUED, min(now, new_ack) if new_ack is not None else now))
    if new_ack is not None and new_ack != old_ack:
        events.append((WorkEvent.Kind.ACKNOWLEDGED, new_ack))
    if values["started_at"] is not None and values["started_at"] != row.started_at:
        events.append((WorkEvent.Kind.FIRST_HEARTBEAT, values["started_at"]))
    if values["stop_requested_at"] is not None and values["stop_requested_at"] != row.stop_requested_at:
        events.append((WorkEvent.Kind.STOP_REQUESTED, values["stop_requested_at"]))
    if values["state"] == WorkState.STOPPED and row.state != WorkState.STOPPED:
        events.append((WorkEvent.Kind.STOPPED, values["stopped_at"] or now))
    return events


@dataclass
class Recorded:
    """What one batch changed: ids of new rows, of rows whose upstream fields changed, of rows only confirmed."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def known(self) -> int:
        """Rows the index already had."""
        return len(self.changed) + len(self.confirmed) + len(self.skipped)


def stopped_retention() -> timedelta:
    return timedelta(hours=float(settings.INDEX_STOPPED_RETENTION_HOURS))


def record_items(
    environment_id: str,
    items: Sequence[WorkItem],
    *,
    confirmed_at: datetime,
    page_cursor: str | None = None,
    timeline: bool = True,
    now: datetime | None = None,
) -> Recorded:
    """Upsert ``items`` (all of ``environment_id``) as read from the upstream at ``confirmed_at``.

    ``page_cursor``: the list cursor the items were read with (None for a retrieve: the row keeps its cursor).
    ``timeline``: record the events of rows seen for the first time (the fill walk passes False: an old item's
    timeline is read from its row's timestamps, see ``history.timeline``). Stopped items older than the
    retention are not added.
    """
    now = now or timezone.now()
    result = Recorded()
    by_id = {item.id: item for item in items if item.environment_id == environment_id}
    if not by_id:
        return result
    horizon = now - stopped_retention()
    with transaction.atomic():
        existing = {
            row.work_id: row
            for row in IndexedWork.objects.filter(environment_id=environment_id, work_id__in=list(by_id))
        }
        creates: list[IndexedWork] = []
        updates: list[IndexedWork] = []
        events: list[WorkEvent] = []
        only_confirmed: list[int] = []
        for work_id, item in by_id.items():
            values = row_values(item)
            row = existing.get(work_id)
            if row is None:
                if item.state == WorkState.STOPPED and (item.stopped_at or item.created_at) < horizon:
                    result.skipped.append(work_id)
                    continue
                creates.append(
                    IndexedWork(
                        environment_id=environment_id,
                        work_id=work_id,
                        confirmed_at=confirmed_at,
                        first_seen_at=now,
                        page_cursor=page_cursor or "",
                        **values,
                    )
                )
                if timeline:
                    events.extend(
                        WorkEvent(
                            environment_id=environment_id, work_id=work_id, kind=k, at=at, observed_at=now
                        )
                        for k, at in _events_of_new(values)
                    )
                result.new.append(work_id)
                continue
            if row.confirmed_at > confirmed_at:
                result.skipped.append(work_id)  # a newer answer (an action's) is already there
                continue
            changed = any(getattr(row, name) != value for name, value in values.items())
            if not changed and (page_cursor is None or page_cursor == row.page_cursor):
                only_confirmed.append(row.pk)
                result.confirmed.append(work_id)
                continue
            events.extend(
                WorkEvent(environment_id=environment_id, work_id=work_id, kind=k, at=at, observed_at=now)
                for k, at in _events_of_change(row, values, now)
            )
            for name, value in values.items():
                setattr(row, name, value)
            row.confirmed_at = confirmed_at
            if page_cursor is not None:
                row.page_cursor = page_cursor
            updates.append(row)
            (result.changed if changed else result.confirmed).append(work_id)
        if creates:
            IndexedWork.objects.bulk_create(creates, batch_size=500)
        if updates:
            IndexedWork.objects.bulk_update(
                updates, [*UPSTREAM_FIELDS, "confirmed_at", "page_cursor"], batch_size=500
            )
        if only_confirmed:
            IndexedWork.objects.filter(pk__in=only_confirmed).update(confirmed_at=confirmed_at)
        if events:
            WorkEvent.objects.bulk_create(events, batch_size=500)
    return result


def record_answer(item: WorkItem, *, at: datetime | None = None) -> None:
    """An action's answer from the upstream (stop, force-stop, metadata patch): the index shows it at once.

    Never raises: the action has happened whatever the index does, so a failure here is logged only.
    """
    try:
        record_items(item.environment_id, [item], confirmed_at=at or timezone.now())
    except Exception:
        logger.exception("Could not write %s's new state to the work index", item.id)


def forget_missing(environment_id: str, work_ids: Iterable[str]) -> int:
    """Items the upstream says do not exist (404 on retrieve) leave the index."""
    ids = list(work_ids)
    if not ids:
        return 0
    with transaction.atomic():
        WorkEvent.objects.filter(environment_id=environment_id, work_id__in=ids).delete()
        deleted, _ = IndexedWork.objects.filter(environment_id=environment_id, work_id__in=ids).delete()
    return deleted


def prune(now: datetime | None = None, *, batch: int = 5000) -> int:
    """Remove stopped items stopped longer ago than ``INDEX_STOPPED_RETENTION_HOURS`` (the upstream keeps them;
    a page asking for one falls back to ``retrieve_fallback``), and their timeline events."""
    now = now or timezone.now()
    horizon = now - stopped_retention()
    removed = 0
    while True:
        rows = list(
            IndexedWork.objects.filter(state=WorkState.STOPPED, stopped_at__lt=horizon).values_list(
                "pk", "environment_id", "work_id"
            )[:batch]
        )
        if not rows:
            return removed
        with transaction.atomic():
            by_env: dict[str, list[str]] = {}
            for _, environment_id, work_id in rows:
                by_env.setdefault(environment_id, []).append(work_id)
            for environment_id, ids in by_env.items():
                WorkEvent.objects.filter(environment_id=environment_id, work_id__in=ids).delete()
            IndexedWork.objects.filter(pk__in=[pk for pk, _, _ in rows]).delete()
        removed += len(rows)


def environment_state(environment_id: str) -> IndexedEnvironment:
    state, _ = IndexedEnvironment.objects.get_or_create(environment_id=environment_id)
    return state
