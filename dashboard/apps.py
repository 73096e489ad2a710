from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The lockout's audit entry is a signal receiver.
        from dashboard import login_throttle  # noqa: F401
