"""The dashboard's own data: the audit log, environment keys, bulk operations and per-user preferences.

What lives here is only what the dashboard itself must remember. The work index (what the dashboard knows of the
upstream's work items) has its tables in ``dashboard.index.models``, imported at the end.

- ``AuditEntry``: the append-only, hash-chained record of every action (see ``dashboard.audit`` for how entries
  are added; this module only refuses every other way of writing them).
- ``EnvironmentKey``: an environment key entered by an admin, stored encrypted (``dashboard.crypto``).
- ``BulkOperation`` / ``BulkItem``: a bulk stop in progress and its result item by item.
- ``UserPreference``: per-user display choices (local time instead of UTC).
- ``SignInIdentity``: which account the identity provider's subject (``sub``) signs in as (``dashboard.oidc``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any, ClassVar

from django.conf import settings
from django.db import models

# -- Audit log --------------------------------------------------------------------------------------------------


class AuditLogIsAppendOnly(Exception):
    """Raised on any attempt to change or delete an audit entry through the ORM."""


class Outcome(models.TextChoices):
    """How an audited action ended."""

    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    DENIED = "denied", "denied"


class Action(models.TextChoices):
    """Each action an audit entry can record, in words for the audit log (the code stays on hover and in exports).
    An entry whose action is missing here (an older release's) shows as its code. The role names of
    dashboard.permissions appear in "denied" entries."""

    PATCH_METADATA = "patch_metadata", "Metadata changed"
    STOP = "stop", "Stopped"
    FORCE_STOP = "force_stop", "Force-stopped"
    BULK_STOP = "bulk_stop", "Started a bulk stop"
    BULK_FORCE_STOP = "bulk_force_stop", "Started a bulk force-stop"
    BULK = "bulk", "Bulk action"
    CONFIGURE_KEY_SET = "configure_key_set", "Set an environment key"
    CONFIGURE_KEY_REMOVE = "configure_key_remove", "Removed an environment key"
    CONFIGURE = "configure", "Configuration"
    DISPLAY_LINK_CREATED = "display_link_created", "Created a wall display link"
    DISPLAY_LINK_REVOKED = "display_link_revoked", "Revoked a wall display link"
    DISPLAY_OPENED = "display_opened", "Opened a wall display"
    TOKEN_CREATE = "token_create", "Created a token"
    TOKEN_REVOKE = "token_revoke", "Revoked a token"
    LOGIN_LOCKED_OUT = "login_locked_out", "Sign-ins locked out"
    ROLE_FROM_PROVIDER = "role_from_provider", "Role set by the identity provider"
    VIEW = "view", "Viewed"


def action_words(code: str) -> str:
    """An action in words: its label, or its code when it is not one of ``Action``."""
    return Action(code).label if code in Action.values else code


# The fields that go into an entry's hash, in the user's words. ``user`` (the foreign key) is left out on purpose:
# deleting a user account nulls it, and that must not break the chain; ``username`` keeps who it was.
def audit_chain_key() -> bytes:
    """The key of the audit chain's HMAC: ``AUDIT_CHAIN_KEY``, else one derived from ``SECRET_KEY``. Whoever can
    write the database but does not hold it cannot make an entry whose hash checks."""
    configured = str(settings.AUDIT_CHAIN_KEY or "")
    if configured:
        return configured.encode("utf-8")
    return hmac.new(
        str(settings.SECRET_KEY).encode("utf-8"), b"dashboard.audit-chain", hashlib.sha256
    ).digest()


def chain_digest(fields: dict[str, Any]) -> str:
    """HMAC-SHA256 of an entry's hashed fields (its previous entry's hash among them), as canonical JSON."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(audit_chain_key(), canonical.encode("utf-8"), hashlib.sha256).hexdigest()


HASHED_FIELDS = (
    "sequence",
    "created_at",
    "username",
    "environment_id",
    "work_id",
    "action",
    "reason",
    "sent",
    "outcome",
    "upstream_status",
    "request_id",
    "error",
    "via",
    "token_name",
)


