"""Encryption of environment keys at rest (Fernet), with the encryption key derived from settings.

The key is ``ENVIRONMENT_KEY_ENCRYPTION_KEY`` when a deployment sets it, otherwise ``SECRET_KEY``. Values written
under any of those (and under ``SECRET_KEY_FALLBACKS``) stay readable, so rotating one of them keeps stored
environment keys usable until an admin saves them again.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

__all__ = ["KeyUnreadable", "decrypt", "encrypt"]

_SALT = b"dashboard.environment-keys"


class KeyUnreadable(Exception):
    """A stored value that none of the configured keys decrypts (the encryption key changed)."""


def _derive(secret: str) -> Fernet:
    # HKDF rather than the raw secret: SECRET_KEY has no fixed format, Fernet needs exactly 32 random-looking bytes.
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=b"fernet").derive(
        secret.encode("utf-8")
    )
    return Fernet(base64.urlsafe_b64encode(raw))


@functools.cache
def _fernet(secrets: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_derive(secret) for secret in secrets])


def _current() -> MultiFernet:
    secrets: list[str] = []
    dedicated = getattr(settings, "ENVIRONMENT_KEY_ENCRYPTION_KEY", "")
    if dedicated:
        secrets.append(dedicated)
    secrets.append(settings.SECRET_KEY)
    secrets.extend(getattr(settings, "SECRET_KEY_FALLBACKS", []))
    return _fernet(tuple(dict.fromkeys(secrets)))


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise KeyUnreadable(
            "A stored environment key cannot be decrypted: the encryption key changed. Enter the key again."
        ) from None
