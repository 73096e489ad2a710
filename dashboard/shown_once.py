"""Secrets shown once after a redirect: a new token's or display link's plaintext, kept for the one page that shows it.

Creating a secret answers its POST with a redirect (post/redirect/get), so a reload of the page that follows cannot
mint a second one. The plaintext waits in the session, encrypted (the session table is not a place for secrets in
clear), and is taken out by the first page that shows it: a reload of that page finds nothing more to show.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest

from dashboard import crypto

__all__ = ["keep", "take"]

_SESSION_KEY = "shown_once"


def keep(request: HttpRequest, kind: str, payload: dict[str, Any]) -> None:
    """Keep ``payload`` (holding a secret) for the next page of ``kind`` that shows it."""
    waiting = dict(request.session.get(_SESSION_KEY, {}))
    waiting[kind] = crypto.encrypt(json.dumps(payload))
    request.session[_SESSION_KEY] = waiting


def take(request: HttpRequest, kind: str) -> dict[str, Any] | None:
    """The payload kept for ``kind``, removed from the session; None when it was shown already."""
    waiting = dict(request.session.get(_SESSION_KEY, {}))
    sealed = waiting.pop(kind, None)
    if sealed is None:
        return None
    request.session[_SESSION_KEY] = waiting
    try:
        payload = json.loads(crypto.decrypt(sealed))
    except crypto.KeyUnreadable:
        return None
    return payload if isinstance(payload, dict) else None
