"""Typed records for what the Work API returns, parsed strictly, and the decoder of a work item's ``secret``.

Each record is a frozen dataclass built by ``from_json`` from the decoded JSON, which it keeps as ``.raw``.
A missing or mistyped field raises ``MalformedResponse`` naming the field, so a change upstream shows up as one
clear error instead of a ``KeyError`` three layers away. Timestamps become timezone-aware datetimes.

What does not live here: how the JSON is fetched (``workqueue.client``), and metadata limits (``workqueue.ids``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

from workqueue.errors import InvalidSecret, MalformedResponse

__all__ = [
    "NO_HEARTBEAT",
    "WORK_STATES",
    "Environment",
    "Heartbeat",
    "LeaseState",
    "Page",
    "QueueStats",
    "WorkData",
    "WorkItem",
    "WorkSecret",
    "decode_secret",
    "parse_timestamp",
]

WORK_STATES: Final = ("queued", "starting", "active", "stopping", "stopped")

# Sent as expected_last_heartbeat to claim a lease nobody has heartbeated yet.
NO_HEARTBEAT: Final = "NO_HEARTBEAT"

_TIMESTAMP_RE: Final = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})"
)

T = TypeVar("T")


def _malformed(what: str, path: str) -> MalformedResponse:
    detail = f"{path} {what}"
    return MalformedResponse(
        f"The Work API sent a response that could not be understood: {detail}.", detail=detail
    )


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 timestamp (``2026-07-01T08:15:06.120394Z``) as an aware datetime; ``ValueError`` otherwise.

    Python's own parser is laxer (it accepts dates without a time or an offset); the upstream always sends both.
    Fractions beyond microseconds are truncated.
    """
    match = _TIMESTAMP_RE.fullmatch(value)
    if not match:
        raise ValueError(f"not an RFC 3339 timestamp: {value[:40]!r}")
    fraction = (match["fraction"] or "").ljust(6, "0")[:6]
    offset = "+00:00" if match["offset"] in ("Z", "z") else match["offset"]
    return datetime.fromisoformat(f"{match['date']}T{match['time']}.{fraction}{offset}")


class _Fields:
    """Typed access to one JSON object's fields, raising MalformedResponse with the field's path."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise _malformed(f"should be an object but is {_json_type(data)}", path)
        self.data: dict[str, Any] = data
        self.path = path

    def _get(self, name: str, optional: bool) -> Any:
        if name not in self.data:
            if optional:
                return None
            raise _malformed("is missing", f"{self.path}.{name}")
        return self.data[name]

    def _check(self, name: str, value: Any, kind: type | tuple[type, ...], label: str) -> Any:
        # bool is an int in Python, never in JSON.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise _malformed(f"should be {label} but is a boolean", f"{self.path}.{name}")
        if not isinstance(value, kind):
            raise _malformed(f"should be {label} but is {_json_type(value)}", f"{self.path}.{name}")
        return value

    def string(self, name: str) -> str:
        value: str = self._check(name, self._get(name, False), str, "a string")
        return value

    def optional_str(self, name: str) -> str | None:
        value = self._get(name, True)
        return None if value is None else self._check(name, value, str, "a string or null")

    def integer(self, name: str) -> int:
        value: int = self._check(name, self._get(name, False), int, "an integer")
        return value

    def optional_int(self, name: str) -> int | None:
        value = self._get(name, True)
        return None if value is None else self._check(name, value, int, "an integer or null")

    def boolean(self, name: str) -> bool:
        value: bool = self._check(name, self._get(name, False), bool, "true or false")
        return value

    def timestamp(self, name: str) -> datetime:
        return self._parse_timestamp(name, self.string(name))

    def optional_timestamp(self, name: str) -> datetime | None:
        value = self.optional_str(name)
        return None if value is None else self._parse_timestamp(name, value)

    def _parse_timestamp(self, name: str, value: str) -> datetime:
        try:
            return parse_timestamp(value)
        except ValueError:
            raise _malformed("is not an RFC 3339 timestamp", f"{self.path}.{name}") from None

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.string(name)
        if value not in choices:
            raise _malformed(f"is {value[:40]!r}, not one of {', '.join(choices)}", f"{self.path}.{name}")
        return value

    def literal_if_present(self, name: str, expected: str) -> None:
        if name in self.data and self.data[name] != expected:
            raise _malformed(f"should be {expected!r}", f"{self.path}.{name}")

    def string_map(self, name: str) -> dict[str, str]:
        value = self._get(name, False)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _malformed("should be an object of strings", f"{self.path}.{name}")
        return dict(value)

    def object(self, name: str) -> _Fields:
        return _Fields(self._get(name, False), f"{self.path}.{name}")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class WorkData:
    """What the work item is for: a session (``id`` = ``session_…``) or a healthcheck."""

    type: str
    id: str


@dataclass(frozen=True)
class WorkItem:
    id: str
    environment_id: str
    state: str
    data: WorkData
    metadata: dict[str, str]
    created_at: datetime
    acknowledged_at: datetime | None
    started_at: datetime | None
    latest_heartbeat_at: datetime | None
    stop_requested_at: datetime | None
    stopped_at: datetime | None
    # Only a poll returns it; never show it to anyone (it holds the item's sessions token).
    secret: str | None = field(repr=False)
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> WorkItem:
        f = _Fields(data, "work item")
        f.literal_if_present("type", "work")
        work_data = f.object("data")
        return cls(
            id=f.string("id"),
            environment_id=f.string("environment_id"),
            state=f.choice("state", WORK_STATES),
            data=WorkData(type=work_data.string("type"), id=work_data.string("id")),
            metadata=f.string_map("metadata"),
            created_at=f.timestamp("created_at"),
            acknowledged_at=f.optional_timestamp("acknowledged_at"),
            started_at=f.optional_timestamp("started_at"),
            latest_heartbeat_at=f.optional_timestamp("latest_heartbeat_at"),
            stop_requested_at=f.optional_timestamp("stop_requested_at"),
            stopped_at=f.optional_timestamp("stopped_at"),
            secret=f.optional_str("secret"),
            raw=f.data,
        )


@dataclass(frozen=True)
class QueueStats:
    depth: int  # queued and never delivered
    pending: int  # delivered by a poll, not yet acknowledged
    oldest_queued_at: datetime | None
    workers_polling: int | None  # distinct worker ids that polled in the last 30 s
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> QueueStats:
        f = _Fields(data, "queue stats")
        f.literal_if_present("type", "work_queue_stats")
        return cls(
            depth=f.integer("depth"),
            pending=f.integer("pending"),
            oldest_queued_at=f.optional_timestamp("oldest_queued_at"),
            workers_polling=f.optional_int("workers_polling"),
            raw=f.data,
        )


@dataclass(frozen=True)
class Heartbeat:
    # Echo this exact string as the next expected_last_heartbeat; "" when none has been recorded.
    last_heartbeat: str
    lease_extended: bool
    state: str
    ttl_seconds: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> Heartbeat:
        f = _Fields(data, "heartbeat")
        f.literal_if_present("type", "work_heartbeat")
        return cls(
            last_heartbeat=f.string("last_heartbeat"),
            lease_extended=f.boolean("lease_extended"),
            state=f.choice("state", WORK_STATES),
            ttl_seconds=f.integer("ttl_seconds"),
            raw=f.data,
        )


@dataclass(frozen=True)
class LeaseState:
    """The server's view of a lease, sent with a 412 heartbeat answer (``last_heartbeat`` is null if none)."""

    last_heartbeat: str | None
    lease_extended: bool
    state: str
    ttl_seconds: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> LeaseState:
        f = _Fields(data, "lease state")
        return cls(
            last_heartbeat=f.optional_str("last_heartbeat"),
            lease_extended=f.boolean("lease_extended"),
            state=f.choice("state", WORK_STATES),
            ttl_seconds=f.integer("ttl_seconds"),
            raw=f.data,
        )


