"""Login throttling: django-axes counts failed logins per username and per address in the database (so every
instance sees the same count) and refuses further attempts for a while; each lockout is an audit entry.

``LoginThrottleBackend`` is django-axes' backend, except that code authenticating without a request (the
management commands, Django's test client) is not throttled, since there is nobody to answer 429 to: it goes on to
the model backend as before. Every login form passes its request.
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.signals import user_locked_out
from django.dispatch import receiver
from django.http import HttpRequest


class LoginThrottleBackend(AxesStandaloneBackend):
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        super().authenticate(request, username=username, password=password, **kwargs)
        return None


@receiver(user_locked_out, dispatch_uid="dashboard-login-lockout-audit")
def audit_lockout(
    sender: Any, request: HttpRequest | None, username: str | None, ip_address: str | None, **_: Any
) -> None:
    from django.conf import settings
    from django.utils import timezone

    from dashboard import audit
    from dashboard.models import AuditEntry

    # Attempts while locked out are refused too: one entry per lockout, not one per attempt.
    name = (username or "")[:150]
    since = timezone.now() - settings.AXES_COOLOFF_TIME
    if AuditEntry.objects.filter(action="login_locked_out", username=name, created_at__gte=since).exists():
        return
    audit.record(
        user=None,
        username=name,
        action="login_locked_out",
        outcome="denied",
        sent={"address": ip_address or "", "path": request.path if request is not None else ""},
        error="too many failed logins",
        via="page",
    )
