"""Which Work API operations the gateway serves, refuses or does not know, read off a request's method and path.

The path is taken segment by segment as the client sent it (percent-encoded), each id is checked against the
upstream's id shapes, and the upstream path is rebuilt from the checked ids alone: nothing the client typed
reaches the upstream URL unchecked, so ``..``, an encoded ``/`` or whitespace in an id ends here as a 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import unquote

from workqueue.errors import InvalidID
from workqueue.ids import validate_environment_id, validate_work_id


@dataclass(frozen=True)
class Operation:
    name: str  # the SDK's words: "work.stop", "environments.list", ...
    kind: Literal["read", "write", "refused"]
    # The dashboard role action (dashboard.permissions.can) a read or write needs; a stop may need "force_stop".
    permission: str = ""
    credential: Literal["api_key", "environment_key"] = "api_key"
    query: tuple[str, ...] = ()  # query parameters passed on to the upstream; everything else is dropped
    workspace_header: bool = True  # endpoints that take anthropic-workspace-id (all but work.list)


@dataclass(frozen=True)
class Call:
    operation: Operation
    environment_id: str
    work_id: str
    upstream_path: str


@dataclass(frozen=True)
class NoRoute:
    status: int  # 404 (no such path or a malformed id) or 405 (a known path, another method)
    error_type: str
    message: str
    allow: tuple[str, ...] = ()


ENV: Final = "{environment_id}"
WORK: Final = "{work_id}"

_READ = "view"
_WORKERS_ONLY = "is for workers; the gateway serves people and refuses it"
_CONSOLE_ONLY = "changes an environment; do that in the Console, not through the dashboard's gateway"

# Literal segments come before placeholders of the same length so that work/poll and work/stats never read as a
# work id (they would fail the id check anyway; this keeps the refusal message about poll, not about an id).
_ROUTES: Final[tuple[tuple[tuple[str, ...], dict[str, Operation]], ...]] = (
    (
        ("environments",),
        {
            "GET": Operation("environments.list", "read", _READ, query=("limit", "page", "include_archived")),
            "POST": Operation("environments.create", "refused"),
        },
    ),
    (
        ("environments", ENV),
        {
            "GET": Operation("environments.retrieve", "read", _READ),
            "POST": Operation("environments.update", "refused"),
            "DELETE": Operation("environments.delete", "refused"),
        },
    ),
    (("environments", ENV, "archive"), {"POST": Operation("environments.archive", "refused")}),
    (
        ("environments", ENV, "work"),
        {
            "GET": Operation(
                "work.list",
                "read",
                _READ,
                credential="environment_key",
                query=("limit", "page"),
                workspace_header=False,
            )
        },
    ),
    (("environments", ENV, "work", "poll"), {"GET": Operation("work.poll", "refused")}),
    (("environments", ENV, "work", "stats"), {"GET": Operation("work.stats", "read", _READ)}),
    (
        ("environments", ENV, "work", WORK),
        {
            "GET": Operation("work.retrieve", "read", _READ),
            "POST": Operation("work.update", "write", "patch_metadata"),
        },
    ),
    (("environments", ENV, "work", WORK, "stop"), {"POST": Operation("work.stop", "write", "stop")}),
    (("environments", ENV, "work", WORK, "ack"), {"POST": Operation("work.ack", "refused")}),
    (("environments", ENV, "work", WORK, "heartbeat"), {"POST": Operation("work.heartbeat", "refused")}),
)


def refusal_message(operation: Operation) -> str:
    if operation.name.startswith("work."):
        return f"{operation.name} {_WORKERS_ONLY}."
    return f"{operation.name} {_CONSOLE_ONLY}."


def resolve(method: str, segments: list[str]) -> Call | NoRoute:
    """The call a request asks for; ``segments`` are the still percent-encoded parts of the path after /gateway/."""
    if not segments or segments[0] != "v1":
        return NoRoute(404, "not_found_error", "Not found: the gateway serves the Work API's /v1/ paths.")
    parts = [unquote(segment) for segment in segments[1:]]
    for pattern, methods in _ROUTES:
        if len(pattern) != len(parts):
            continue
        if any(p != part for p, part in zip(pattern, parts, strict=True) if p not in (ENV, WORK)):
            continue
        environment_id = work_id = ""
        try:
            for p, part in zip(pattern, parts, strict=True):
                if p == ENV:
                    environment_id = validate_environment_id(part)
                elif p == WORK:
                    work_id = validate_work_id(part)
        except InvalidID as exc:
            return NoRoute(404, "not_found_error", f"Not found: {exc.message}")
        operation = methods.get(method)
        if operation is None:
            return NoRoute(
                405, "invalid_request_error", f"Method {method} is not allowed here.", allow=tuple(methods)
            )
        upstream_path = "/v1/" + "/".join(
            environment_id if p == ENV else work_id if p == WORK else p for p in pattern
        )
        return Call(operation, environment_id, work_id, upstream_path)
    return NoRoute(404, "not_found_error", "Not found: the gateway does not serve this path.")
