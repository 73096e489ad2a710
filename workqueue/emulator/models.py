"""The emulator's stored state: environments, work items, per-delivery sessions tokens, worker polls, the virtual
clock. Lifecycle rules live in ``engine.py``; these are plain tables (in the ``emulator`` database alias)."""

from __future__ import annotations

from django.db import models

WORK_STATES = ("queued", "starting", "active", "stopping", "stopped")


class Environment(models.Model):
    id = models.CharField(primary_key=True, max_length=120)
    name = models.CharField(max_length=512)
    description = models.TextField(null=True, blank=True)
    config = models.JSONField(default=dict)
    metadata = models.JSONField(default=dict)
    scope = models.CharField(max_length=20, null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    archived_at = models.DateTimeField(null=True, blank=True)
    # Console-minted in reality; the emulator mints one per environment and shows it on its admin surface.
    environment_key = models.CharField(max_length=200, unique=True)
    # The workspace the environment belongs to ("" for the API key's own, ``EMULATOR_WORKSPACE_ID``).
    workspace_id = models.CharField(max_length=120, default="", blank=True)

    class Meta:
        indexes = [models.Index(fields=["-created_at", "-id"], name="emu_env_newest")]

    def __str__(self) -> str:
        return f"{self.id} ({self.name})"


class WorkItem(models.Model):
    id = models.CharField(primary_key=True, max_length=120)
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="work_items")
    state = models.CharField(max_length=10, default="queued")
    data_type = models.CharField(max_length=20, default="session")
    data_id = models.CharField(max_length=120)
    metadata = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    latest_heartbeat_at = models.DateTimeField(null=True, blank=True)
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # Queue bookkeeping: a queued item with no delivered_at counts in depth, with one in pending.
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_count = models.PositiveIntegerField(default=0)
    delivered_to_worker_id = models.CharField(max_length=512, null=True, blank=True)
    # Lease: the exact heartbeat string last handed out (compared byte for byte), its TTL and expiry.
    stored_heartbeat = models.CharField(max_length=40, null=True, blank=True)
    ttl_seconds = models.PositiveIntegerField()
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["environment", "-created_at", "-id"], name="emu_work_newest"),
            # A poll takes the oldest never-delivered item: this order needs no sort of the whole backlog.
            models.Index(
                fields=["environment", "state", "delivered_at", "created_at", "id"],
                name="emu_work_queue_order",
            ),
            # Lease expiry runs before every operation on an environment: only the expired rows are read.
            models.Index(fields=["environment", "lease_expires_at"], name="emu_work_expiry"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.state})"


class SessionsToken(models.Model):
    """One per poll delivery. Only the newest one of an item is ``current``; older ones are known but refused."""

    token = models.CharField(primary_key=True, max_length=200)
    work_item = models.ForeignKey(WorkItem, on_delete=models.CASCADE, related_name="sessions_tokens")
    current = models.BooleanField(default=True)
    created_at = models.DateTimeField()


class WorkerPoll(models.Model):
    """The last time each worker id polled an environment (for ``workers_polling``)."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="worker_polls")
    worker_id = models.CharField(max_length=512)
    polled_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "worker_id"], name="emu_worker_poll_unique")
        ]


class Clock(models.Model):
    """A single row: how far the virtual clock runs ahead of the real one (moved by ``POST /_emulator/clock``)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    offset_seconds = models.FloatField(default=0.0)
