"""An OpenAPI 3.1 description of the ``/v1/`` routes the emulator serves (``GET /_emulator/openapi.json``).

Written from the same reading of the SDK as the emulator itself; the admin surface is not part of it.
"""

from __future__ import annotations

from typing import Any

from workqueue.emulator.models import WORK_STATES

_TS = {"type": "string", "format": "date-time"}
_TS_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_PATCH_MAP = {"type": "object", "additionalProperties": {"type": ["string", "null"]}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


SCHEMAS: dict[str, Any] = {
    "WorkState": {"type": "string", "enum": list(WORK_STATES)},
    "WorkData": _obj(
        ["type", "id"],
        {"type": {"type": "string", "enum": ["session", "healthcheck"]}, "id": {"type": "string"}},
    ),
    "Work": _obj(
        ["id", "type", "environment_id", "state", "data", "metadata", "created_at"],
        {
            "id": {"type": "string", "pattern": "^work_"},
            "type": {"const": "work"},
            "environment_id": {"type": "string", "pattern": "^env_"},
            "state": _ref("WorkState"),
            "data": _ref("WorkData"),
            "metadata": _STR_MAP,
            "created_at": _TS,
            "acknowledged_at": _TS_OR_NULL,
            "started_at": _TS_OR_NULL,
            "latest_heartbeat_at": _TS_OR_NULL,
            "stop_requested_at": _TS_OR_NULL,
            "stopped_at": _TS_OR_NULL,
            "secret": {"type": ["string", "null"], "description": "base64url JSON; only in poll responses"},
        },
    ),
    "WorkPage": _obj(
        ["data"],
        {"data": {"type": "array", "items": _ref("Work")}, "next_page": {"type": ["string", "null"]}},
    ),
    "Heartbeat": _obj(
        ["type", "last_heartbeat", "lease_extended", "state", "ttl_seconds"],
        {
            "type": {"const": "work_heartbeat"},
            "last_heartbeat": {"type": "string", "description": "echo it exactly; empty string if none"},
            "lease_extended": {"type": "boolean"},
            "state": _ref("WorkState"),
            "ttl_seconds": {"type": "integer"},
        },
    ),
    "LeaseState": _obj(
        ["lease_extended", "state", "ttl_seconds"],
        {
            "last_heartbeat": {"type": ["string", "null"]},
            "lease_extended": {"const": False},
            "state": _ref("WorkState"),
            "ttl_seconds": {"type": "integer"},
        },
    ),
    "QueueStats": _obj(
        ["type", "depth", "pending"],
        {
            "type": {"const": "work_queue_stats"},
            "depth": {"type": "integer"},
            "pending": {"type": "integer"},
            "oldest_queued_at": _TS_OR_NULL,
            "workers_polling": {"type": ["integer", "null"]},
        },
    ),
    "Environment": _obj(
        ["id", "type", "name", "config", "metadata", "created_at", "updated_at"],
        {
            "id": {"type": "string", "pattern": "^env_"},
            "type": {"const": "environment"},
            "name": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "config": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"enum": ["cloud", "self_hosted"]}},
            },
            "metadata": _STR_MAP,
            "created_at": _TS,
            "updated_at": _TS,
            "archived_at": _TS_OR_NULL,
            "scope": {"type": ["string", "null"], "enum": ["organization", "account", None]},
        },
    ),
    "EnvironmentPage": _obj(
        ["data"],
        {"data": {"type": "array", "items": _ref("Environment")}, "next_page": {"type": ["string", "null"]}},
    ),
    "EnvironmentDeleted": _obj(
        ["id", "type"], {"id": {"type": "string"}, "type": {"const": "environment_deleted"}}
    ),
    "Error": _obj(
        ["type", "error", "request_id"],
        {
            "type": {"const": "error"},
            "error": _obj(
                ["type", "message"],
                {"type": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}},
            ),
            "request_id": {"type": "string"},
        },
    ),
}


def _param(
    name: str, where: str, schema: dict[str, Any], description: str = "", required: bool = False
) -> Any:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


_ENV = _param("environment_id", "path", {"type": "string"}, required=True)
_WORK = _param("work_id", "path", {"type": "string"}, required=True)
_PAGE = [
    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
    _param("page", "query", {"type": "string"}, "opaque cursor: the previous response's next_page"),
]


def _op(
    operation_id: str,
    summary: str,
    response: dict[str, Any] | None,
    *,
    credentials: str,
    params: list[Any] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    content = {"application/json": {"schema": response if response is not None else {"type": "null"}}}
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": f"Credentials: {credentials}.",
        "parameters": params or [],
        "responses": {
            "200": {"description": "OK", "content": content},
            "default": {"description": "Error", "content": {"application/json": {"schema": _ref("Error")}}},
        },
    }
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return op


