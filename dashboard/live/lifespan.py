"""The ASGI lifespan handler: starts the live runtime with the server and stops it (giving its leases up) at exit.

Under uvicorn (``--lifespan auto``, the default, or ``on``) the supervisor runs from start-up, so environments
shown on wall displays are polled even before any screen connects. Servers without lifespan support (daphne)
still work: the first websocket starts the runtime, and a dead process's leases expire within two intervals.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def lifespan_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    from dashboard.live import feed

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                feed.runtime().ensure_started()
            except Exception:
                # Pages still work without the live layer; the first websocket will try to start it again.
                logger.exception("The live feed could not start")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await feed.shutdown()
            finally:
                await send({"type": "lifespan.shutdown.complete"})
            return
