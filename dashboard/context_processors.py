"""Template context every page's layout needs: the deployment label, the signed-in person's role, time display and
colours.

Values that need the database are lazy, so pages that never show them (and the login page) pay nothing.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject


def _role_label(request: HttpRequest) -> str:
    from dashboard.permissions import role_of

    role = role_of(getattr(request, "user", None))
    return role.name.lower() if role is not None else "no role"


def _can_configure(request: HttpRequest) -> bool:
    from dashboard.permissions import can

    return can(getattr(request, "user", None), "configure")


def _prefers_local_time(request: HttpRequest) -> bool:
    from dashboard.models import UserPreference

    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return False
    return UserPreference.objects.filter(user_id=user.pk, local_time=True).exists()


def _theme(request: HttpRequest) -> str:
    from dashboard.models import UserPreference

    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return "auto"
    theme = UserPreference.objects.filter(user_id=user.pk).values_list("theme", flat=True).first()
    return theme or "auto"


def layout(request: HttpRequest) -> dict[str, Any]:
    label = str(settings.DASHBOARD_LABEL)
    return {
        "dashboard_label": label,
        # A production deployment wears a red label so nobody mistakes it for staging.
        "dashboard_label_is_production": label.strip().lower().startswith("prod"),
        "user_role_label": SimpleLazyObject(lambda: _role_label(request)),
        "user_can_configure": SimpleLazyObject(lambda: _can_configure(request)),
        "prefers_local_time": SimpleLazyObject(lambda: _prefers_local_time(request)),
        "theme": SimpleLazyObject(lambda: _theme(request)),
        "theme_choices": (("auto", "System colours"), ("light", "Light"), ("dark", "Dark")),
    }
