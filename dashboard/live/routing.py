"""Websocket routes of the live layer (added to ``dashboard.routing``)."""

from __future__ import annotations

from typing import Any

from django.urls import path

from dashboard.live.consumers import LiveConsumer

websocket_urlpatterns: list[Any] = [
    path("ws/live/", LiveConsumer.as_asgi()),
    path("ws/live/<str:env_id>/", LiveConsumer.as_asgi()),
    path("ws/live/<str:env_id>/<str:work_id>/", LiveConsumer.as_asgi()),
    path("ws/display/<str:token>/", LiveConsumer.as_asgi()),
]
