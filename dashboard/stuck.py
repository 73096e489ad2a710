"""When a work item is stuck, and how healthy its lease looks.

A work item is stuck when it is starting or active and its last heartbeat (or, before the first one, its
acknowledgement) is older than ``STUCK_HEARTBEAT_SECONDS``; when it has been stopping longer than
``STUCK_STOPPING_SECONDS``, or is stopping with a heartbeat older than ``STUCK_HEARTBEAT_SECONDS`` (the worker
is gone, so the graceful stop cannot complete); or when it has waited queued longer than ``STUCK_QUEUED_SECONDS``. The thresholds are
settings, overridable from the environment within bounds.

This module is the one place the rule is stated. ``stuck_reason`` applies it to one item; the work index
(``dashboard.index.queries.stuck_items``) asks the same question of the database with ``reference_time`` (stored
per row when it is written) and ``cutoffs`` (the oldest reference time per state that is not stuck yet).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from django.conf import settings

from dashboard.durations import age_text


class WorkItem(Protocol):
    """What the rule reads of an item: a ``workqueue.records.WorkItem`` or a row of the work index."""

    @property
    def state(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def acknowledged_at(self) -> datetime | None: ...
    @property
    def latest_heartbeat_at(self) -> datetime | None: ...
    @property
    def stop_requested_at(self) -> datetime | None: ...


__all__ = [
    "STATE_THRESHOLD",
    "cutoffs",
    "is_stuck",
    "lease_health",
    "reference_time",
    "stuck_reason",
    "thresholds",
]

# Which threshold applies in which state; a state not named here (stopped) is never stuck.
STATE_THRESHOLD = {"starting": "heartbeat", "active": "heartbeat", "stopping": "stopping", "queued": "queued"}


def thresholds() -> dict[str, int]:
    return {
        "heartbeat": int(settings.STUCK_HEARTBEAT_SECONDS),
        "stopping": int(settings.STUCK_STOPPING_SECONDS),
        "queued": int(settings.STUCK_QUEUED_SECONDS),
    }


def reference_time(
    state: str,
    *,
    created_at: datetime,
    acknowledged_at: datetime | None,
    latest_heartbeat_at: datetime | None,
    stop_requested_at: datetime | None,
) -> datetime | None:
    """The moment the stuck clock of an item in ``state`` runs from (None in a state that is never stuck)."""
    if state in ("starting", "active"):
        return latest_heartbeat_at or acknowledged_at or created_at
    if state == "stopping":
        return stop_requested_at or latest_heartbeat_at or created_at
    if state == "queued":
        return created_at
    return None


def cutoffs(now: datetime) -> dict[str, datetime]:
    """Per state that can be stuck: an item is stuck when its ``reference_time`` is earlier than this."""
    limits = thresholds()
    return {state: now - timedelta(seconds=limits[name]) for state, name in STATE_THRESHOLD.items()}


def _heartbeat_reference(item: WorkItem) -> tuple[datetime, str]:
    if item.latest_heartbeat_at is not None:
        return item.latest_heartbeat_at, "heartbeat"
    if item.acknowledged_at is not None:
        return item.acknowledged_at, "acknowledgement"
    return item.created_at, "creation"


def _reference_of(item: WorkItem) -> datetime | None:
    return reference_time(
        item.state,
        created_at=item.created_at,
        acknowledged_at=item.acknowledged_at,
        latest_heartbeat_at=item.latest_heartbeat_at,
        stop_requested_at=item.stop_requested_at,
    )


def stuck_reason(item: WorkItem, now: datetime) -> str | None:
    """A sentence saying why ``item`` is stuck, or None if it is not."""
    since = _reference_of(item)
    if since is None:
        return None
    limit = thresholds()[STATE_THRESHOLD[item.state]]
    age = (now - since).total_seconds()
    if age <= limit:
        return _graceful_stop_cannot_complete(item, now) if item.state == "stopping" else None
    if item.state in ("starting", "active"):
        if _heartbeat_reference(item)[1] == "heartbeat":
            return f"No heartbeat for {age_text(age)} while {item.state} (threshold {age_text(limit)})."
        return (
            f"{item.state.capitalize()} for {age_text(age)} without any heartbeat "
            f"(threshold {age_text(limit)})."
        )
    if item.state == "stopping":
        return f"Stopping for {age_text(age)} and not stopped yet (threshold {age_text(limit)})."
    return f"Queued for {age_text(age)} without being picked up (threshold {age_text(limit)})."


def _graceful_stop_cannot_complete(item: WorkItem, now: datetime) -> str | None:
    """A stopping item whose worker has stopped heartbeating: nobody will finish the graceful stop, so it is
    stuck as soon as the heartbeat is older than the heartbeat threshold (not only after the stopping one)."""
    since, what = _heartbeat_reference(item)
    age = (now - since).total_seconds()
    limit = thresholds()["heartbeat"]
    if age <= limit:
        return None
    if what == "heartbeat":
        return (
            f"Graceful stop cannot complete: no heartbeat for {age_text(age)} "
            f"(heartbeat threshold {age_text(limit)})."
        )
    return (
        f"Graceful stop cannot complete: no heartbeat at all in {age_text(age)} since {what} "
        f"(heartbeat threshold {age_text(limit)})."
    )


def _heartbeat_phrase(item: WorkItem, now: datetime) -> tuple[float, str]:
    """Seconds since the item's last sign of life (heartbeat, else acknowledgement, else creation), and a phrase
    saying so for the lease panel."""
    since, what = _heartbeat_reference(item)
    age = (now - since).total_seconds()
    if what == "heartbeat":
        return age, f"last heartbeat {age_text(age)} ago"
    return age, f"no heartbeat yet ({age_text(age)} since {what})"


def is_stuck(item: WorkItem, now: datetime) -> bool:
    return stuck_reason(item, now) is not None


def lease_health(item: WorkItem, now: datetime) -> dict[str, Any]:
    """How the item's lease looks: ``status`` is "healthy", "late", "stuck" or "none" (no lease in this state).

    Also ``heartbeat_age_seconds`` (None without a heartbeat), ``threshold_seconds``, ``label`` (a short phrase),
    ``stuck_reason`` and ``state``.
    """
    limits = thresholds()
    reason = stuck_reason(item, now)
    heartbeat_age = (
        (now - item.latest_heartbeat_at).total_seconds() if item.latest_heartbeat_at is not None else None
    )
    health: dict[str, Any] = {
        "state": item.state,
        "heartbeat_age_seconds": heartbeat_age,
        "threshold_seconds": limits["heartbeat"],
        "stuck_reason": reason,
    }
    if item.state in ("starting", "active"):
        age, label = _heartbeat_phrase(item, now)
        if reason:
            status = "stuck"
        elif age > limits["heartbeat"] / 2:
            # Half the threshold without a heartbeat: not stuck yet, but worth a look before it is.
            status = "late"
        else:
            status = "healthy"
        health.update(status=status, label=label)
    elif item.state == "stopping":
        age, beat = _heartbeat_phrase(item, now)
        # The worker is gone (the rule of _graceful_stop_cannot_complete).
        dead = age > limits["heartbeat"]
        health.update(
            status="stuck" if reason else "healthy",
            label=(
                f"stop requested, but the worker is gone: {beat}"
                if dead
                else f"stop requested; waiting for the worker to finish ({beat})"
            ),
            # The threshold the verdict compares with: the heartbeat's once the worker is gone.
            threshold_seconds=limits["heartbeat"] if dead else limits["stopping"],
            threshold_name="heartbeat" if dead else "stopping",
        )
    elif item.state == "queued":
        health.update(
            status="stuck" if reason else "none",
            label="waiting for a worker",
            threshold_seconds=limits["queued"],
        )
    else:
        health.update(status="none", label="stopped: no lease")
    return health
