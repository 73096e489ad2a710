"""Websocket routes."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import re_path

from dashboard.live.routing import websocket_urlpatterns as live_websocket_urlpatterns


class Unrouted(AsyncWebsocketConsumer):
    """Any other websocket path: refused at the handshake (403). Without it the router raises, and the server
    answers a hostile path (``/ws/live/<id>/../x/``) with a 500 and a traceback in its log."""

    async def connect(self) -> None:
        await self.close()


websocket_urlpatterns: list[Any] = [*live_websocket_urlpatterns, re_path(r"", Unrouted.as_asgi())]