class AuditEntryQuerySet(models.QuerySet["AuditEntry"]):
    """Reads only: every bulk write path of a queryset is refused."""

    def update(self, **kwargs: Any) -> int:
        raise AuditLogIsAppendOnly("Audit entries cannot be changed.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditLogIsAppendOnly("Audit entries cannot be deleted.")

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> int:
        raise AuditLogIsAppendOnly("Audit entries cannot be changed.")

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[AuditEntry]:
        raise AuditLogIsAppendOnly("Audit entries are added one at a time with dashboard.audit.record().")

    def update_or_create(self, *args: Any, **kwargs: Any) -> tuple[AuditEntry, bool]:
        raise AuditLogIsAppendOnly("Audit entries cannot be changed.")


AuditEntryManager = models.Manager.from_queryset(AuditEntryQuerySet)


def _url_or_empty(name: str, *args: str) -> str:
    """The page's address, or "" when an id recorded from elsewhere cannot be part of one (empty, or with a "/")."""
    from django.urls import NoReverseMatch, reverse

    if not all(args):
        return ""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


class AuditEntry(models.Model):
    """One action someone took (or tried to take), as it happened. Never changed after it is written."""

    sequence = models.PositiveBigIntegerField(unique=True, editable=False)
    created_at = models.DateTimeField(editable=False, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True, db_index=True)
    environment_id = models.CharField(max_length=120, blank=True, db_index=True)
    work_id = models.CharField(max_length=120, blank=True, db_index=True)
    action = models.CharField(max_length=40, db_index=True, choices=Action.choices)
    reason = models.TextField(blank=True)
    sent = models.JSONField(null=True, blank=True)
    outcome = models.CharField(max_length=16, db_index=True, choices=Outcome.choices)
    upstream_status = models.PositiveSmallIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    via = models.CharField(max_length=40, blank=True)
    token_name = models.CharField(max_length=100, blank=True)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, unique=True, editable=False)

    objects: ClassVar[AuditEntryManager] = AuditEntryManager()

    class Meta:
        ordering = ("-sequence",)
        verbose_name_plural = "audit entries"
        # Django's default add/change/delete permissions would only invite someone to grant them.
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"#{self.sequence} {self.username or '-'} {self.action} {self.outcome}"

    @property
    def sent_text(self) -> str:
        """What was sent, as compact JSON for display."""
        return "" if self.sent is None else json.dumps(self.sent, sort_keys=True, ensure_ascii=False)

    @property
    def action_words(self) -> str:
        return action_words(self.action)

    @property
    def work_url(self) -> str:
        return _url_or_empty("work_item", self.environment_id, self.work_id) if self.work_id else ""

    @property
    def environment_url(self) -> str:
        return _url_or_empty("environment", self.environment_id)

    @property
    def bulk_url(self) -> str:
        operation = self.bulk_operation_id
        # The operation's own page, which any role may read (items of an operation across environments name
        # their own environment, not the operation's).
        return _url_or_empty("bulk_operation", operation) if operation else ""

    @property
    def bulk_operation_id(self) -> str:
        """The bulk operation this entry belongs to (its start or one of its items), or ""."""
        value = self.sent.get("bulk_operation") if isinstance(self.sent, dict) else None
        try:
            return str(uuid.UUID(str(value))) if value else ""
        except ValueError:
            return ""

    @property
    def already_stopped(self) -> bool:
        return self.upstream_status == 409 and self.action in ("stop", "force_stop")

    def hashed_fields(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in HASHED_FIELDS}
        values["created_at"] = self.created_at.isoformat(timespec="microseconds")
        values["prev_hash"] = self.prev_hash
        return values

    def compute_hash(self) -> str:
        return chain_digest(self.hashed_fields())

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditLogIsAppendOnly("Audit entries cannot be changed.")
        if not getattr(self, "_appending", False):
            raise AuditLogIsAppendOnly("Audit entries are added with dashboard.audit.record().")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AuditLogIsAppendOnly("Audit entries cannot be deleted.")


class AuditChainHead(models.Model):
    """The single row every append locks first, so appends form one chain whatever the database or process."""

    length = models.PositiveBigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="")

    def __str__(self) -> str:
        return f"audit chain of {self.length}"


# -- Environment keys -------------------------------------------------------------------------------------------


def mask_key(key: str) -> str:
    """How a key is shown anywhere: its family prefix and its last four characters."""
    return f"sk-ant-…{key[-4:]}" if len(key) >= 8 else "sk-ant-…"


