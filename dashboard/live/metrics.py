"""Prometheus metrics of the live layer and of every upstream call, and the HTTP transport that measures them.

Upstream calls are measured at the HTTP transport (``InstrumentedTransport``), so every attempt counts, retries
included, labelled by endpoint (the operation, never an id) and status (the HTTP status, or the failure kind when
there was no response). The feed uses it; ``instrumented_transport()`` lets any other client use it too.

Per-environment gauges are exported by the instance holding that environment's feed and removed when it lets go,
so a query such as ``max by (environment) (workqueue_queue_depth)`` sees one value per environment.
"""

from __future__ import annotations

import contextlib
import re
import time

import httpx
from prometheus_client import Counter, Gauge, Histogram

from workqueue.client import tls_context

UPSTREAM_LATENCY = Histogram(
    "workqueue_upstream_request_duration_seconds",
    "Time for one HTTP request to the Work API, by endpoint and status.",
    ["endpoint", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_ERRORS = Counter(
    "workqueue_upstream_errors_total",
    "Failed HTTP requests to the Work API (error status or no response), by endpoint and status.",
    ["endpoint", "status"],
)
QUEUE_DEPTH = Gauge("workqueue_queue_depth", "Queued work never delivered, per environment.", ["environment"])
QUEUE_PENDING = Gauge(
    "workqueue_queue_pending", "Work delivered but not acknowledged, per environment.", ["environment"]
)
WORKERS_POLLING = Gauge(
    "workqueue_workers_polling", "Workers seen polling recently, per environment.", ["environment"]
)
OLDEST_QUEUED_AGE = Gauge(
    "workqueue_oldest_queued_age_seconds",
    "Age of the oldest waiting work item, per environment.",
    ["environment"],
)
STUCK_WORK = Gauge(
    "workqueue_stuck_work", "Stuck work items among those listed, per environment.", ["environment"]
)
ACTIVE_WORK = Gauge(
    "workqueue_active_work", "Starting or active work items among those listed.", ["environment"]
)
FEED_LAG = Gauge(
    "dashboard_feed_lag_seconds",
    "How late the latest snapshot went out compared with when it was due, per environment.",
    ["environment"],
)
FEED_STALE = Gauge(
    "dashboard_feed_stale", "1 while an environment's feed cannot read the upstream.", ["environment"]
)
FEED_SNAPSHOT_TIME = Gauge(
    "dashboard_feed_last_snapshot_timestamp_seconds",
    "When the latest snapshot with fresh numbers was read (Unix time), per environment.",
    ["environment"],
)
FEEDS_HELD = Gauge("dashboard_feeds_held", "Environment feeds this instance runs.")
WEBSOCKETS_OPEN = Gauge("dashboard_websockets_open", "Open websockets on this instance, by kind.", ["kind"])

ENVIRONMENT_GAUGES = (
    QUEUE_DEPTH,
    QUEUE_PENDING,
    WORKERS_POLLING,
    OLDEST_QUEUED_AGE,
    STUCK_WORK,
    ACTIVE_WORK,
    FEED_LAG,
    FEED_STALE,
    FEED_SNAPSHOT_TIME,
)

# Paths to endpoint names. Ids never become label values: that would make one series per work item.
_ENDPOINTS: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (method, re.compile(pattern), name)
    for method, pattern, name in (
        ("GET", r"/v1/environments/[^/]+/work/stats$", "work_stats"),
        ("GET", r"/v1/environments/[^/]+/work/poll$", "poll_work"),
        ("GET", r"/v1/environments/[^/]+/work$", "list_work"),
        ("POST", r"/v1/environments/[^/]+/work/[^/]+/ack$", "ack_work"),
        ("POST", r"/v1/environments/[^/]+/work/[^/]+/heartbeat$", "heartbeat_work"),
        ("POST", r"/v1/environments/[^/]+/work/[^/]+/stop$", "stop_work"),
        ("GET", r"/v1/environments/[^/]+/work/[^/]+$", "retrieve_work"),
        ("POST", r"/v1/environments/[^/]+/work/[^/]+$", "update_work_metadata"),
        ("GET", r"/v1/environments$", "list_environments"),
        ("GET", r"/v1/environments/[^/]+$", "retrieve_environment"),
    )
)


def endpoint_of(method: str, path: str) -> str:
    for endpoint_method, pattern, name in _ENDPOINTS:
        if method == endpoint_method and pattern.search(path.rstrip("/")):
            return name
    return "other"


def _failure_status(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connection_refused"
    return "transport_error"


class InstrumentedTransport(httpx.AsyncBaseTransport):
    """Wraps an httpx transport; records each request's duration and outcome under its endpoint name."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        # The process's one TLS context (building one per transport costs ~0.1 s of CPU).
        self._inner = inner or httpx.AsyncHTTPTransport(verify=tls_context())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = endpoint_of(request.method, request.url.path)
        started = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as exc:
            status = _failure_status(exc)
            UPSTREAM_LATENCY.labels(endpoint, status).observe(time.perf_counter() - started)
            UPSTREAM_ERRORS.labels(endpoint, status).inc()
            raise
        # Time to the response head: the body is streamed by the caller, and small for every endpoint.
        status = str(response.status_code)
        UPSTREAM_LATENCY.labels(endpoint, status).observe(time.perf_counter() - started)
        if response.status_code >= 400:
            UPSTREAM_ERRORS.labels(endpoint, status).inc()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def instrumented_transport() -> httpx.AsyncBaseTransport:
    """A transport for ``WorkAPIClient(transport=...)`` whose calls show up in ``/metrics`` and are taken from the
    dashboard's upstream budget (``dashboard.budget``: a request it does not cover is not sent, and not measured)."""
    from dashboard.budget import BudgetedTransport, shared_budget

    return BudgetedTransport(InstrumentedTransport(), shared_budget())


def forget_environment(environment_id: str) -> None:
    """Stop exporting an environment's gauges (this instance no longer runs its feed)."""
    for gauge in ENVIRONMENT_GAUGES:
        with contextlib.suppress(KeyError):
            gauge.remove(environment_id)
