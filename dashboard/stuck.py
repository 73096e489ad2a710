"""When a work item is stuck, and how healthy its lease looks.

A work item is stuck when it is starting or active and its last heartbeat (or, before the first one, its
acknowledgement) is older than ``STUCK_HEARTBEAT_SECONDS``; when it has been stopping longer than
``STUCK_STOPPING_SECONDS``; or when it has waited queued longer than ``STUCK_QUEUED_SECONDS``. The thresholds are
settings, overridable from the environment within bounds.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from workqueue.records import WorkItem

__all__ = ["humanize_seconds", "is_stuck", "lease_health", "stuck_reason", "thresholds"]


def thresholds() -> dict[str, int]:
    return {
        "heartbeat": int(settings.STUCK_HEARTBEAT_SECONDS),
        "stopping": int(settings.STUCK_STOPPING_SECONDS),
        "queued": int(settings.STUCK_QUEUED_SECONDS),
    }


def humanize_seconds(seconds: float) -> str:
    """``95`` → ``"1 min 35 s"``; coarse on purpose, for sentences."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def _heartbeat_reference(item: WorkItem) -> tuple[datetime, str]:
    if item.latest_heartbeat_at is not None:
        return item.latest_heartbeat_at, "heartbeat"
    if item.acknowledged_at is not None:
        return item.acknowledged_at, "acknowledgement"
    return item.created_at, "creation"


def stuck_reason(item: WorkItem, now: datetime) -> str | None:
    """A sentence saying why ``item`` is stuck, or None if it is not."""
    limits = thresholds()
    if item.state in ("starting", "active"):
        since, what = _heartbeat_reference(item)
        age = (now - since).total_seconds()
        if age > limits["heartbeat"]:
            if what == "heartbeat":
                return (
                    f"No heartbeat for {humanize_seconds(age)} while {item.state} "
                    f"(threshold {humanize_seconds(limits['heartbeat'])})."
                )
            return (
                f"{item.state.capitalize()} for {humanize_seconds(age)} without any heartbeat "
                f"(threshold {humanize_seconds(limits['heartbeat'])})."
            )
        return None
    if item.state == "stopping":
        since = item.stop_requested_at or item.latest_heartbeat_at or item.created_at
        age = (now - since).total_seconds()
        if age > limits["stopping"]:
            return (
                f"Stopping for {humanize_seconds(age)} and not stopped yet "
                f"(threshold {humanize_seconds(limits['stopping'])})."
            )
        return None
    if item.state == "queued":
        age = (now - item.created_at).total_seconds()
        if age > limits["queued"]:
            return (
                f"Queued for {humanize_seconds(age)} without being picked up "
                f"(threshold {humanize_seconds(limits['queued'])})."
            )
    return None


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
        since, what = _heartbeat_reference(item)
        age = (now - since).total_seconds()
        if reason:
            status = "stuck"
        elif age > limits["heartbeat"] / 2:
            # Half the threshold without a heartbeat: not stuck yet, but worth a look before it is.
            status = "late"
        else:
            status = "healthy"
        label = (
            f"last heartbeat {humanize_seconds(age)} ago"
            if what == "heartbeat"
            else f"no heartbeat yet ({humanize_seconds(age)} since {what})"
        )
        health.update(status=status, label=label)
    elif item.state == "stopping":
        health.update(
            status="stuck" if reason else "healthy",
            label="stop requested; waiting for the worker to finish",
            threshold_seconds=limits["stopping"],
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
