"""An OpenAPI 3.1 description of the ``/v1/`` routes the emulator serves (``GET /_emulator/openapi.json``).

Written from the same reading of the SDK as the emulator itself (the Work API reference, §3-§8), and as strict
as the emulator: response objects list every field it sends (nullable ones as explicit ``null``) and no other, and
request constraints are the ones it enforces, so a request that breaks one is refused with a 4xx. Each operation
names the credentials it takes in ``x-credentials`` (``api_key``, ``environment_key``, ``sessions_token``). Every
response carries a ``request-id`` header, and every error the upstream's envelope. The admin surface
(``/_emulator/``) is not part of it.
"""

from __future__ import annotations

from typing import Any

from workqueue.emulator.engine import ERROR_TYPES, MAX_PAGE_SIZE, MAX_WORKER_ID_LENGTH
from workqueue.emulator.models import WORK_STATES
from workqueue.ids import METADATA_LIMITS

_TS = {"type": "string", "format": "date-time"}
_TS_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_STRINGS_OR_NULL = {"type": ["array", "null"], "items": {"type": "string"}}
_BOOL_OR_NULL = {"type": ["boolean", "null"]}
_PACKAGE_MANAGERS = ("apt", "cargo", "gem", "go", "npm", "pip")
# error.type values the SDK knows (work-api.md §2); the emulator uses a subset of them.
_ERROR_TYPES = sorted(
    {
        *ERROR_TYPES.values(),
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
        "timeout_error",
        "api_error",
        "overloaded_error",
        "conflict_error",
    }
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _record(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A response object: every property present (unless ``optional``), nothing else."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
        "additionalProperties": False,
    }


def _body(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A request object: unknown properties are ignored, as the upstream's SDK expects of it."""
    return {"type": "object", "required": list(required), "properties": properties}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_METADATA_KEY = {"type": "string", "maxLength": METADATA_LIMITS["max_key_len"]}
_METADATA_VALUE = {"type": "string", "maxLength": METADATA_LIMITS["max_value_len"]}

SCHEMAS: dict[str, Any] = {
    "WorkState": {"type": "string", "enum": list(WORK_STATES)},
    "Metadata": {
        "type": "object",
        "description": f"At most {METADATA_LIMITS['max_keys']} keys of at most {METADATA_LIMITS['max_key_len']} "
        f"characters, string values of at most {METADATA_LIMITS['max_value_len']}.",
        "maxProperties": METADATA_LIMITS["max_keys"],
        "propertyNames": _METADATA_KEY,
        "additionalProperties": _METADATA_VALUE,
    },
    "MetadataPatch": {
        "type": "object",
        "description": "Merge patch: a string sets the key, null deletes it, keys not named stay. The limits of "
        "Metadata apply to the result of the merge.",
        "additionalProperties": {"type": ["string", "null"], "maxLength": METADATA_LIMITS["max_value_len"]},
    },
    "WorkData": _record(
        {
            "type": {"type": "string", "enum": ["session", "healthcheck"]},
            "id": {"type": "string", "minLength": 1},
        }
    ),
    "Work": _record(
        {
            "id": {"type": "string", "pattern": "^work_"},
            "type": {"const": "work"},
            "environment_id": {"type": "string", "pattern": "^env_"},
            "state": _ref("WorkState"),
            "data": _ref("WorkData"),
            "metadata": _ref("Metadata"),
            "created_at": _TS,
            "acknowledged_at": _TS_OR_NULL,
            "started_at": _TS_OR_NULL,
            "latest_heartbeat_at": _TS_OR_NULL,
            "stop_requested_at": _TS_OR_NULL,
            "stopped_at": _TS_OR_NULL,
            "secret": {
                "type": ["string", "null"],
                "pattern": "^[A-Za-z0-9_-]+$",
                "description": "base64url JSON {sessions_token, api_base_url}; only in poll responses",
            },
        }
    ),
    "WorkPage": _record(
        {"data": {"type": "array", "items": _ref("Work")}, "next_page": {"type": ["string", "null"]}}
    ),
    "Heartbeat": _record(
        {
            "type": {"const": "work_heartbeat"},
            "last_heartbeat": {"type": "string", "description": "echo it exactly; empty string if none"},
            "lease_extended": {"type": "boolean"},
            "state": _ref("WorkState"),
            "ttl_seconds": {"type": "integer", "minimum": 1},
        }
    ),
    "LeaseState": _record(
        {
            "last_heartbeat": {"type": ["string", "null"]},
            "lease_extended": {"const": False},
            "state": _ref("WorkState"),
            "ttl_seconds": {"type": "integer", "minimum": 1},
        }
    ),
    "QueueStats": _record(
        {
            "type": {"const": "work_queue_stats"},
            "depth": {"type": "integer", "minimum": 0},
            "pending": {"type": "integer", "minimum": 0},
            "oldest_queued_at": _TS_OR_NULL,
            "workers_polling": {"type": ["integer", "null"], "minimum": 0},
        }
    ),
    "SelfHostedConfig": _record({"type": {"const": "self_hosted"}}),
    "UnrestrictedNetworking": _record({"type": {"const": "unrestricted"}}),
    "LimitedNetworking": _record(
        {
            "type": {"const": "limited"},
            "allow_mcp_servers": {"type": "boolean"},
            "allow_package_managers": {"type": "boolean"},
            "allowed_hosts": _STRINGS,
        }
    ),
    "Packages": _record({"type": {"const": "packages"}, **dict.fromkeys(_PACKAGE_MANAGERS, _STRINGS)}),
    "CloudConfig": _record(
        {
            "type": {"const": "cloud"},
            "networking": {"oneOf": [_ref("UnrestrictedNetworking"), _ref("LimitedNetworking")]},
            "packages": _ref("Packages"),
        }
    ),
    "Environment": _record(
        {
            "id": {"type": "string", "pattern": "^env_"},
            "type": {"const": "environment"},
            "name": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "config": {"oneOf": [_ref("SelfHostedConfig"), _ref("CloudConfig")]},
            "metadata": _ref("Metadata"),
            "created_at": _TS,
            "updated_at": _TS,
            "archived_at": _TS_OR_NULL,
            "scope": {"enum": ["organization", "account", None]},
        }
    ),
    "EnvironmentPage": _record(
        {"data": {"type": "array", "items": _ref("Environment")}, "next_page": {"type": ["string", "null"]}}
    ),
    "EnvironmentDeleted": _record({"id": {"type": "string"}, "type": {"const": "environment_deleted"}}),
    # --- request bodies
    "NetworkingRequest": {
        "oneOf": [
            _body({"type": {"const": "unrestricted"}}, ("type",)),
            _body(
                {
                    "type": {"const": "limited"},
                    "allow_mcp_servers": _BOOL_OR_NULL,
                    "allow_package_managers": _BOOL_OR_NULL,
                    "allowed_hosts": _STRINGS_OR_NULL,
                },
                ("type",),
            ),
        ]
    },
    "PackagesRequest": _body(dict.fromkeys(_PACKAGE_MANAGERS, _STRINGS_OR_NULL)),
    "ConfigRequest": {
        "description": "Omitted parts keep their current (or default) value. A config's type never changes; "
        "packages under limited networking need allow_package_managers: true.",
        "oneOf": [
            _body({"type": {"const": "self_hosted"}}, ("type",)),
            _body(
                {
                    "type": {"const": "cloud"},
                    "networking": _nullable(_ref("NetworkingRequest")),
                    "packages": _nullable(_ref("PackagesRequest")),
                },
                ("type",),
            ),
        ],
    },
    "EnvironmentName": {
        "type": "string",
        "minLength": 1,
        "maxLength": 256,
        "description": "not blank (whitespace only is refused)",
    },
    "Scope": {"enum": ["organization", None], "description": "account is refused for API organizations"},
    "EnvironmentCreate": _body(
        {
            "name": _ref("EnvironmentName"),
            "description": {"type": ["string", "null"]},
            "config": _nullable(_ref("ConfigRequest")),
            "metadata": _nullable(_ref("Metadata")),
            "scope": _ref("Scope"),
        },
        ("name",),
    ),
    "EnvironmentUpdate": _body(
        {
            "name": _nullable(_ref("EnvironmentName")),
            "description": {"type": ["string", "null"], "description": "null clears it; omitted keeps it"},
            "config": _nullable(_ref("ConfigRequest")),
            "metadata": _nullable(
                {**_ref("MetadataPatch"), "description": "an empty string deletes a key, as null does"}
            ),
            "scope": _ref("Scope"),
        }
    ),
    "WorkUpdate": _body({"metadata": _nullable(_ref("MetadataPatch"))}),
    "WorkStop": _body({"force": {"type": ["boolean", "null"], "description": "true stops at once"}}),
    # --- errors
    "Error": {
        "type": "object",
        "required": ["type", "error", "request_id"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "additionalProperties": False,
                "properties": {
                    "type": {"type": "string", "enum": _ERROR_TYPES},
                    "message": {"type": "string", "minLength": 1},
                    "details": {
                        "type": "object",
                        "properties": {"error_code": {"type": "string"}},
                    },
                },
            },
            "request_id": {
                "type": "string",
                "pattern": "^req_",
                "description": "the request-id header's value",
            },
        },
    },
    "PreconditionFailed": {
        "allOf": [
            _ref("Error"),
            {
                "properties": {
                    "error": {
                        "required": ["details"],
                        "properties": {
                            "details": {
                                "required": ["error_code", "current_state"],
                                "properties": {
                                    "error_code": {"const": "heartbeat_precondition_failed"},
                                    "current_state": _ref("LeaseState"),
                                },
                            }
                        },
                    }
                }
            },
        ]
    },
}

_REQUEST_ID_HEADER = {
    "request-id": {"required": True, "description": "also in an error's body", "schema": {"type": "string"}}
}
_RETRY_HEADERS = {
    "retry-after": {"description": "seconds to wait before retrying", "schema": {"type": "string"}},
    "x-should-retry": {"description": "true or false: overrides the status's retry rule", "schema": {}},
}


def _param(
    name: str, where: str, schema: dict[str, Any], description: str = "", required: bool = False
) -> dict[str, Any]:
    param = {"name": name, "in": where, "required": required, "schema": schema, "description": description}
    if where == "query" and schema.get("type") != "string":
        # The emulator reads ``?name=`` as if the parameter were not there.
        param["allowEmptyValue"] = True
    return param


_ENV = _param("environment_id", "path", {"type": "string", "minLength": 1}, "env_…", required=True)
_WORK = _param("work_id", "path", {"type": "string", "minLength": 1}, "work_…", required=True)
_PAGE = [
    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 20}),
    {
        **_param("page", "query", {"type": "string"}, "opaque cursor: the previous response's next_page"),
        "allowEmptyValue": True,
    },
]

