"""The dashboard's door to the Work API: a client built from settings, environment keys, and failure banners.

Views get the process's shared client here (``async with upstream.client() as c:``), the environment key an environment's work list
needs (decrypted from the admin-entered store, else from the deployment's ``ENVIRONMENT_KEYS``), and, when a call
fails, the banner to show: what failed, when, and the upstream request-id. Never a stack trace, never a credential.

What does not live here: HTTP, retries and error mapping (``workqueue.client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings

from workqueue.errors import WorkAPIError, redact

if TYPE_CHECKING:
    from workqueue.client import WorkAPIClient

__all__ = [
    "capture_response",
    "client",
    "environment_key",
    "environment_key_sync",
    "failure_banner",
    "keyed_environments",
    "keyed_environments_sync",
    "thread_loop",
]

# What each kind of failure is called on the page.
_TITLES = {
    "invalid_id": "Not a valid id",
    "connection": "Could not reach the Work API",
    "timeout": "The Work API did not answer in time",
    "malformed": "The Work API sent an answer that could not be understood",
    "bad_request": "The Work API refused the request",
    "invalid_metadata": "The Work API refused the metadata",
    "authentication": "The Work API did not accept the dashboard's credentials",
    "permission": "The Work API does not allow this",
    "not_found": "Not found upstream",
    "conflict": "The Work API reported a conflict",
    "already_stopped": "Already stopped",
    "precondition_failed": "The work item changed meanwhile",
    "rate_limited": "The Work API is rate limiting the dashboard",
    "budget_exhausted": "The dashboard's budget of Work API requests is spent",
    "overloaded": "The Work API is overloaded",
    "unavailable": "The Work API is unavailable",
    "server_error": "The Work API had an internal error",
    "no_environment_key": "No environment key for this environment",
}


# The status and request-id of the last upstream response seen inside ``capture_response()``. The records the
# client returns carry only the body; the audit log also wants the request-id of a call that succeeded.
_last_response: ContextVar[dict[str, Any] | None] = ContextVar("upstream_last_response", default=None)


@contextlib.contextmanager
def capture_response() -> Iterator[dict[str, Any]]:
    """``with capture_response() as seen: ...``: afterwards ``seen`` holds ``status`` and ``request_id``.

    Works per task and per thread (a context variable), so concurrent calls do not see each other's answers.
    """
    seen: dict[str, Any] = {"status": None, "request_id": ""}
    token = _last_response.set(seen)
    try:
        yield seen
    finally:
        _last_response.reset(token)


def _note(response: httpx.Response) -> None:
    seen = _last_response.get()
    if seen is not None:
        seen["status"] = response.status_code
        seen["request_id"] = response.headers.get("request-id", "")


class _NotingAsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        # Inside the metrics transport, so page and action calls show up in /metrics beside the feed's. It uses the
        # process's one TLS context: building one per client costs ~0.1 s of CPU on every page and action.
        from dashboard.live.metrics import instrumented_transport

        self._inner: httpx.AsyncBaseTransport = instrumented_transport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        _note(response)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _options() -> dict[str, Any]:
    return {
        "api_key": settings.ANTHROPIC_API_KEY,
        "base_url": settings.ANTHROPIC_BASE_URL,
        "timeout": settings.UPSTREAM_TIMEOUT_SECONDS,
        "retry_total": settings.UPSTREAM_RETRY_TOTAL_SECONDS,
        "max_retries": settings.UPSTREAM_MAX_RETRIES,
        "workspace_id": settings.ANTHROPIC_WORKSPACE_ID or None,
    }


# One pooled client per event loop and per configuration: connections (and their TLS handshakes) are reused across
# pages, actions and probes. A client is bound to the loop it first ran on, so each loop gets its own; a loop that
# goes away takes its clients with it. The configuration is part of the key so that changed settings take effect.
_Options = tuple[tuple[str, Any], ...]
_pool: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_Options, WorkAPIClient]] = (
    weakref.WeakKeyDictionary()
)
# Configurations kept per loop; more than this (settings changing at run time) closes the oldest.
_POOL_SIZE = 8


class _Lease:
    """``async with upstream.client() as c:`` lends the shared client; leaving the block does not close it."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options

    async def __aenter__(self) -> WorkAPIClient:
        return shared_client(**self._options)

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def shared_client(**overrides: Any) -> WorkAPIClient:
    """This loop's pooled client for the settings' configuration (``overrides`` replace single options).

    Never close it: it lives as long as its event loop.
    """
    from workqueue.client import WorkAPIClient

    options = {**_options(), **overrides}
    key: _Options = tuple(sorted(options.items()))
    clients = _pool.setdefault(asyncio.get_running_loop(), {})
    api = clients.get(key)
    if api is None:
        while len(clients) >= _POOL_SIZE:
            stale = clients.pop(next(iter(clients)))
            asyncio.get_running_loop().create_task(stale.aclose())
        api = clients[key] = WorkAPIClient(**options, transport=_NotingAsyncTransport())
    return api