class EnvironmentKey(models.Model):
    """An environment key entered by an admin. The key itself is only ever stored encrypted."""

    environment_id = models.CharField(max_length=120, unique=True)
    name = models.CharField(max_length=200, blank=True, help_text="What this environment is, for people.")
    encrypted_key = models.TextField()
    last4 = models.CharField(max_length=4)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ("environment_id",)

    def __str__(self) -> str:
        return f"{self.environment_id} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"sk-ant-…{self.last4}"

    def set_key(self, key: str) -> None:
        from dashboard import crypto

        self.encrypted_key = crypto.encrypt(key)
        self.last4 = key[-4:]

    def key(self) -> str:
        from dashboard import crypto

        return crypto.decrypt(self.encrypted_key)


# -- Bulk operations --------------------------------------------------------------------------------------------


class BulkOperation(models.Model):
    """A bulk stop (or force-stop) of many work items, run in the background: in one environment, or (chosen on
    the stuck page, ``environment_id`` blank) across environments, each item naming its own."""

    class Status(models.TextChoices):
        RUNNING = "running", "running"
        FINISHED = "finished", "finished"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    environment_id = models.CharField(max_length=120)
    force = models.BooleanField(default=False)
    reason = models.TextField()
    selection = models.CharField(max_length=20)  # "selected", "stuck" or "stuck_page" (across environments)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    # Touched after every item; a running operation that stops being touched was interrupted and can be resumed.
    heartbeat_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"bulk {'force-stop' if self.force else 'stop'} in {self.environment_id} ({self.status})"

    @property
    def action(self) -> str:
        return "bulk_force_stop" if self.force else "bulk_stop"

    @property
    def across_environments(self) -> bool:
        return not self.environment_id


class BulkItem(models.Model):
    """One work item of a bulk operation and what happened to it."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        STOPPED = "stopped", "stopped"
        STOPPING = "stopping", "stopping"
        ALREADY_STOPPED = "already_stopped", "already stopped"
        FAILED = "failed", "failed"

    operation = models.ForeignKey(BulkOperation, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField()
    # The item's environment when the operation spans several (blank: the operation's own).
    environment_id = models.CharField(max_length=120, blank=True, default="")
    work_id = models.CharField(max_length=120)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    detail = models.TextField(blank=True)
    upstream_status = models.PositiveSmallIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=200, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("position",)
        constraints = [
            models.UniqueConstraint(fields=("operation", "environment_id", "work_id"), name="bulk_item_once")
        ]

    def __str__(self) -> str:
        return f"{self.work_id}: {self.status}"

    @property
    def status_label(self) -> str:
        return self.get_status_display()

    @property
    def environment(self) -> str:
        """The environment the item is in."""
        return self.environment_id or self.operation.environment_id


# -- Preferences ------------------------------------------------------------------------------------------------


class UserPreference(models.Model):
    """Display choices of one person."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference")
    local_time = models.BooleanField(
        default=False, help_text="Show times in the browser's time zone, not UTC."
    )
    theme = models.CharField(
        max_length=8,
        choices=[("auto", "System"), ("light", "Light"), ("dark", "Dark")],
        default="auto",
        help_text="Colours: the system's light or dark setting, or always one of them.",
    )

    def __str__(self) -> str:
        return f"preferences of {self.user_id}"


# -- Sign-in through the identity provider -----------------------------------------------------------------------


class SignInIdentity(models.Model):
    """The account that one subject of one OpenID provider signs in as. Matched by ``sub`` only: an e-mail address
    can be changed, reused or unverified at the provider, a subject cannot."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sign_in_identities"
    )
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="one_account_per_provider_subject")
        ]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


# -- The work index (its tables live beside the code that keeps them) -------------------------------------------

from dashboard.index.models import (  # noqa: E402
    IndexedEnvironment,
    IndexedWork,
    IndexSample,
    WorkEvent,
)

__all__ = [
    "AuditChainHead",
    "AuditEntry",
    "BulkItem",
    "BulkOperation",
    "EnvironmentKey",
    "IndexSample",
    "IndexedEnvironment",
    "IndexedWork",
    "UserPreference",
    "WorkEvent",
]
