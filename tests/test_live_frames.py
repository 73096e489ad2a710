"""The ASGI server as shipped (the demo's configuration, the README's flags) refuses large client frames on the
live sockets: they only send, so a megabyte from a client closes its socket (1009) instead of being buffered."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from asgiref.sync import sync_to_async
from live_support import reset_local_state, session_cookie
from pages_support import make_user

from dashboard.live import feed
from dashboard.management.commands.demo import WS_MAX_SIZE, server_config
from workqueue.emulator.launch import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shipped_server(upstream: Any) -> Iterator[str]:
    import uvicorn

    reset_local_state()
    port = free_port()
    server = uvicorn.Server(server_config(port))
    thread = threading.Thread(target=server.run, name="shipped-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    runtime = feed.current_runtime()
    if runtime is not None and runtime.loop.is_running():
        asyncio.run_coroutine_threadsafe(feed.shutdown(), runtime.loop).result(timeout=10)
    server.should_exit = True
    thread.join(timeout=10)
    reset_local_state()


async def test_a_large_client_frame_closes_the_socket(shipped_server):
    cookie = (await session_cookie(await sync_to_async(make_user)("viewer"))).decode()
    headers = {"Cookie": cookie}
    url = f"ws://{shipped_server}/ws/live/"
    async with websockets.connect(
        url, origin=f"http://{shipped_server}", additional_headers=headers
    ) as small:
        await small.send("x" * 1024)  # ignored, and the socket stays open
        await asyncio.sleep(0.3)
        assert small.close_code is None
    async with websockets.connect(url, origin=f"http://{shipped_server}", additional_headers=headers) as big:
        await big.send("x" * (WS_MAX_SIZE * 16))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(_drain(big), timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    from hold_support import FIGURES

    FIGURES.measured(
        "socket frame size",
        f"1 KiB ignored, {WS_MAX_SIZE * 16 // 1024} KiB closed the socket (1009, limit 64 KiB)",
    )


async def _drain(socket: Any) -> None:
    while True:
        await socket.recv()
