"""Minting, finding and revoking personal access tokens.

A token looks like ``wqd_pat_<43 url-safe characters>`` (256 random bits). The plaintext exists only in the
response that shows it once; the database keeps its SHA-256 hash and a display prefix.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any, Final

from django.utils import timezone

from dashboard.gateway.models import PersonalAccessToken

TOKEN_PREFIX: Final = "wqd_pat_"
# How long a token may live; the page offers exactly these, so nobody mints a token that never expires.
EXPIRY_CHOICES: Final = (
    (7, "7 days"),
    (30, "30 days"),
    (90, "90 days"),
    (365, "1 year"),
)
# Writing last_used_at on every call would turn each read into a write; once a minute is precise enough.
LAST_USED_RESOLUTION: Final = timedelta(seconds=60)
_MAX_TOKEN_LENGTH: Final = 200


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def mint(user: Any, name: str, expires_in_days: int) -> tuple[PersonalAccessToken, str]:
    """A new token for ``user`` and its plaintext, which is never stored and cannot be shown again."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = PersonalAccessToken.objects.create(
        user=user,
        name=name,
        prefix=secret[: len(TOKEN_PREFIX) + 6],
        secret_hash=hash_secret(secret),
        expires_at=timezone.now() + timedelta(days=expires_in_days),
    )
    return token, secret


def revoke(token: PersonalAccessToken, by: Any) -> bool:
    """Revokes ``token``; False if it was already revoked (the first revocation is the one on record)."""
    updated = PersonalAccessToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=by
    )
    token.refresh_from_db()
    return bool(updated)


def credential_from_headers(headers: Any) -> str | None:
    """The token a request carries as ``Authorization: Bearer`` or ``x-api-key`` (the SDK sends either)."""
    authorization = headers.get("Authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return str(value.strip())
    api_key = headers.get("X-Api-Key", "").strip()
    return str(api_key) if api_key else None


async def authenticate(secret: str | None) -> PersonalAccessToken | None:
    """The active token for ``secret`` with its user loaded, or None (unknown, revoked, expired, inactive user)."""
    if not secret or not secret.startswith(TOKEN_PREFIX) or len(secret) > _MAX_TOKEN_LENGTH:
        return None
    token = (
        await PersonalAccessToken.objects.select_related("user")
        .filter(secret_hash=hash_secret(secret))
        .afirst()
    )
    now = timezone.now()
    if token is None or not token.is_active(now) or not token.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        await PersonalAccessToken.objects.filter(pk=token.pk).aupdate(last_used_at=now)
        token.last_used_at = now
    return token
