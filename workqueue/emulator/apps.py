from __future__ import annotations

from django.apps import AppConfig


class EmulatorConfig(AppConfig):
    name = "workqueue.emulator"
    label = "emulator"
    default_auto_field = "django.db.models.BigAutoField"