_ERROR_REASONS = {
    "400": "Bad request: a parameter, the body, or the environment is not self-hosted",
    "401": "No credential, or one nobody issued",
    "403": "A credential this route or this resource does not take",
    "404": "No such environment or work item",
    "409": "The work item is stopped (or, for ack, was never delivered)",
    "412": "expected_last_heartbeat does not match; details.current_state says what does",
}


def _error(status: str, schema: str = "Error") -> dict[str, Any]:
    headers = {**_REQUEST_ID_HEADER, **_RETRY_HEADERS}
    return {
        "description": _ERROR_REASONS.get(status, "Error"),
        "headers": headers,
        "content": {"application/json": {"schema": _ref(schema)}},
    }


def _op(
    operation_id: str,
    summary: str,
    response: dict[str, Any],
    *,
    credentials: tuple[str, ...],
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    errors: tuple[str, ...] = ("400", "401", "403", "404"),
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "headers": _REQUEST_ID_HEADER,
            "content": {"application/json": {"schema": response}},
        }
    }
    for status in errors:
        responses[status] = _error(status, "PreconditionFailed" if status == "412" else "Error")
    responses["default"] = _error("default")
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": "Credentials: " + ", ".join(c.replace("_", " ") for c in credentials) + ".",
        "x-credentials": list(credentials),
        "parameters": params or [],
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {
            "required": False,
            "description": "An empty body counts as {}.",
            "content": {"application/json": {"schema": body}},
        }
    return op


