"""The live layer's tables: queue-depth history samples and wall-display links."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import models

_DISPLAY_SALT = "dashboard.live.display-link"


class QueueSample(models.Model):
    """One reading of an environment's queue by the feed; kept ``HISTORY_RETENTION_HOURS`` for the charts."""

    environment_id = models.CharField(max_length=120)
    at = models.DateTimeField()
    depth = models.PositiveIntegerField()
    pending = models.PositiveIntegerField()
    workers_polling = models.PositiveIntegerField(null=True, blank=True)
    oldest_queued_age_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["environment_id", "at"], name="live_sample_env_at"),
            models.Index(fields=["at"], name="live_sample_at"),
        ]
        ordering = ("environment_id", "at")

    def __str__(self) -> str:
        return f"{self.environment_id} at {self.at:%Y-%m-%d %H:%M:%S}: depth {self.depth}, pending {self.pending}"


class DisplayLinkQuerySet(models.QuerySet["DisplayLink"]):
    def active(self) -> DisplayLinkQuerySet:
        return self.filter(revoked_at__isnull=True)


DisplayLinkManager = models.Manager.from_queryset(DisplayLinkQuerySet)


class DisplayLink(models.Model):
    """A read-only link for a wall display, opened without a login; an admin creates and revokes it.

    The link's token is signed (so a forged one is refused without a database lookup) and carries a random
    nonce stored here only as a SHA-256 hash: the token is shown once, when the link is created.
    """

    name = models.CharField(max_length=100)
    nonce_hash = models.CharField(max_length=64, unique=True, editable=False)
    # Environment ids to show; empty means every environment.
    environments = models.JSONField(default=list, blank=True)
    time_zone = models.CharField(max_length=64, default="UTC")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_opened_at = models.DateTimeField(null=True, blank=True)
    # Openings are audited grouped: one entry per link per hour, counting the openings since the previous entry.
    openings_unaudited = models.PositiveIntegerField(default=0)
    last_audited_at = models.DateTimeField(null=True, blank=True)

    objects: Any = DisplayLinkManager()

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return self.name

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def shows_all(self) -> bool:
        return not self.environments

    def shows(self, environment_id: str) -> bool:
        return self.shows_all or environment_id in self.environments

    @staticmethod
    def _hash(nonce: str) -> str:
        return hashlib.sha256(nonce.encode()).hexdigest()

    def issue_token(self) -> str:
        """Give the link a fresh nonce and return its token; call before the first save."""
        nonce = secrets.token_urlsafe(24)
        self.nonce_hash = self._hash(nonce)
        return signing.dumps({"n": nonce}, salt=_DISPLAY_SALT, compress=False)

    @classmethod
    def nonce_of(cls, token: str) -> str | None:
        """The nonce inside a correctly signed token, or None for a forged or garbled one."""
        try:
            payload = signing.loads(token, salt=_DISPLAY_SALT)
        except signing.BadSignature:
            return None
        nonce = payload.get("n") if isinstance(payload, dict) else None
        return nonce if isinstance(nonce, str) and 0 < len(nonce) <= 100 else None

    @classmethod
    def for_token(cls, token: str) -> DisplayLink | None:
        """The link a token opens, revoked or not; None when the token is forged or no link has it."""
        nonce = cls.nonce_of(token[:300])
        if nonce is None:
            return None
        digest = cls._hash(nonce)
        link: DisplayLink | None = cls.objects.filter(nonce_hash=digest).first()
        if link is None or not hmac.compare_digest(link.nonce_hash, digest):
            return None
        return link
