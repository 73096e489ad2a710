from __future__ import annotations

from django.apps import AppConfig


class WorkqueueConfig(AppConfig):
    name = "workqueue"
    default_auto_field = "django.db.models.BigAutoField"
