"""The work index's tables. Rows are written by ``dashboard.index.sync`` (and ``record_answer`` after an action);
everything else reads them through ``dashboard.index.queries``.

- ``IndexedWork``: one work item as the upstream last gave it, with when that was (``confirmed_at``).
- ``IndexedEnvironment``: how far the index of one environment has got (the fill walk's cursor, the head, the
  budget's rate-limit pause).
- ``WorkEvent``: a state change the sync observed: the item's timeline.
- ``IndexSample``: per environment and minute, the stuck count, items stopped, time to acknowledge (p50/p95).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q


class WorkState(models.TextChoices):
    QUEUED = "queued"
    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"
    STOPPED = "stopped"


LIVE = ~Q(state=WorkState.STOPPED)


class IndexedWork(models.Model):
    """One work item of one environment. The timestamps are the upstream's, as it gave them."""

    environment_id = models.CharField(max_length=120)
    work_id = models.CharField(max_length=120)
    state = models.CharField(max_length=10, choices=WorkState.choices)
    data_type = models.CharField(max_length=20, default="session")
    # ``data.id``: a session id for session work (a health check's id otherwise).
    session_id = models.CharField(max_length=120, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Lower-cased ``key=value`` lines of the metadata, for free-text search on every database.
    search_text = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    latest_heartbeat_at = models.DateTimeField(null=True, blank=True)
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # The worker holding the item, when the upstream says (the Work API does not today).
    worker_id = models.CharField(max_length=512, blank=True, default="")
    # When the stuck clock of the row's state runs from (``dashboard.stuck.reference_time``); None when stopped.
    stuck_since = models.DateTimeField(null=True, blank=True)
    # When the upstream last confirmed this row (a list page or a retrieve that returned it).
    confirmed_at = models.DateTimeField()
    first_seen_at = models.DateTimeField()
    # The list cursor of the page the item was last read on, so a page can refresh many items in one request.
    page_cursor = models.TextField(blank=True, default="")

    class Meta:
        app_label = "dashboard"
        constraints = [
            models.UniqueConstraint(fields=("environment_id", "work_id"), name="index_work_once"),
        ]
        indexes = [
            # Paging an environment newest first (keyset on created_at, id) and every environment at once.
            models.Index(fields=["environment_id", "-created_at", "-id"], name="index_work_env_newest"),
            models.Index(fields=["-created_at", "-id"], name="index_work_newest"),
            # Counts per state; the state filter.
            models.Index(fields=["environment_id", "state"], name="index_work_env_state"),
            # The stuck query and the refresh order only ever look at live rows: few, however long the history.
            models.Index(fields=["state", "stuck_since"], name="index_work_live_stuck", condition=LIVE),
            # The stuck set and the live rows of an environment, newest first: without it, a query that asks for
            # few live rows in that order walks the whole history backwards through index_work_env_newest.
            models.Index(
                fields=["environment_id", "-created_at", "-id"],
                name="index_work_live_env_newest",
                condition=LIVE,
            ),
            models.Index(
                fields=["environment_id", "confirmed_at"], name="index_work_live_confirmed", condition=LIVE
            ),
            models.Index(fields=["session_id"], name="index_work_session"),
            models.Index(fields=["work_id"], name="index_work_id"),
            # Retention removes stopped rows by age; the history counts the items stopped in a minute.
            models.Index(fields=["state", "stopped_at"], name="index_work_stopped_at"),
            # The history's time to acknowledge reads the items acknowledged in one minute.
            models.Index(fields=["environment_id", "acknowledged_at"], name="index_work_env_acked"),
        ]

    def __str__(self) -> str:
        return f"{self.work_id} ({self.state})"

    @property
    def id_for_display(self) -> str:
        return self.work_id

    @property
    def is_live(self) -> bool:
        return self.state != WorkState.STOPPED


class IndexedEnvironment(models.Model):
    """The sync state of one environment's index."""

    environment_id = models.CharField(max_length=120, unique=True)
    name = models.CharField(max_length=512, blank=True, default="")
    # The fill walks the whole list once, oldest pages last; ``walk_cursor`` is the next page to read ("" = the
    # first), so a restart carries on where the walk stopped.
    walk_cursor = models.TextField(blank=True, default="")
    walk_started_at = models.DateTimeField(null=True, blank=True)
    walk_pages = models.PositiveIntegerField(default=0)
    filled = models.BooleanField(default=False)
    filled_at = models.DateTimeField(null=True, blank=True)
    # The newest item known (the head read stops when it reaches known items) and when the head was last read.
    head_work_id = models.CharField(max_length=120, blank=True, default="")
    head_read_at = models.DateTimeField(null=True, blank=True)
    # The oldest confirmed_at among live rows, as of the last sync round (queries.freshness reads it live too).
    oldest_confirmed_at = models.DateTimeField(null=True, blank=True)
    # A 429 or 529 pauses the sync until then (the upstream's retry-after, else a back-off); shown on pages.
    rate_limited_until = models.DateTimeField(null=True, blank=True)
    rate_limited_status = models.PositiveSmallIntegerField(null=True, blank=True)
    rate_limited_at = models.DateTimeField(null=True, blank=True)
    rate_limited_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    last_sync_at = models.DateTimeField(null=True, blank=True)
    # Upstream requests the sync made in the last round and the minute before it (for display and the bench).
    requests_last_minute = models.PositiveIntegerField(default=0)
    # The environment's stopped rows, kept by every write of the index (``sync``: rows added or stopped, forgotten
    # or pruned), so that its stopped count is read, not counted over the whole history on every page.
    stopped_rows = models.BigIntegerField(default=0)

    class Meta:
        app_label = "dashboard"
        ordering = ("environment_id",)

    def __str__(self) -> str:
        return f"index of {self.environment_id} ({'filled' if self.filled else 'filling'})"

    @classmethod
    def remember_names(cls, directory: list[dict[str, str]]) -> int:
        """Store each environment's name as the upstream's list of environments gives it (``{"id", "name"}``
        entries), for pages that name an environment without asking the upstream; rows the sync has not created
        yet get theirs at the next read of the list. Returns how many names changed."""
        names = {entry["id"]: str(entry.get("name") or "")[:512] for entry in directory if entry.get("id")}
        stored = cls.objects.filter(environment_id__in=list(names)).values_list("environment_id", "name")
        changed = 0
        for environment_id, name in stored:
            if names[environment_id] != name:
                changed += cls.objects.filter(environment_id=environment_id).update(
                    name=names[environment_id]
                )
        return changed


class WorkEvent(models.Model):
    """One change in a work item's life that the sync observed, at the upstream's time when it gives one."""

    class Kind(models.TextChoices):
        QUEUED = "queued", "delivered to the queue"
        ACKNOWLEDGED = "acknowledged", "acknowledged by a worker"
        FIRST_HEARTBEAT = "first_heartbeat", "first heartbeat"
        REQUEUED = "requeued", "queued again (lease expired or reclaimed)"
        STOP_REQUESTED = "stop_requested", "stop requested"
        STOPPED = "stopped", "stopped"

    environment_id = models.CharField(max_length=120)
    work_id = models.CharField(max_length=120)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    at = models.DateTimeField()
    observed_at = models.DateTimeField()

    class Meta:
        app_label = "dashboard"
        ordering = ("at", "id")
        indexes = [
            models.Index(fields=["environment_id", "work_id", "at"], name="index_event_item"),
            models.Index(fields=["observed_at"], name="index_event_observed"),
        ]

    def __str__(self) -> str:
        return f"{self.work_id} {self.kind} at {self.at:%Y-%m-%d %H:%M:%S}"


class IndexSample(models.Model):
    """One minute of an environment as the index saw it; kept ``HISTORY_RETENTION_HOURS``. Written by
    ``dashboard.index.history`` (one row per environment and minute), read back in buckets for the charts."""

    environment_id = models.CharField(max_length=120)
    # The end of the minute the sample covers (a whole minute, UTC); the stuck and live counts are as of then.
    at = models.DateTimeField()
    # ``at`` as whole minutes since the epoch: the key that makes a minute unique per environment, and the integer
    # the charts group into buckets in the database (SQLite has no portable epoch extraction from a datetime).
    minute = models.PositiveIntegerField()
    stuck = models.PositiveIntegerField()
    live = models.PositiveIntegerField()
    stopped_per_minute = models.FloatField()
    # Time from creation to acknowledgement of the items acknowledged in the minute before ``at`` (None if none).
    ack_p50_seconds = models.FloatField(null=True, blank=True)
    ack_p95_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        app_label = "dashboard"
        ordering = ("environment_id", "at")
        constraints = [
            # One sample per environment and minute, however often the feed runs and whoever holds its lease.
            models.UniqueConstraint(fields=("environment_id", "minute"), name="index_sample_once"),
        ]
        indexes = [
            models.Index(fields=["environment_id", "at"], name="index_sample_env_at"),
            models.Index(fields=["at"], name="index_sample_at"),
        ]

    def __str__(self) -> str:
        return f"{self.environment_id} at {self.at:%H:%M}: {self.stuck} stuck"

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "stuck": self.stuck,
            "live": self.live,
            "stopped_per_minute": self.stopped_per_minute,
            "ack_p50_seconds": self.ack_p50_seconds,
            "ack_p95_seconds": self.ack_p95_seconds,
        }
