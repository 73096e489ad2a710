"""The Work API's semantics on the emulator's tables: credentials, environments, and the work item lifecycle.

Everything here is synchronous ORM code, each operation in one transaction on the ``emulator`` alias, and takes
the time as ``now`` (the virtual clock by default: real UTC time plus a stored offset that
``POST /_emulator/clock`` moves forward). The HTTP layer (``views.py``) only parses requests and renders what
these functions return or raise (:class:`EmulatorError`).

The lifecycle (spec §7):

- ``enqueue`` adds a ``queued`` item that nobody has been handed (it counts in ``depth``).
- ``poll`` hands one out: it stays ``queued`` but moves from ``depth`` to ``pending``, and carries a ``secret``
  holding a fresh sessions token (older tokens of the item stop working). A delivery that is not acked within
  ``reclaim_older_than_ms`` (default 5000) is handed to the next poll instead.
- ``ack`` → ``starting`` and out of the queue; the lease starts (``ttl_seconds``, default
  ``EMULATOR_LEASE_TTL_SECONDS``). Acking an item that was never delivered is a 409: an ack confirms a delivery.
- the first heartbeat → ``active``; each heartbeat extends the lease and returns a new, distinct timestamp string,
  which the next heartbeat must echo byte for byte (``NO_HEARTBEAT`` claims a lease nobody has heartbeated).
- graceful stop: ``queued`` → ``stopped``, ``starting``/``active`` → ``stopping``, ``stopping`` → ``stopped``;
  force stop → ``stopped``; any stop of a ``stopped`` item → 409.

Lease expiry, applied lazily at the start of every operation on an environment:

- ``starting``/``active`` with an expired lease → re-queued: back in ``depth``, the stored heartbeat cleared (the
  next worker claims it with ``NO_HEARTBEAT``), ``acknowledged_at``/``started_at`` cleared, ``latest_heartbeat_at``
  kept as history. Its sessions token keeps answering (heartbeat → 412 ``queued``) until the next delivery mints
  a fresh one.
- ``stopping`` with an expired lease → ``stopped`` (the worker is presumed gone), ``stopped_at`` = the expiry time.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, Final, ParamSpec, TypeVar

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, F, Min, Q
from django.utils import timezone

from workqueue.emulator.models import Clock, Environment, SessionsToken, WorkerPoll, WorkItem
from workqueue.ids import validate_metadata

DB: Final = "emulator"
NO_HEARTBEAT: Final = "NO_HEARTBEAT"
DEFAULT_RECLAIM_MS: Final = 5000
# A longer reclaim window never ends in practice; bounded so the dates computed from it stay in range.
MAX_RECLAIM_MS: Final = 10 * 366 * 86400 * 1000
WORKERS_POLLING_WINDOW: Final = timedelta(seconds=30)
MIN_TTL_SECONDS: Final = 10
MAX_TTL_SECONDS: Final = 600
DEFAULT_PAGE_SIZE: Final = 20
# The workspace of the emulator's API key unless EMULATOR_WORKSPACE_ID names another.
DEFAULT_WORKSPACE_ID: Final = "wrkspc_01EmulatorDefault"
MAX_PAGE_SIZE: Final = 100
MAX_WORKER_ID_LENGTH: Final = 512  # what WorkerPoll.worker_id and WorkItem.delivered_to_worker_id hold
ONE_MICROSECOND: Final = timedelta(microseconds=1)

ERROR_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    412: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


class EmulatorError(Exception):
    """An answer in the upstream's error envelope: status, ``error.type``, message, optional ``details``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type_for(status)
        self.message = message
        self.details = details
        self.headers = headers or {}


def _bad_request(message: str, error_code: str | None = None) -> EmulatorError:
    return EmulatorError(400, message, details={"error_code": error_code} if error_code else None)


def _conflict(message: str) -> EmulatorError:
    # Whether the real API marks deterministic conflicts as not worth retrying is unknown; faithful = say nothing.
    headers = {"x-should-retry": "false"} if getattr(settings, "EMULATOR_NO_RETRY_CONFLICTS", False) else None
    return EmulatorError(409, message, headers=headers)


P = ParamSpec("P")
R = TypeVar("R")


def _atomic(func: Callable[P, R]) -> Callable[P, R]:
    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with transaction.atomic(using=DB):
            return func(*args, **kwargs)

    return wrapper


# --- time ------------------------------------------------------------------------------------------------------


def format_ts(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and ``Z``, e.g. ``2026-07-01T08:15:06.120394Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_optional(moment: datetime | None) -> str | None:
    return None if moment is None else format_ts(moment)


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def clock_offset() -> float:
    # Read before every operation: one plain statement, without the ORM's query building.
    connection = connections[DB]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT offset_seconds FROM {connection.ops.quote_name(Clock._meta.db_table)} WHERE id = 1"
        )
        row = cursor.fetchone()
    return float(row[0]) if row else 0.0


def current_time() -> datetime:
    """The virtual clock: real UTC time plus the stored offset."""
    return timezone.now() + timedelta(seconds=clock_offset())


@_atomic
def advance_clock(seconds: float) -> datetime:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise _bad_request("advance_seconds must be a number of seconds, zero or more")
    row, _ = Clock.objects.using(DB).get_or_create(pk=1)
    row.offset_seconds += float(seconds)
    row.save(using=DB)
    return current_time()


# --- ids and credentials ---------------------------------------------------------------------------------------