def client(**overrides: Any) -> _Lease:
    """The shared async client configured from settings, lent for an ``async with`` block."""
    return _Lease(overrides)


@contextlib.contextmanager
def thread_loop() -> Iterator[asyncio.Runner]:
    """An event loop for code that runs in a thread of its own (the bulk runner): ``loop.run(coroutine)`` inside
    the block; the coroutines' ``client()`` calls share this loop's pooled client, closed when the block ends."""
    with asyncio.Runner() as runner:
        try:
            yield runner
        finally:
            runner.run(_close_loop_clients())


async def _close_loop_clients() -> None:
    for api in _pool.pop(asyncio.get_running_loop(), {}).values():
        await api.aclose()


def environment_key_sync(environment_id: str) -> str | None:
    """The decrypted environment key for ``environment_id``: admin-entered first, then the deployment's."""
    from dashboard.models import EnvironmentKey

    stored = EnvironmentKey.objects.filter(environment_id=environment_id).first()
    if stored is not None:
        return stored.key()
    deployed: dict[str, str] = getattr(settings, "ENVIRONMENT_KEYS", {})
    return deployed.get(environment_id)


async def environment_key(environment_id: str) -> str | None:
    return await sync_to_async(environment_key_sync)(environment_id)


def keyed_environments_sync() -> set[str]:
    """The environments that have a key (the deployment's or one stored by an admin), in one query: for pages that
    need to know which environments can list work, without ever holding a key."""
    from dashboard.models import EnvironmentKey

    stored = EnvironmentKey.objects.values_list("environment_id", flat=True)
    return set(getattr(settings, "ENVIRONMENT_KEYS", {})) | set(stored)


async def keyed_environments() -> set[str]:
    return await sync_to_async(keyed_environments_sync)()


def failure_banner(exc: WorkAPIError) -> dict[str, Any]:
    """What a page shows about a failed upstream call: kind, title, message, when, status and request-id."""
    occurred_at: datetime = getattr(exc, "occurred_at", None) or datetime.now().astimezone()
    return {
        "kind": exc.kind,
        "title": _TITLES.get(exc.kind, "The Work API call failed"),
        # The client never puts a credential in a message; redacting again costs nothing and guards a regression.
        "message": redact(
            str(exc.message), settings.ANTHROPIC_API_KEY, *getattr(settings, "ENVIRONMENT_KEYS", {}).values()
        ),
        "request_id": exc.request_id or "",
        "status": exc.status,
        "retry_after": exc.retry_after,
        "occurred_at": occurred_at,
    }


def missing_key_banner(environment_id: str) -> dict[str, Any]:
    """The banner for an environment whose work cannot be listed because no key is configured."""
    from django.utils import timezone

    return {
        "kind": "no_environment_key",
        "title": _TITLES["no_environment_key"],
        "message": (
            f"Listing the work of {environment_id} needs its environment key. An admin can add it on the "
            "configuration page, or the deployment can set ENVIRONMENT_KEYS."
        ),
        "request_id": "",
        "status": None,
        "retry_after": None,
        "occurred_at": timezone.now(),
    }