@dataclass(frozen=True)
class Environment:
    id: str
    name: str
    description: str | None
    config_type: str  # "self_hosted" or "cloud"
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    scope: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> Environment:
        f = _Fields(data, "environment")
        f.literal_if_present("type", "environment")
        return cls(
            id=f.string("id"),
            name=f.string("name"),
            description=f.optional_str("description"),
            config_type=f.object("config").string("type"),
            metadata=f.string_map("metadata"),
            created_at=f.timestamp("created_at"),
            updated_at=f.timestamp("updated_at"),
            archived_at=f.optional_timestamp("archived_at"),
            scope=f.optional_str("scope"),
            raw=f.data,
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    data: list[T]
    next_page: str | None  # pass back as `page` for the next page; None on the last one
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: object, item: Callable[[object], T]) -> Page[T]:
        f = _Fields(data, "page")
        items = f.data.get("data")
        if not isinstance(items, list):
            raise _malformed("should be an array", "page.data")
        next_page = f.optional_str("next_page")
        # An empty cursor means the same as none: there is nothing after this page.
        return cls(data=[item(entry) for entry in items], next_page=next_page or None, raw=f.data)


@dataclass(frozen=True)
class WorkSecret:
    """The decoded ``secret`` of a polled work item: the bearer for this item's calls, and where to send them."""

    sessions_token: str = field(repr=False)
    api_base_url: str | None
    extra: dict[str, Any] = field(repr=False)


_BASE64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def decode_secret(value: str) -> WorkSecret:
    """Decode a work item's ``secret``: base64url (padding optional) of a JSON object with ``sessions_token``.

    Raises ``InvalidSecret`` (a ``ValueError``) saying what is wrong, never quoting the secret itself.
    """
    if not isinstance(value, str) or not value:
        raise InvalidSecret("The work secret is empty or not a string.")
    if not _BASE64URL_RE.fullmatch(value):
        raise InvalidSecret(
            "The work secret is not base64url-encoded (it contains characters outside A-Z a-z 0-9 - _)."
        )
    unpadded = value.rstrip("=")
    if len(unpadded) % 4 == 1:
        raise InvalidSecret("The work secret is not base64url-encoded (its length is impossible).")
    try:
        decoded = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
        payload = json.loads(decoded.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidSecret("The work secret does not decode to JSON.") from None
    if not isinstance(payload, dict):
        raise InvalidSecret("The work secret does not decode to a JSON object.")
    token = payload.get("sessions_token")
    if not isinstance(token, str) or not token:
        raise InvalidSecret("The work secret has no sessions_token.")
    api_base_url = payload.get("api_base_url")
    if api_base_url is not None and not isinstance(api_base_url, str):
        raise InvalidSecret("The work secret's api_base_url is not a string.")
    extra = {k: v for k, v in payload.items() if k not in ("sessions_token", "api_base_url")}
    return WorkSecret(sessions_token=token, api_base_url=api_base_url, extra=extra)