_ID_ALPHABET: Final = string.ascii_letters + string.digits


_ID_LENGTH: Final = 20
_ID_SPACE: Final = len(_ID_ALPHABET) ** _ID_LENGTH


def new_id(prefix: str) -> str:
    # One draw from the system's randomness for the whole id (not one per character), written in base 62.
    number = secrets.randbelow(_ID_SPACE)
    chars = []
    for _ in range(_ID_LENGTH):
        number, digit = divmod(number, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[digit])
    return prefix + "011C" + "".join(chars)


def new_request_id() -> str:
    return new_id("req_")


def new_environment_key() -> str:
    return "sk-ant-oat01-" + secrets.token_urlsafe(48)


def new_sessions_token() -> str:
    return "sk-ant-req-" + secrets.token_urlsafe(48)


@dataclass(frozen=True)
class Credential:
    """What a request's bearer turned out to be. ``kind``: api_key, environment_key, sessions_token, unknown, none."""

    kind: str
    environment_id: str | None = None
    work_id: str | None = None
    current: bool = True
    workspace_id: str | None = None  # the workspace the credential belongs to (None: unknown or missing)


def default_workspace() -> str:
    """The workspace of the emulator's API key, and of every environment created without another."""
    return str(getattr(settings, "EMULATOR_WORKSPACE_ID", "") or DEFAULT_WORKSPACE_ID)


def workspace_of(env: Environment) -> str:
    return env.workspace_id or default_workspace()


def credential_from_headers(x_api_key: str | None, authorization: str | None) -> str | None:
    """The credential a request carries: ``x-api-key`` (older SDKs) or ``Authorization: Bearer`` (2.10.0)."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def classify_credential(raw: str | None) -> Credential:
    if not raw:
        return Credential("none")
    if secrets.compare_digest(raw.encode(), str(getattr(settings, "EMULATOR_API_KEY", "")).encode()):
        return Credential("api_key", workspace_id=default_workspace())
    if raw.startswith("sk-ant-oat01-"):
        env_row = (
            Environment.objects.using(DB)
            .filter(environment_key=raw)
            .values_list("id", "workspace_id")
            .first()
        )
        if env_row:
            env_id, workspace = env_row
            return Credential(
                "environment_key", environment_id=env_id, workspace_id=workspace or default_workspace()
            )
    if raw.startswith("sk-ant-req-"):
        row = (
            SessionsToken.objects.using(DB)
            .filter(token=raw)
            .values_list(
                "work_item__environment_id", "work_item_id", "current", "work_item__environment__workspace_id"
            )
            .first()
        )
        if row:
            environment_id, work_id, current, workspace = row
            return Credential(
                "sessions_token",
                environment_id=environment_id,
                work_id=work_id,
                current=current,
                workspace_id=workspace or default_workspace(),
            )
    return Credential("unknown")


def check_workspace(credential: Credential, requested: str | None, environment_id: str | None) -> None:
    """The workspace rules of a request whose credential ``authorize`` accepted (needs the database).

    An ``anthropic-workspace-id`` naming another workspace than the credential's is refused (403); an API key
    does not see environments of another workspace (404, as for one that does not exist).
    """
    if requested is not None and requested.strip() != (credential.workspace_id or ""):
        raise EmulatorError(
            403, "anthropic-workspace-id names a workspace this credential does not belong to"
        )
    if credential.kind == "api_key" and environment_id is not None:
        workspace = (
            Environment.objects.using(DB)
            .filter(pk=environment_id)
            .values_list("workspace_id", flat=True)
            .first()
        )
        if workspace is not None and (workspace or default_workspace()) != credential.workspace_id:
            raise EmulatorError(404, f"environment {environment_id} not found")


# Spec §3: which credential kinds each route takes. Anything else known → 403; unknown or missing → 401.
ALLOWED_CREDENTIALS: Final[dict[str, frozenset[str]]] = {
    "retrieve": frozenset({"api_key"}),
    "update": frozenset({"api_key"}),
    "list": frozenset({"environment_key"}),
    "poll": frozenset({"environment_key"}),
    "ack": frozenset({"api_key", "environment_key", "sessions_token"}),
    "heartbeat": frozenset({"api_key", "environment_key", "sessions_token"}),
    "stop": frozenset({"api_key", "environment_key", "sessions_token"}),
    "stats": frozenset({"api_key", "environment_key"}),
    "environments.list": frozenset({"api_key"}),
    "environments.create": frozenset({"api_key"}),
    "environments.retrieve": frozenset({"api_key"}),
    "environments.update": frozenset({"api_key"}),
    "environments.archive": frozenset({"api_key"}),
    "environments.delete": frozenset({"api_key"}),
}

_KIND_NAMES: Final = {
    "api_key": "an API key",
    "environment_key": "an environment key",
    "sessions_token": "a work item's sessions token",
}


def authorize(
    route: str, credential: Credential, environment_id: str | None, work_id: str | None = None
) -> None:
    """Raise 401 for a missing or unknown credential, 403 for a known one this route or resource does not take."""
    if credential.kind == "none":
        raise EmulatorError(401, "x-api-key or Authorization: Bearer header is required")
    if credential.kind == "unknown":
        raise EmulatorError(401, "invalid x-api-key or bearer token")
    allowed = ALLOWED_CREDENTIALS[route]
    if credential.kind not in allowed:
        takes = " or ".join(_KIND_NAMES[k] for k in sorted(allowed))
        raise EmulatorError(
            403, f"this endpoint does not accept {_KIND_NAMES[credential.kind]}; it takes {takes}"
        )
    if credential.kind == "environment_key" and environment_id != credential.environment_id:
        raise EmulatorError(403, "this environment key belongs to another environment")
    if credential.kind == "sessions_token":
        if environment_id != credential.environment_id or work_id != credential.work_id:
            raise EmulatorError(403, "this sessions token belongs to another work item")
        if not credential.current:
            raise EmulatorError(403, "this sessions token was replaced by a newer delivery of the work item")


# --- rendering -------------------------------------------------------------------------------------------------


def environment_json(env: Environment) -> dict[str, Any]:
    return {
        "id": env.id,
        "type": "environment",
        "name": env.name,
        "description": env.description,
        "config": env.config,
        "metadata": env.metadata,
        "created_at": format_ts(env.created_at),
        "updated_at": format_ts(env.updated_at),
        "archived_at": format_optional(env.archived_at),
        "scope": env.scope,
    }


def work_json(item: WorkItem, secret: str | None = None) -> dict[str, Any]:
    return {
        "id": item.id,
        "type": "work",
        "environment_id": item.environment_id,
        "state": item.state,
        "data": {"type": item.data_type, "id": item.data_id},
        "metadata": item.metadata,
        "created_at": format_ts(item.created_at),
        "acknowledged_at": format_optional(item.acknowledged_at),
        "started_at": format_optional(item.started_at),
        "latest_heartbeat_at": format_optional(item.latest_heartbeat_at),
        "stop_requested_at": format_optional(item.stop_requested_at),
        "stopped_at": format_optional(item.stopped_at),
        "secret": secret,
    }


def lease_state_json(item: WorkItem) -> dict[str, Any]:
    return {
        "last_heartbeat": item.stored_heartbeat,
        "lease_extended": False,
        "state": item.state,
        "ttl_seconds": item.ttl_seconds,
    }


def encode_secret(sessions_token: str, api_base_url: str | None) -> str:
    payload: dict[str, str] = {"sessions_token": sessions_token}
    if api_base_url:
        payload["api_base_url"] = api_base_url
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- pagination ------------------------------------------------------------------------------------------------


def encode_cursor(created_at: datetime, object_id: str) -> str:
    raw = json.dumps([format_ts(created_at), object_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, object_id = json.loads(raw)
        if not isinstance(created, str) or not isinstance(object_id, str):
            raise ValueError
        return parse_ts(created), object_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise _bad_request("page is not a cursor this endpoint returned") from None


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE_SIZE
    try:
        limit = int(raw)
    except ValueError:
        raise _bad_request("limit must be a whole number") from None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise _bad_request(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    return limit


def _newest_first_page(query: Any, limit: int, page: str | None) -> tuple[list[Any], str | None]:
    """One page of ``query`` newest first by (created_at, id); the cursor names the last row shown, so rows added
    later (newer, hence earlier in the order) never shift what the following pages hold."""
    if page:
        created_at, object_id = decode_cursor(page)
        query = query.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=object_id))
    rows = list(query.order_by("-created_at", "-id")[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


# --- metadata --------------------------------------------------------------------------------------------------


def _metadata_patch(raw: object, *, empty_deletes: bool) -> dict[str, str | None]:
    if not isinstance(raw, dict):
        raise _bad_request("metadata must be an object of string (or null) values")
    for key, value in raw.items():
        if value is not None and not isinstance(value, str):
            raise _bad_request(f"metadata value for key {key[:64]!r} must be a string or null")
    if empty_deletes:
        return {k: (None if v == "" else v) for k, v in raw.items()}
    return dict(raw)


def merge_metadata(current: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    """Merge-patch: a string upserts, ``None`` deletes, keys not mentioned stay. Validated after the merge."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    check_metadata(merged)
    return merged


