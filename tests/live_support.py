"""Helpers for the live layer's tests (tests/test_live_*.py): a fresh live runtime on the test's event loop with
short intervals, websocket communicators through the real ASGI application (Origin check and session auth
included), and waiting on a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from dashboard.live import coordination, feed

INTERVAL = 0.5
ORIGIN = b"http://127.0.0.1"


def reset_local_state() -> None:
    """Forget leases, presence and cached snapshots a previous test left in this process."""
    coordination._local_locks.clear()
    coordination._local_presence.clear()
    coordination._local_cache.clear()


@pytest.fixture
async def live_runtime(upstream: Any, settings: Any) -> AsyncIterator[feed.LiveRuntime]:
    """The process's live runtime on this test's loop, polling the test emulator every half second."""
    settings.FEED_INTERVAL_SECONDS = INTERVAL
    # Feeds six times faster than in production, for every environment of the test: a budget to match.
    settings.UPSTREAM_REQUESTS_PER_MINUTE = 100_000
    settings.FEED_DIRECTORY_INTERVAL_SECONDS = 1.0
    settings.FEED_TIMEOUT_SECONDS = 2.0
    reset_local_state()
    runtime = feed.runtime()
    runtime.ensure_started()
    yield runtime
    await feed.shutdown()
    reset_local_state()


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.02) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)


def _session_cookie_sync(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def session_cookie(user: Any) -> bytes:
    return await sync_to_async(_session_cookie_sync)(user)


def communicator(
    path: str, *, cookie: bytes | None = None, origin: bytes | None = ORIGIN
) -> WebsocketCommunicator:
    """A websocket client of the real ASGI application (Origin validation and session auth included)."""
    from dashboard.asgi import application

    headers = [(b"host", b"127.0.0.1")]
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, path, headers=headers)


async def receive_matching(comm: WebsocketCommunicator, pattern: str, timeout: float = 5.0) -> str:
    """The first frame (within ``timeout``) whose text matches ``pattern``; earlier frames are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no frame matching {pattern!r} within {timeout} s")
        try:
            text = await comm.receive_from(timeout=remaining)
        except TimeoutError:
            raise AssertionError(f"no frame matching {pattern!r} within {timeout} s") from None
        if re.search(pattern, text, re.S):
            return text


def figure(html: str, element_id: str, name: str) -> str:
    """The text of the ``data-figure=name`` value inside the element ``element_id`` of a frame or page."""
    start = html.find(f'id="{element_id}"')
    assert start >= 0, f"no element {element_id}"
    match = re.search(rf'data-figure="{name}"[^>]*>(.*?)</dd>', html[start:], re.S)
    assert match, f"no figure {name} in {element_id}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()
