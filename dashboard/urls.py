"""URL routes of the dashboard (the emulator has its own: ``workqueue.emulator.urls``)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from dashboard import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("healthz", views.healthz, name="healthz"),
]
