"""ASGI entry point: Django for HTTP, Channels for websockets."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from dashboard.live.lifespan import lifespan_app  # noqa: E402
from dashboard.routing import websocket_urlpatterns  # noqa: E402
from dashboard.security import WebsocketOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The whole origin (scheme, host, port) must be this site's: see dashboard.security.
        "websocket": WebsocketOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        # Starts the live feed with the server and stops it (releasing its leases) on shutdown.
        "lifespan": lifespan_app,
    }
)
