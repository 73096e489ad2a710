"""Injected faults and request counters of a running emulator (the ``/_emulator/faults`` and ``/_emulator/requests``
controls). Both live in the serving process's memory: they are test and benchmark controls, not API state, and are
touched only from the event loop, so they need no locking."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from workqueue.emulator.engine import EmulatorError, error_type_for

# Route names as the admin surface and the counters speak of them. "environments" selects every environments.* route.
WORK_ROUTES = ("poll", "ack", "heartbeat", "stop", "retrieve", "update", "list", "stats")
ENVIRONMENT_ROUTES = (
    "environments.list",
    "environments.create",
    "environments.retrieve",
    "environments.update",
    "environments.archive",
    "environments.delete",
)
FAULT_ROUTES = ("*", "environments", *WORK_ROUTES, *ENVIRONMENT_ROUTES)
MAX_BODY_SIZE = 64 * 1024 * 1024
MAX_LATENCY_MS = 600_000


@dataclass
class Fault:
    """One injected fault. With a ``status`` (or a ``body``/``body_size``) the route answers with it instead of
    doing its work; with only ``latency_ms`` it just answers late. ``count`` = how many requests it still applies
    to (None: until cleared)."""

    route: str
    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    should_retry: bool | None = None
    latency_ms: int = 0
    body: str | None = None
    content_type: str | None = None
    body_size: int | None = None
    count: int | None = None

    def applies_to(self, route: str) -> bool:
        return self.route in ("*", route) or route.startswith(self.route + ".")

    @property
    def replaces_response(self) -> bool:
        return self.status is not None or self.body is not None or self.body_size is not None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def response_body(self, request_id: str) -> bytes:
        status = self.status or 200
        if self.body is not None:
            body = self.body.encode()
            if self.body_size is not None:
                body = (body * (self.body_size // max(len(body), 1) + 1))[: self.body_size]
            return body
        envelope: dict[str, Any] = {
            "type": "error",
            "error": {"type": error_type_for(status), "message": "injected fault"},
            "request_id": request_id,
        }
        body = json.dumps(envelope).encode()
        if self.body_size is not None and self.body_size > len(body):
            envelope["error"]["message"] = "injected fault " + "x" * (self.body_size - len(body) - 1)
            body = json.dumps(envelope).encode()
        return body

    def response_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["retry-after"] = _number(self.retry_after)
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = _number(self.retry_after_ms)
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        return headers


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _optional_number(
    body: dict[str, Any], key: str, *, minimum: float = 0, maximum: float | None = None
) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise EmulatorError(400, f"{key} must be a number, at least {minimum}")
    if maximum is not None and value > maximum:
        raise EmulatorError(400, f"{key} must be at most {maximum}")
    return value


def fault_from_json(body: dict[str, Any]) -> Fault:
    route = body.get("route", "*")
    if route not in FAULT_ROUTES:
        raise EmulatorError(400, f"route must be one of {', '.join(FAULT_ROUTES)}")
    status = _optional_number(body, "status", minimum=200, maximum=599)
    for key in ("body", "content_type"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise EmulatorError(400, f"{key} must be a string")
    should_retry = body.get("should_retry")
    if should_retry is not None and not isinstance(should_retry, bool):
        raise EmulatorError(400, "should_retry must be true or false")
    count = _optional_number(body, "count", minimum=1)
    body_size = _optional_number(body, "body_size", minimum=0, maximum=MAX_BODY_SIZE)
    return Fault(
        route=route,
        status=None if status is None else int(status),
        retry_after=_optional_number(body, "retry_after"),
        retry_after_ms=_optional_number(body, "retry_after_ms"),
        should_retry=should_retry,
        latency_ms=int(_optional_number(body, "latency_ms", maximum=MAX_LATENCY_MS) or 0),
        body=body.get("body"),
        content_type=body.get("content_type"),
        body_size=None if body_size is None else int(body_size),
        count=None if count is None else int(count),
    )


class FaultTable:
    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self) -> None:
        self.faults.clear()

    def take(self, route: str) -> Fault | None:
        """The first fault that applies to ``route``, used up by one request."""
        for fault in self.faults:
            if fault.applies_to(route):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                return fault
        return None


class RequestCounters:
    def __init__(self) -> None:
        self.by_route: Counter[str] = Counter()
        self.by_route_and_credential: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.by_status: Counter[str] = Counter()
        # Per environment, per route: what one environment's traffic costs (the index sync's budget is per one).
        self.by_environment: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def count(self, route: str, credential_kind: str, environment_id: str | None = None) -> None:
        self.by_route[route] += 1
        self.by_route_and_credential[route][credential_kind] += 1
        if environment_id:
            self.by_environment[environment_id[:200]][route] += 1

    def count_status(self, status: int) -> None:
        self.by_status[str(status)] += 1

    def clear(self) -> None:
        self.by_route.clear()
        self.by_route_and_credential.clear()
        self.by_status.clear()
        self.by_environment.clear()

    def as_json(self) -> dict[str, Any]:
        return {
            "total": sum(self.by_route.values()),
            "by_route": dict(self.by_route),
            "by_route_and_credential": {
                route: dict(kinds) for route, kinds in self.by_route_and_credential.items()
            },
            "by_status": dict(self.by_status),
            "by_environment": {
                environment_id: {"total": sum(routes.values()), **routes}
                for environment_id, routes in self.by_environment.items()
            },
        }


faults = FaultTable()
counters = RequestCounters()