def check_metadata(metadata: Mapping[str, str]) -> None:
    problems = validate_metadata(metadata)
    if problems:
        raise _bad_request(" ".join(problems), "invalid_metadata")


# --- environments ----------------------------------------------------------------------------------------------

_PACKAGE_MANAGERS: Final = ("apt", "cargo", "gem", "go", "npm", "pip")


def _default_cloud_config() -> dict[str, Any]:
    return {
        "type": "cloud",
        "networking": {"type": "unrestricted"},
        "packages": {"type": "packages", **{name: [] for name in _PACKAGE_MANAGERS}},
    }


def _string_list(raw: object, what: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise _bad_request(f"{what} must be a list of strings")
    return list(raw)


def _networking(raw: object, existing: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(raw, dict) or raw.get("type") not in ("unrestricted", "limited"):
        raise _bad_request("config.networking.type must be unrestricted or limited")
    if raw["type"] == "unrestricted":
        return {"type": "unrestricted"}
    base = existing if existing and existing.get("type") == "limited" else {}
    result: dict[str, Any] = {"type": "limited"}
    for flag in ("allow_mcp_servers", "allow_package_managers"):
        value = raw.get(flag, base.get(flag, False))
        if value is None:
            value = base.get(flag, False)
        if not isinstance(value, bool):
            raise _bad_request(f"config.networking.{flag} must be true or false")
        result[flag] = value
    hosts = raw.get("allowed_hosts")
    result["allowed_hosts"] = (
        base.get("allowed_hosts", [])
        if hosts is None
        else _string_list(hosts, "config.networking.allowed_hosts")
    )
    return result


def _packages(raw: object, existing: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _bad_request("config.packages must be an object")
    base = existing or {}
    result: dict[str, Any] = {"type": "packages"}
    for name in _PACKAGE_MANAGERS:
        value = raw.get(name)
        result[name] = (
            list(base.get(name, [])) if value is None else _string_list(value, f"config.packages.{name}")
        )
    return result


def _config(raw: object, existing: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(raw, dict) or raw.get("type") not in ("cloud", "self_hosted"):
        raise _bad_request("config.type must be cloud or self_hosted")
    if existing is not None and raw["type"] != existing.get("type"):
        raise _bad_request("an environment's config.type cannot change", "invalid_config_type_change")
    if raw["type"] == "self_hosted":
        return {"type": "self_hosted"}
    base = existing or _default_cloud_config()
    networking = (
        base["networking"]
        if raw.get("networking") is None
        else _networking(raw["networking"], base["networking"])
    )
    packages = (
        base["packages"] if raw.get("packages") is None else _packages(raw["packages"], base["packages"])
    )
    limited = networking["type"] == "limited" and not networking["allow_package_managers"]
    if limited and any(packages[name] for name in _PACKAGE_MANAGERS):
        raise _bad_request("packages under limited networking need networking.allow_package_managers: true")
    return {"type": "cloud", "networking": networking, "packages": packages}


def _name(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise _bad_request("name must be a non-empty string")
    if len(raw) > 256:
        raise _bad_request("name must be at most 256 characters")
    return raw


def _scope(raw: object) -> str:
    if raw is None or raw == "organization":
        return "organization"
    if raw == "account":
        raise _bad_request("API organizations support only the organization scope; account is rejected")
    raise _bad_request("scope must be organization or account")


def _description(raw: object) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise _bad_request("description must be a string or null")
    return raw


def get_environment(environment_id: str) -> Environment:
    env = Environment.objects.using(DB).filter(pk=environment_id).first()
    if env is None:
        raise EmulatorError(404, f"environment {environment_id[:120]} not found")
    return env


@_atomic
def create_environment(
    body: Mapping[str, Any],
    *,
    default_config: str = "cloud",
    workspace_id: str = "",
    now: datetime | None = None,
) -> Environment:
    """``POST /v1/environments`` (config omitted → cloud) and the admin surface (config omitted → self-hosted)."""
    now = now or current_time()
    raw_config = body.get("config")
    if raw_config is None:
        config = {"type": "self_hosted"} if default_config == "self_hosted" else _default_cloud_config()
    else:
        config = _config(raw_config, None)
    metadata = body.get("metadata")
    metadata = {} if metadata is None else _metadata_patch(metadata, empty_deletes=False)
    check_metadata(metadata)  # type: ignore[arg-type]
    return Environment.objects.using(DB).create(
        id=new_id("env_"),
        name=_name(body.get("name")),
        description=_description(body.get("description")),
        config=config,
        metadata=metadata,
        scope=_scope(body.get("scope")),
        created_at=now,
        updated_at=now,
        environment_key=new_environment_key(),
        workspace_id="" if workspace_id == default_workspace() else workspace_id,
    )


@_atomic
def update_environment(
    environment_id: str, body: Mapping[str, Any], *, now: datetime | None = None
) -> Environment:
    now = now or current_time()
    env = get_environment(environment_id)
    if env.archived_at is not None:
        raise _bad_request("an archived environment cannot be updated", "environment_archived")
    if body.get("config") is not None:
        env.config = _config(body["config"], env.config)
    if "description" in body:
        env.description = _description(body["description"])
    if body.get("metadata") is not None:
        env.metadata = merge_metadata(env.metadata, _metadata_patch(body["metadata"], empty_deletes=True))
    if body.get("name") is not None:
        env.name = _name(body["name"])
    if body.get("scope") is not None:
        env.scope = _scope(body["scope"])
    env.updated_at = now
    env.save(using=DB)
    return env


@_atomic
def archive_environment(environment_id: str, *, now: datetime | None = None) -> Environment:
    now = now or current_time()
    env = get_environment(environment_id)
    if env.archived_at is None:
        env.archived_at = now
        env.updated_at = now
        env.save(using=DB)
    return env


@_atomic
def delete_environment(environment_id: str) -> dict[str, str]:
    env = get_environment(environment_id)
    env.delete()
    return {"id": environment_id, "type": "environment_deleted"}


def retrieve_environment(environment_id: str) -> Environment:
    return get_environment(environment_id)


def list_environments(
    *,
    include_archived: bool = False,
    limit: int = DEFAULT_PAGE_SIZE,
    page: str | None = None,
    workspace_id: str | None = None,
) -> tuple[list[Environment], str | None]:
    """The environments of ``workspace_id`` (the API key's when None), newest first."""
    query = Environment.objects.using(DB).all()
    workspace = workspace_id or default_workspace()
    query = query.filter(
        workspace_id__in=["", workspace] if workspace == default_workspace() else [workspace]
    )
    if not include_archived:
        query = query.filter(archived_at__isnull=True)
    return _newest_first_page(query, limit, page)


def all_environments() -> list[Environment]:
    return list(Environment.objects.using(DB).order_by("created_at", "id"))


# --- work: lookups and lease expiry ----------------------------------------------------------------------------


def _self_hosted(environment_id: str) -> Environment:
    env = get_environment(environment_id)
    if env.config.get("type") != "self_hosted":
        raise _bad_request(f"environment {env.id} is not a self-hosted environment")
    return env


def _item(env: Environment, work_id: str) -> WorkItem:
    item = WorkItem.objects.using(DB).filter(pk=work_id, environment=env).first()
    if item is None:
        raise EmulatorError(404, f"work item {work_id[:120]} not found in environment {env.id}")
    return item


def apply_expiries(environment_id: str, now: datetime) -> None:
    """Lazily apply lease expiry (module docstring): re-queue live items, stop stopping ones."""
    expired = WorkItem.objects.using(DB).filter(environment_id=environment_id, lease_expires_at__lte=now)
    states = dict(expired.values_list("id", "state"))
    if not states:
        return
    live = [work_id for work_id, state in states.items() if state in ("starting", "active")]
    if live:
        WorkItem.objects.using(DB).filter(pk__in=live).update(
            state="queued",
            delivered_at=None,
            delivered_to_worker_id=None,
            stored_heartbeat=None,
            lease_expires_at=None,
            acknowledged_at=None,
            started_at=None,
        )
    # The worker is presumed gone: it stopped when its lease ran out.
    WorkItem.objects.using(DB).filter(
        pk__in=[w for w, state in states.items() if state == "stopping"]
    ).update(state="stopped", stopped_at=F("lease_expires_at"), lease_expires_at=None)


def _not_before(item: WorkItem, now: datetime) -> datetime:
    # A heartbeat can be bumped a few microseconds past the clock; what happens next to the item must not
    # appear to happen before it.
    if item.latest_heartbeat_at is not None and item.latest_heartbeat_at > now:
        return item.latest_heartbeat_at
    return now


def _enter_stopped(item: WorkItem, now: datetime) -> None:
    item.state = "stopped"
    item.stopped_at = now
    item.lease_expires_at = None


def _lease_for(env_id: str, work_id: str, now: datetime) -> tuple[Environment, WorkItem]:
    # Every work item lives in a self-hosted environment, so expiry can run before the environment is looked at
    # (it changes nothing if there is none); then one query reads the item and its environment. Only when that
    # finds nothing is the environment read alone, for the right error (404 environment, 400, or 404 item).
    apply_expiries(env_id, now)
    item = (
        WorkItem.objects.using(DB)
        .select_related("environment")
        .filter(pk=work_id, environment_id=env_id)
        .first()
    )
    if item is None or item.environment.config.get("type") != "self_hosted":
        return (env := _self_hosted(env_id)), _item(env, work_id)
    return item.environment, item


# --- work: operations ------------------------------------------------------------------------------------------


@_atomic
def enqueue(
    environment_id: str,
    *,
    work_type: str = "session",
    metadata: Mapping[str, Any] | None = None,
    data_id: str | None = None,
    now: datetime | None = None,
) -> WorkItem:
    """What the Sessions API does when a session needs a sandbox (or the queue wants a health check)."""
    now = now or current_time()
    env = _self_hosted(environment_id)
    if env.archived_at is not None:
        raise _bad_request("an archived environment takes no new work", "environment_archived")
    if work_type not in ("session", "healthcheck"):
        raise _bad_request("type must be session or healthcheck")
    clean = {} if metadata is None else _metadata_patch(metadata, empty_deletes=False)
    check_metadata(clean)  # type: ignore[arg-type]
    if data_id is not None and (not isinstance(data_id, str) or not data_id):
        raise _bad_request("data id must be a non-empty string")
    return WorkItem.objects.using(DB).create(
        id=new_id("work_"),
        environment=env,
        state="queued",
        data_type=work_type,
        data_id=data_id or new_id("session_" if work_type == "session" else "healthcheck_"),
        metadata=clean,
        created_at=now,
        ttl_seconds=int(getattr(settings, "EMULATOR_LEASE_TTL_SECONDS", 60)),
    )


MAX_BULK_ITEMS: Final = 200_000
BULK_STATES: Final = ("queued", "starting", "active", "stopping", "stopped")


def _seconds(group: Mapping[str, Any], name: str, default: float | None, maximum: float) -> float | None:
    value = group.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= maximum:
        raise _bad_request(f"{name} must be a number of seconds between 0 and {maximum:g}")
    return float(value)


def _bulk_rows(env: Environment, group: Mapping[str, Any], now: datetime) -> list[WorkItem]:
    """The items of one ``bulk_create`` group (see there), oldest first."""
    if not isinstance(group, Mapping):
        raise _bad_request("each group must be an object")
    count = group.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BULK_ITEMS:
        raise _bad_request(f"count must be a whole number between 1 and {MAX_BULK_ITEMS}")
    state = group.get("state", "queued")
    if state not in BULK_STATES:
        raise _bad_request(f"state must be one of {', '.join(BULK_STATES)}")
    work_type = group.get("type", "session")
    if work_type not in ("session", "healthcheck"):
        raise _bad_request("type must be session or healthcheck")
    year = 366 * 86400.0
    age = _seconds(group, "age_seconds", 0, 10 * year) or 0.0
    spacing = (_seconds(group, "spacing_seconds", 0.001, 86400) or 0.0) or 0.000001
    ack_after = _seconds(group, "ack_after_seconds", 1.0, year) or 0.0
    stop_after = _seconds(group, "stopped_after_seconds", 1.0, year) or 0.0
    heartbeat_age = _seconds(group, "heartbeat_age_seconds", None, 10 * year)
    stop_age = _seconds(group, "stop_requested_age_seconds", None, 10 * year)
    lease = _seconds(group, "lease_expires_in_seconds", None, 10 * year)
    delivered = bool(group.get("delivered", False))
    clean = _metadata_patch(group.get("metadata") or {}, empty_deletes=False)
    check_metadata(clean)  # type: ignore[arg-type]
    ttl = int(getattr(settings, "EMULATOR_LEASE_TTL_SECONDS", 60))
    oldest = now - timedelta(seconds=age)
    if oldest + timedelta(seconds=spacing * (count - 1)) > now:
        raise _bad_request(
            "age_seconds must cover count × spacing_seconds: items cannot be created in the future"
        )
    rows: list[WorkItem] = []
    prefix = "session_" if work_type == "session" else "healthcheck_"
    for n in range(count):
        created = oldest + timedelta(seconds=spacing * n)
        item = WorkItem(
            id=new_id("work_"),
            environment=env,
            state=state,
            data_type=work_type,
            data_id=new_id(prefix),
            metadata=dict(clean),
            created_at=created,
            ttl_seconds=ttl,
        )
        if state == "queued":
            if delivered:
                item.delivered_at, item.delivery_count = created, 1
        else:
            item.delivered_at = created
            item.delivery_count = 1
            item.acknowledged_at = min(now, created + timedelta(seconds=ack_after))
        if state in ("active", "stopping") or (state == "stopped" and heartbeat_age is not None):
            beat = now - timedelta(seconds=heartbeat_age or 0.0)
            beat = max(beat, item.acknowledged_at or created)
            item.started_at = item.latest_heartbeat_at = beat
            item.stored_heartbeat = format_ts(beat)
        if state == "stopping":
            item.stop_requested_at = max(
                now - timedelta(seconds=stop_age or 0.0), item.latest_heartbeat_at or created
            )
        if state in ("starting", "active", "stopping"):
            reference = item.stop_requested_at or item.latest_heartbeat_at or item.acknowledged_at or created
            item.lease_expires_at = (
                now + timedelta(seconds=lease) if lease is not None else reference + timedelta(seconds=ttl)
            )
        if state == "stopped":
            item.stopped_at = min(
                now, max(item.latest_heartbeat_at or created, created) + timedelta(seconds=stop_after)
            )
        rows.append(item)
    return rows


@_atomic
def bulk_create(
    environment_id: str, groups: list[Mapping[str, Any]], *, now: datetime | None = None
) -> list[WorkItem]:
    """Many items at once, in any state, for tests and benchmarks (what months of traffic would leave behind).

    Each group: ``count`` items in ``state``; the oldest created ``age_seconds`` ago and each next one
    ``spacing_seconds`` later (default 1 ms); acknowledged ``ack_after_seconds`` after creation (default 1), the
    latest heartbeat ``heartbeat_age_seconds`` ago (active/stopping; default now), stop requested
    ``stop_requested_age_seconds`` ago (stopping), stopped ``stopped_after_seconds`` after the last heartbeat or
    creation (stopped); ``delivered`` (queued: pending instead of depth); the lease (starting/active/stopping)
    runs ``EMULATOR_LEASE_TTL_SECONDS`` from the last sign of life, or ends ``lease_expires_in_seconds`` from now;
    ``metadata``, ``type``. Expiry applies as to any item: an abandoned lease is re-queued on the next request.
    """
    now = now or current_time()
    env = _self_hosted(environment_id)
    if not isinstance(groups, list) or not groups:
        raise _bad_request("groups must be a non-empty list")
    rows: list[WorkItem] = []
    for group in groups:
        rows.extend(_bulk_rows(env, group, now))
        if len(rows) > MAX_BULK_ITEMS:
            raise _bad_request(f"at most {MAX_BULK_ITEMS} items at once")
    _insert(rows)
    return rows


def _insert(rows: list[WorkItem]) -> None:
    """``bulk_create`` without the ORM's per-value preparation, which costs most of the time at 100,000 rows: each
    column's values are adapted the way its field would (datetimes by the backend, JSON by its field), and the
    rows go in with ``executemany`` in batches."""
    connection = connections[DB]
    meta = WorkItem._meta
    fields = list(meta.concrete_fields)
    datetimes = {f.attname for f in fields if f.get_internal_type() == "DateTimeField"}
    jsons = {f.attname: f for f in fields if f.get_internal_type() == "JSONField"}
    adapt = connection.ops.adapt_datetimefield_value
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks})"

    def value(row: WorkItem, attname: str) -> Any:
        found = getattr(row, attname)
        if found is None:
            return None
        if attname in datetimes:
            return adapt(found)
        if attname in jsons:
            return jsons[attname].get_db_prep_save(found, connection)
        return found

    names = [f.attname for f in fields]
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 5000):
            cursor.executemany(sql, [[value(row, n) for n in names] for row in rows[start : start + 5000]])


def reclaim_window(reclaim_older_than_ms: int | None) -> timedelta:
    """How long a delivery waits for its ack before the next poll may take it (default 5 s, at most ~10 years)."""
    if reclaim_older_than_ms is None:
        return timedelta(milliseconds=DEFAULT_RECLAIM_MS)
    return timedelta(milliseconds=min(reclaim_older_than_ms, MAX_RECLAIM_MS))


@dataclass
class Delivery:
    item: WorkItem
    secret: str
    sessions_token: str = field(repr=False)


@_atomic
def poll(
    environment_id: str,
    *,
    reclaim_older_than_ms: int | None = None,
    worker_id: str | None = None,
    api_base_url: str | None = None,
    record_poll: bool = True,
    now: datetime | None = None,
) -> Delivery | None:
    """Hand out at most one item: first a delivery nobody acked within ``reclaim_older_than_ms``, else the oldest
    never-delivered one. The item stays ``queued``; it moves from depth to pending and gets a fresh secret."""
    now = now or current_time()
    env = _self_hosted(environment_id)
    apply_expiries(env.id, now)
    if worker_id and record_poll:
        # update_or_create, without its savepoint: operations never interleave, so nobody can get in between.
        seen = WorkerPoll.objects.using(DB).filter(environment=env, worker_id=worker_id)
        if not seen.update(polled_at=now):
            WorkerPoll.objects.using(DB).create(environment=env, worker_id=worker_id, polled_at=now)
    queued = WorkItem.objects.using(DB).filter(environment=env, state="queued").order_by("created_at", "id")
    cutoff = now - reclaim_window(reclaim_older_than_ms)
    for candidates in (
        queued.filter(delivered_at__isnull=False, delivered_at__lte=cutoff),
        queued.filter(delivered_at__isnull=True),
    ):
        for item in candidates[:5]:
            # Compare-and-set, so two polls can never both take the same delivery.
            taken = (
                WorkItem.objects.using(DB)
                .filter(pk=item.pk, state="queued", delivered_at=item.delivered_at)
                .update(
                    delivered_at=now,
                    delivery_count=item.delivery_count + 1,
                    delivered_to_worker_id=worker_id,
                )
            )
            if not taken:
                continue
            item.delivered_at = now
            item.delivery_count += 1
            item.delivered_to_worker_id = worker_id
            token = new_sessions_token()
            SessionsToken.objects.using(DB).filter(work_item=item, current=True).update(current=False)
            SessionsToken.objects.using(DB).create(token=token, work_item=item, current=True, created_at=now)
            return Delivery(item=item, secret=encode_secret(token, api_base_url), sessions_token=token)
    return None


def next_deliverable_in(environment_id: str, *, reclaim_older_than_ms: int | None = None) -> float | None:
    """Seconds until a poll could find something (0: now), or None if nothing is on its way. A long poll sleeps
    that long without writing; only new work, a forced expiry or a clock move (which wake it) can bring it sooner:
    a lease lasts at least ``MIN_TTL_SECONDS``, longer than any long poll waits."""
    now = current_time()
    items = WorkItem.objects.using(DB).filter(environment_id=environment_id)
    queued = items.filter(state="queued")
    if queued.filter(delivered_at__isnull=True).exists():
        return 0.0
    moments = [
        queued.filter(delivered_at__isnull=False).aggregate(soonest=Min("delivered_at"))["soonest"],
        items.filter(state__in=("starting", "active")).aggregate(soonest=Min("lease_expires_at"))["soonest"],
    ]
    if moments[0] is not None:
        moments[0] += reclaim_window(reclaim_older_than_ms)
    soonest = min((moment for moment in moments if moment is not None), default=None)
    if soonest is None:
        return None
    return max(0.0, (soonest - now).total_seconds())


@_atomic
def ack(environment_id: str, work_id: str, *, now: datetime | None = None) -> WorkItem:
    now = now or current_time()
    env, item = _lease_for(environment_id, work_id, now)
    now = _not_before(item, now)
    if item.state in ("starting", "active"):
        return item  # a repeated ack by the claimant changes nothing
    if item.state in ("stopping", "stopped"):
        raise _conflict(f"work item {item.id} is {item.state}")
    if item.delivered_at is None:
        raise _conflict(
            f"work item {item.id} has not been delivered by a poll, so there is nothing to acknowledge"
        )
    item.state = "starting"
    item.acknowledged_at = now
    item.lease_expires_at = now + timedelta(seconds=item.ttl_seconds)
    item.save(using=DB)
    return item


def _precondition_failed(item: WorkItem) -> EmulatorError:
    return EmulatorError(
        412,
        "expected_last_heartbeat does not match",
        details={"error_code": "heartbeat_precondition_failed", "current_state": lease_state_json(item)},
    )


def _next_heartbeat(item: WorkItem, now: datetime) -> datetime:
    # Every success must hand out a string never seen before for this item, even if the clock did not move.
    # latest_heartbeat_at survives a re-queue, so strings stay distinct across deliveries too.
    floor = item.latest_heartbeat_at
    if floor is not None and now <= floor:
        return floor + ONE_MICROSECOND
    return now


def parse_ttl(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        ttl = int(raw)
    except ValueError:
        raise _bad_request("desired_ttl_seconds must be a whole number") from None
    if ttl <= 0:
        raise _bad_request("desired_ttl_seconds must be positive")
    return min(max(ttl, MIN_TTL_SECONDS), MAX_TTL_SECONDS)


@_atomic
def heartbeat(
    environment_id: str,
    work_id: str,
    *,
    expected_last_heartbeat: str | None = None,
    desired_ttl_seconds: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Extend the lease under optimistic concurrency (spec §5.3). Returns the heartbeat response body."""
    now = now or current_time()
    env, item = _lease_for(environment_id, work_id, now)
    if item.state == "stopped":
        return {
            "type": "work_heartbeat",
            "last_heartbeat": item.stored_heartbeat or "",
            "lease_extended": False,
            "state": "stopped",
            "ttl_seconds": item.ttl_seconds,
        }
    if item.state == "queued":
        raise _precondition_failed(item)
    if item.state != "stopping":  # the value is not compared while stopping (SDK docstring)
        if expected_last_heartbeat == NO_HEARTBEAT:
            if item.stored_heartbeat is not None:
                raise _precondition_failed(item)
        elif expected_last_heartbeat is not None and expected_last_heartbeat != item.stored_heartbeat:
            raise _precondition_failed(item)
    if desired_ttl_seconds is not None:
        item.ttl_seconds = desired_ttl_seconds
    beat = _next_heartbeat(item, now)
    item.stored_heartbeat = format_ts(beat)
    item.latest_heartbeat_at = beat
    item.lease_expires_at = beat + timedelta(seconds=item.ttl_seconds)
    if item.state == "starting":
        item.state = "active"
        item.started_at = beat
    item.save(using=DB)
    return {
        "type": "work_heartbeat",
        "last_heartbeat": item.stored_heartbeat,
        "lease_extended": True,
        "state": item.state,
        "ttl_seconds": item.ttl_seconds,
    }


@_atomic
def stop(environment_id: str, work_id: str, *, force: bool = False, now: datetime | None = None) -> WorkItem:
    now = now or current_time()
    env, item = _lease_for(environment_id, work_id, now)
    now = _not_before(item, now)
    if item.state == "stopped":
        raise _conflict(f"work item {item.id} is already stopped")
    if not force and item.state in ("starting", "active"):
        item.state = "stopping"
        item.stop_requested_at = now
    else:
        _enter_stopped(item, now)
    item.save(using=DB)
    return item


@_atomic
def server_stop(environment_id: str, work_id: str, *, now: datetime | None = None) -> WorkItem:
    """The session ended on the server's side: a running item moves to ``stopping`` so its next heartbeat says so;
    a queued one (nothing running) stops; a stopping one is left alone."""
    now = now or current_time()
    env, item = _lease_for(environment_id, work_id, now)
    now = _not_before(item, now)
    if item.state == "stopped":
        raise _conflict(f"work item {item.id} is already stopped")
    if item.state in ("starting", "active"):
        item.state = "stopping"
        item.stop_requested_at = now
    elif item.state == "queued":
        _enter_stopped(item, now)
    item.save(using=DB)
    return item


@_atomic
def expire_lease(environment_id: str, work_id: str, *, now: datetime | None = None) -> WorkItem:
    """Make a leased item's lease run out now (as if its worker vanished), then apply expiry."""
    now = now or current_time()
    env, item = _lease_for(environment_id, work_id, now)
    if item.lease_expires_at is None:
        raise _conflict(f"work item {item.id} holds no lease ({item.state})")
    WorkItem.objects.using(DB).filter(pk=item.pk).update(lease_expires_at=now)
    apply_expiries(env.id, now)
    item.refresh_from_db(using=DB)
    return item


@_atomic
def retrieve(environment_id: str, work_id: str, *, now: datetime | None = None) -> WorkItem:
    now = now or current_time()
    return _lease_for(environment_id, work_id, now)[1]


@_atomic
def update_metadata(
    environment_id: str, work_id: str, body: Mapping[str, Any], *, now: datetime | None = None
) -> WorkItem:
    now = now or current_time()
    env, item = _lease_for(environment_id, work_id, now)
    if "metadata" in body and body["metadata"] is not None:
        item.metadata = merge_metadata(item.metadata, _metadata_patch(body["metadata"], empty_deletes=False))
        item.save(using=DB)
    return item


@_atomic
def list_work(
    environment_id: str,
    *,
    limit: int = DEFAULT_PAGE_SIZE,
    page: str | None = None,
    now: datetime | None = None,
) -> tuple[list[WorkItem], str | None]:
    now = now or current_time()
    env = _self_hosted(environment_id)
    apply_expiries(env.id, now)
    return _newest_first_page(WorkItem.objects.using(DB).filter(environment=env), limit, page)


@_atomic
def stats(environment_id: str, *, now: datetime | None = None) -> dict[str, Any]:
    now = now or current_time()
    env = _self_hosted(environment_id)
    apply_expiries(env.id, now)
    queue = (
        WorkItem.objects.using(DB)
        .filter(environment=env, state="queued")
        .aggregate(
            depth=Count("pk", filter=Q(delivered_at__isnull=True)),
            pending=Count("pk", filter=Q(delivered_at__isnull=False)),
            oldest=Min("created_at"),
        )
    )
    return {
        "type": "work_queue_stats",
        "depth": queue["depth"],
        "pending": queue["pending"],
        "oldest_queued_at": format_optional(queue["oldest"]),
        "workers_polling": WorkerPoll.objects.using(DB)
        .filter(environment=env, polled_at__gte=now - WORKERS_POLLING_WINDOW)
        .count(),
    }


@_atomic
def reset() -> None:
    """Wipe every environment, item, token, poll record, and the clock offset."""
    SessionsToken.objects.using(DB).all().delete()
    WorkerPoll.objects.using(DB).all().delete()
    WorkItem.objects.using(DB).all().delete()
    Environment.objects.using(DB).all().delete()
    Clock.objects.using(DB).all().delete()
