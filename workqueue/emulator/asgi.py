"""The ASGI application of the emulator's own process: only the emulator's routes and its one middleware."""

from __future__ import annotations

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler


def build_application() -> ASGIHandler:
    """Point this process at the emulator's URLs and middleware, then build Django's ASGI handler.

    Called by ``manage.py emulator`` before serving; the dashboard's own process never calls it.
    """
    settings.ROOT_URLCONF = "workqueue.emulator.urls"
    settings.MIDDLEWARE = ["workqueue.emulator.middleware.EmulatorMiddleware"]
    return get_asgi_application()
