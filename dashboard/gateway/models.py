"""Personal access tokens and the per-token rate-limit buckets.

A token's secret is shown once, at creation; only its SHA-256 hash is stored, with a short prefix kept in clear so
people can tell their tokens apart on the token page. What does not live here: minting and checking tokens
(``dashboard.gateway.tokens``), the rate-limit arithmetic (``dashboard.gateway.ratelimit``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class TokenQuerySet(models.QuerySet["PersonalAccessToken"]):
    def active(self) -> TokenQuerySet:
        return self.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())

    def active_for(self, user: Any) -> TokenQuerySet:
        return self.active().filter(user_id=user.pk)


class PersonalAccessToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_tokens")
    name = models.CharField(max_length=100)
    # The first characters of the token, shown on the token page so a person can match a token to a script.
    prefix = models.CharField(max_length=20)
    # Hex SHA-256 of the whole token. The secret is random (256 bits), so a fast unsalted hash is enough: there is
    # nothing to brute-force, and a lookup by hash keeps authentication one indexed query.
    secret_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = TokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at <= (now or timezone.now())

    def is_active(self, now: datetime | None = None) -> bool:
        return self.revoked_at is None and not self.is_expired(now)

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.is_expired():
            return "expired"
        return "active"


class RateBucket(models.Model):
    """One token bucket per person: how many calls all their access tokens together may still make at once, as of
    ``updated_at`` (a person with many tokens gets no more calls than with one).

    Times are Unix seconds (floats) so the refill can be computed inside a single SQL UPDATE on SQLite and
    PostgreSQL alike; see ``dashboard.gateway.ratelimit``.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    tokens = models.FloatField()
    updated_at = models.FloatField()
