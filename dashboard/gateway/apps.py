from __future__ import annotations

from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "dashboard.gateway"
    label = "gateway"
    verbose_name = "Gateway for scripts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from dashboard.gateway import signals

        signals.connect()