def openapi_document(server_url: str) -> dict[str, Any]:
    work = "/v1/environments/{environment_id}/work"
    api_key, env_key = "API key", "environment key"
    anyone = "API key, environment key, or the item's sessions token"
    return {
        "openapi": "3.1.0",
        "info": {"title": "Work API (local emulator)", "version": "managed-agents-2026-04-01"},
        "servers": [{"url": server_url}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/v1/environments": {
                "get": _op(
                    "environments_list",
                    "List environments, newest first",
                    _ref("EnvironmentPage"),
                    credentials=api_key,
                    params=[_param("include_archived", "query", {"type": "boolean"}), *_PAGE],
                ),
                "post": _op(
                    "environments_create",
                    "Create an environment",
                    _ref("Environment"),
                    credentials=api_key,
                    body=_obj(["name"], {"name": {"type": "string"}, "config": {"type": ["object", "null"]}}),
                ),
            },
            "/v1/environments/{environment_id}": {
                "get": _op(
                    "environments_retrieve",
                    "Retrieve an environment",
                    _ref("Environment"),
                    credentials=api_key,
                    params=[_ENV],
                ),
                "post": _op(
                    "environments_update",
                    "Update an environment",
                    _ref("Environment"),
                    credentials=api_key,
                    params=[_ENV],
                    body={"type": "object"},
                ),
                "delete": _op(
                    "environments_delete",
                    "Delete an environment",
                    _ref("EnvironmentDeleted"),
                    credentials=api_key,
                    params=[_ENV],
                ),
            },
            "/v1/environments/{environment_id}/archive": {
                "post": _op(
                    "environments_archive",
                    "Archive an environment",
                    _ref("Environment"),
                    credentials=api_key,
                    params=[_ENV],
                ),
            },
            work: {
                "get": _op(
                    "work_list",
                    "List work items, newest first",
                    _ref("WorkPage"),
                    credentials=env_key,
                    params=[_ENV, *_PAGE],
                ),
            },
            f"{work}/poll": {
                "get": _op(
                    "work_poll",
                    "Claim at most one work item; the body is null when there is none",
                    {"anyOf": [_ref("Work"), {"type": "null"}]},
                    credentials=env_key,
                    params=[
                        _ENV,
                        _param(
                            "block_ms",
                            "query",
                            {"type": "integer", "minimum": 1, "maximum": 999},
                            "long-poll wait",
                        ),
                        _param(
                            "reclaim_older_than_ms",
                            "query",
                            {"type": "integer", "minimum": 0, "default": 5000},
                        ),
                        _param("Anthropic-Worker-ID", "header", {"type": "string"}),
                    ],
                ),
            },
            f"{work}/stats": {
                "get": _op(
                    "work_stats",
                    "Queue statistics",
                    _ref("QueueStats"),
                    credentials="API key or environment key",
                    params=[_ENV],
                ),
            },
            f"{work}/{{work_id}}": {
                "get": _op(
                    "work_retrieve",
                    "Retrieve a work item",
                    _ref("Work"),
                    credentials=api_key,
                    params=[_ENV, _WORK],
                ),
                "post": _op(
                    "work_update",
                    "Merge-patch a work item's metadata (null deletes a key)",
                    _ref("Work"),
                    credentials=api_key,
                    params=[_ENV, _WORK],
                    body=_obj([], {"metadata": _PATCH_MAP}),
                ),
            },
            f"{work}/{{work_id}}/ack": {
                "post": _op(
                    "work_ack",
                    "Acknowledge a delivery (queued → starting)",
                    _ref("Work"),
                    credentials=anyone,
                    params=[_ENV, _WORK],
                ),
            },
            f"{work}/{{work_id}}/heartbeat": {
                "post": _op(
                    "work_heartbeat",
                    "Extend the lease (412 with details.current_state on a stale expected_last_heartbeat)",
                    _ref("Heartbeat"),
                    credentials=anyone,
                    params=[
                        _ENV,
                        _WORK,
                        _param("desired_ttl_seconds", "query", {"type": "integer", "minimum": 1}),
                        _param(
                            "expected_last_heartbeat",
                            "query",
                            {"type": "string"},
                            "NO_HEARTBEAT or the last value",
                        ),
                    ],
                ),
            },
            f"{work}/{{work_id}}/stop": {
                "post": _op(
                    "work_stop",
                    "Stop a work item (graceful or forced); 409 if already stopped",
                    _ref("Work"),
                    credentials=anyone,
                    params=[_ENV, _WORK],
                    body=_obj([], {"force": {"type": "boolean"}}),
                ),
            },
        },
    }