API_KEY = ("api_key",)
ENVIRONMENT_KEY = ("environment_key",)
ANYONE = ("api_key", "environment_key", "sessions_token")


def openapi_document(server_url: str) -> dict[str, Any]:
    work = "/v1/environments/{environment_id}/work"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Work API (local emulator)",
            "version": "managed-agents-2026-04-01",
            "description": "Every response is JSON with a request-id header; every error is "
            '{"type": "error", "error": {"type", "message", "details"?}, "request_id"}. The credential goes in '
            "Authorization: Bearer or x-api-key: the API key, an environment key (sk-ant-oat01-…, for its own "
            "environment only) or a work item's sessions token (sk-ant-req-…, from the secret of its latest "
            "delivery, for that item only).",
        },
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
                    credentials=API_KEY,
                    params=[
                        _param("include_archived", "query", {"type": "boolean"}, "true or false"),
                        *_PAGE,
                    ],
                    errors=("400", "401", "403"),
                ),
                "post": _op(
                    "environments_create",
                    "Create an environment (config omitted: cloud, unrestricted, no packages)",
                    _ref("Environment"),
                    credentials=API_KEY,
                    body=_ref("EnvironmentCreate"),
                    errors=("400", "401", "403"),
                ),
            },
            "/v1/environments/{environment_id}": {
                "get": _op(
                    "environments_retrieve",
                    "Retrieve an environment",
                    _ref("Environment"),
                    credentials=API_KEY,
                    params=[_ENV],
                ),
                "post": _op(
                    "environments_update",
                    "Update an environment (not an archived one)",
                    _ref("Environment"),
                    credentials=API_KEY,
                    params=[_ENV],
                    body=_ref("EnvironmentUpdate"),
                ),
                "delete": _op(
                    "environments_delete",
                    "Delete an environment and its work",
                    _ref("EnvironmentDeleted"),
                    credentials=API_KEY,
                    params=[_ENV],
                ),
            },
            "/v1/environments/{environment_id}/archive": {
                "post": _op(
                    "environments_archive",
                    "Archive an environment (again: no change)",
                    _ref("Environment"),
                    credentials=API_KEY,
                    params=[_ENV],
                ),
            },
            work: {
                "get": _op(
                    "work_list",
                    "List work items, newest first",
                    _ref("WorkPage"),
                    credentials=ENVIRONMENT_KEY,
                    params=[_ENV, *_PAGE],
                ),
            },
            f"{work}/poll": {
                "get": _op(
                    "work_poll",
                    "Claim at most one work item; the body is null when there is none",
                    {"anyOf": [_ref("Work"), {"type": "null"}]},
                    credentials=ENVIRONMENT_KEY,
                    params=[
                        _ENV,
                        _param(
                            "block_ms",
                            "query",
                            {"type": "integer", "minimum": 1, "maximum": 999},
                            "long-poll wait; omitted: answer at once",
                        ),
                        _param(
                            "reclaim_older_than_ms",
                            "query",
                            {"type": "integer", "minimum": 0, "default": 5000},
                            "hand out again a delivery not acknowledged for this long",
                        ),
                        _param(
                            "Anthropic-Worker-ID",
                            "header",
                            {"type": "string", "maxLength": MAX_WORKER_ID_LENGTH},
                            "counted in workers_polling",
                        ),
                    ],
                ),
            },
            f"{work}/stats": {
                "get": _op(
                    "work_stats",
                    "Queue statistics",
                    _ref("QueueStats"),
                    credentials=("api_key", "environment_key"),
                    params=[_ENV],
                ),
            },
            f"{work}/{{work_id}}": {
                "get": _op(
                    "work_retrieve",
                    "Retrieve a work item",
                    _ref("Work"),
                    credentials=API_KEY,
                    params=[_ENV, _WORK],
                ),
                "post": _op(
                    "work_update",
                    "Merge-patch a work item's metadata (null deletes a key; no metadata: no change)",
                    _ref("Work"),
                    credentials=API_KEY,
                    params=[_ENV, _WORK],
                    body=_ref("WorkUpdate"),
                ),
            },
            f"{work}/{{work_id}}/ack": {
                "post": _op(
                    "work_ack",
                    "Acknowledge a delivery (queued → starting); again while starting or active: no change",
                    _ref("Work"),
                    credentials=ANYONE,
                    params=[_ENV, _WORK],
                    errors=("400", "401", "403", "404", "409"),
                ),
            },
            f"{work}/{{work_id}}/heartbeat": {
                "post": _op(
                    "work_heartbeat",
                    "Extend the lease (412 with details.current_state on a stale expected_last_heartbeat)",
                    _ref("Heartbeat"),
                    credentials=ANYONE,
                    params=[
                        _ENV,
                        _WORK,
                        _param(
                            "desired_ttl_seconds",
                            "query",
                            {"type": "integer", "minimum": 1},
                            "clamped to 10-600",
                        ),
                        _param(
                            "expected_last_heartbeat",
                            "query",
                            {"type": "string"},
                            "NO_HEARTBEAT, or the last_heartbeat of the previous answer",
                        ),
                    ],
                    errors=("400", "401", "403", "404", "412"),
                ),
            },
            f"{work}/{{work_id}}/stop": {
                "post": _op(
                    "work_stop",
                    "Stop a work item (graceful or forced); 409 if already stopped",
                    _ref("Work"),
                    credentials=ANYONE,
                    params=[_ENV, _WORK],
                    body=_ref("WorkStop"),
                    errors=("400", "401", "403", "404", "409"),
                ),
            },
        },
    }
