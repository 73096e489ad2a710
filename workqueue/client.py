"""The Work API client: every call the project makes to the upstream goes through here.

``WorkAPIClient`` (async, httpx.AsyncClient) puts on the wire what the official ``anthropic`` SDK 2.10.0 puts there
for the same call: method, path, query, JSON body, ``Authorization: Bearer``, ``anthropic-version``,
``anthropic-beta`` and ``anthropic-workspace-id``. Code that runs in a thread of its own drives it on an event loop
of its own (``asyncio.Runner``), the way the dashboard's bulk runner does.

``_Requests`` builds each call and validates its ids before anything is sent, without I/O; ``_Answers`` turns a
response into a record or a ``WorkAPIError``, and decides whether to retry. Policy:

- every call has a timeout, and no response body is read past ``MAX_BODY_BYTES``;
- reads (retrieve, list, stats, environments) retry connection failures, timeouts, 408, 409, 429 and 5xx at most
  ``max_retries`` times (2, as the SDK), with exponential backoff and jitter, honouring ``retry-after-ms`` /
  ``retry-after`` and ``x-should-retry``, within ``retry_total`` seconds: a wait the server asks for that does not
  fit in what is left of ``retry_total`` gives up at once, the error saying how long the server asked to wait
  (the SDK would sleep it out);
- calls that change something (update, stop, poll, ack, heartbeat) are never retried: the caller decides;
- a 409 on stop is ``AlreadyStopped`` at once.

Records and errors are re-exported from here, so callers import everything from ``workqueue.client``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Generic, Self, TypeVar
from urllib.parse import quote

import httpx

from workqueue.errors import (
    AlreadyStopped,
    AuthenticationFailed,
    BadRequest,
    Conflict,
    ConnectionFailed,
    InvalidID,
    InvalidMetadata,
    InvalidSecret,
    MalformedResponse,
    NotFound,
    Overloaded,
    PermissionDenied,
    PreconditionFailed,
    RateLimited,
    ServerError,
    Unavailable,
    UpstreamTimeout,
    WorkAPIError,
    redact,
)
from workqueue.ids import METADATA_LIMITS, validate_environment_id, validate_metadata, validate_work_id
from workqueue.records import (
    NO_HEARTBEAT,
    WORK_STATES,
    Environment,
    Heartbeat,
    LeaseState,
    Page,
    QueueStats,
    WorkData,
    WorkItem,
    WorkSecret,
    decode_secret,
)

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_BASE_URL",
    "MANAGED_AGENTS_BETA",
    "MAX_BODY_BYTES",
    "METADATA_LIMITS",
    "NO_HEARTBEAT",
    "WORK_STATES",
    "AlreadyStopped",
    "AuthenticationFailed",
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "Environment",
    "Heartbeat",
    "InvalidID",
    "InvalidMetadata",
    "InvalidSecret",
    "LeaseState",
    "MalformedResponse",
    "NotFound",
    "Overloaded",
    "Page",
    "PermissionDenied",
    "PreconditionFailed",
    "QueueStats",
    "RateLimited",
    "ServerError",
    "Unavailable",
    "UpstreamTimeout",
    "WorkAPIClient",
    "WorkAPIError",
    "WorkData",
    "WorkItem",
    "WorkSecret",
    "decode_secret",
    "tls_context",
    "validate_environment_id",
    "validate_metadata",
    "validate_work_id",
]

DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
# The SDK 2.10.0 values (anthropic._constants.ANTHROPIC_API_VERSION, and the beta every method adds last).
ANTHROPIC_VERSION: Final = "2026-10-21"
MANAGED_AGENTS_BETA: Final = "managed-agents-2026-04-01"
# No answer of this API comes near this; a bigger one is a fault, not something to hold in memory.
MAX_BODY_BYTES: Final = 5 * 1024 * 1024
USER_AGENT: Final = "workqueue-dashboard/0.1"

# Backoff between read retries: 0.5 s doubling up to 8 s, scaled by a jitter factor in (0.75, 1] (as the SDK does).
# Retry policy of reads: the SDK's count (2 retries, so 3 attempts at most) and backoff (0.5 s doubling, at most
# 8 s, less up to a quarter of jitter).
DEFAULT_MAX_RETRIES: Final = 2
_INITIAL_RETRY_DELAY: Final = 0.5
_MAX_RETRY_DELAY: Final = 8.0

# Printable ASCII without spaces: anything else in a header would be refused by httpx with an error that quotes it.
_HEADER_TOKEN_RE: Final = re.compile(r"[\x21-\x7e]+")
_WORKER_ID_RE: Final = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")

T = TypeVar("T")


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request, ready to send, with what is needed to explain its failure to a person."""

    operation: str  # the method name, e.g. "stop_work"
    method: str
    path: str
    params: tuple[tuple[str, str], ...]
    headers: dict[str, str]
    body: bytes | None
    timeout: float
    retried: bool  # reads only
    action: str  # "stop work item work_x in environment env_y", for "... while trying to <action>"
    not_found: str  # the sentence for a 404
    credential_name: str  # "API key", "environment key" or "credential", never the value
    credential: str  # only for scrubbing it out of upstream text
    parse: Callable[[object], T]
    none_allowed: bool = False  # poll answers JSON null when there is no work


def _segment(value: str) -> str:
    # The SDK's path_template quoting (RFC 3986 pchar minus '/'); ids are validated first, so this is belt and braces.
    return quote(value, safe="!$&'()*+,;=:@")


def _query(**values: object) -> tuple[tuple[str, str], ...]:
    # Like the SDK: None is not sent at all, booleans are lowercase.
    pairs = []
    for name, value in values.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        pairs.append((name, text))
    return tuple(pairs)


def _json_body(value: Mapping[str, object]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one TLS context: building the CA bundle costs ~50 ms, so every client and transport shares it."""
    return httpx.create_ssl_context()


def _checked_credential(value: str | None, name: str) -> str:
    if not value:
        raise AuthenticationFailed(f"No {name} is configured for this call to the Work API.")
    if not isinstance(value, str) or not _HEADER_TOKEN_RE.fullmatch(value):
        raise AuthenticationFailed(
            f"The {name} contains spaces or characters that cannot be sent in a header; check how it was copied."
        )
    return value


def _checked_metadata_patch(metadata: Mapping[str, str | None]) -> dict[str, str | None]:
    """The patch as a dict; raises InvalidMetadata before any request for what no merge could make valid."""
    if not isinstance(metadata, Mapping):
        raise InvalidMetadata("The metadata patch must be a mapping of keys to strings or None.")
    patch = dict(metadata)
    problems = [
        f"The value of metadata key {k!r} must be a string or None."
        for k, v in patch.items()
        if v is not None and not isinstance(v, str)
    ]
    upserts = {k: v for k, v in patch.items() if isinstance(v, str) or not isinstance(k, str)}
    problems += validate_metadata(upserts)
    problems += [
        f"Metadata key {k[:40]!r} is {len(k)} characters long (at most {METADATA_LIMITS['max_key_len']})."
        for k, v in patch.items()
        if v is None and isinstance(k, str) and len(k) > METADATA_LIMITS["max_key_len"]
    ]
    if problems:
        raise InvalidMetadata("The metadata was not sent: " + " ".join(problems))
    return patch


class _Requests:
    """Builds every call of the Work API exactly as the SDK would send it. Shared by the async and sync clients."""

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str,
        timeout: float,
        retry_total: float,
        workspace_id: str | None,
        betas: tuple[str, ...],
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retry_total < 0:
            raise ValueError("retry_total must not be negative")
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        self.max_retries = int(max_retries)
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("base_url must be an http:// or https:// URL")
        # A base path is kept as a prefix, as in the SDK; credentials in the URL are not ours to send.
        self.base_url = str(url.copy_with(username=None, password=None, query=None, fragment=None)).rstrip(
            "/"
        )
        self.api_key = api_key
        self.timeout = float(timeout)
        self.retry_total = float(retry_total)
        if workspace_id is not None and not _HEADER_TOKEN_RE.fullmatch(workspace_id):
            raise ValueError("workspace_id must be printable ASCII without spaces")
        self.workspace_id = workspace_id
        self.betas = tuple(betas)
        for beta in self.betas:
            if not _HEADER_TOKEN_RE.fullmatch(beta) or "," in beta:
                raise ValueError(f"invalid beta name {beta!r}")

    def _headers(
        self, method: str, credential: str, *, workspace: bool, worker_id: str | None = None
    ) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {credential}",
            "anthropic-version": ANTHROPIC_VERSION,
            # The SDK joins the caller's betas first and always appends its own, without de-duplicating.
            "anthropic-beta": ",".join((*self.betas, MANAGED_AGENTS_BETA)),
            "accept": "application/json",
            "user-agent": USER_AGENT,
        }
        # Only the endpoints whose SDK methods take workspace_id send it.
        if workspace and self.workspace_id is not None:
            headers["anthropic-workspace-id"] = self.workspace_id
        if worker_id is not None:
            headers["Anthropic-Worker-ID"] = worker_id
        # The SDK declares JSON on every non-GET, even with no body (ack, heartbeat).
        if method != "GET":
            headers["content-type"] = "application/json"
        return headers

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        parse: Callable[[object], T],
        *,
        credential: str,
        credential_name: str,
        workspace: bool,
        action: str,
        not_found: str,
        params: tuple[tuple[str, str], ...] = (),
        body: bytes | None = None,
        worker_id: str | None = None,
        extra_timeout: float = 0.0,
        none_allowed: bool = False,
    ) -> _Call[T]:
        return _Call(
            operation=operation,
            method=method,
            path=path,
            params=params,
            headers=self._headers(method, credential, workspace=workspace, worker_id=worker_id),
            body=body,
            timeout=self.timeout + extra_timeout,
            retried=method == "GET" and operation != "poll_work",
            action=action,
            not_found=not_found,
            credential_name=credential_name,
            credential=credential,
            parse=parse,
            none_allowed=none_allowed,
        )

    def url(self, call: _Call[Any]) -> str:
        return self.base_url + call.path

    # --- API-key calls -------------------------------------------------------------------------------------

    def list_environments(
        self, include_archived: bool | None, limit: int | None, page: str | None
    ) -> _Call[Page[Environment]]:
        return self._call(
            "list_environments",
            "GET",
            "/v1/environments",
            lambda d: Page.parse(d, Environment.from_json),
            credential=_checked_credential(self.api_key, "API key"),
            credential_name="API key",
            workspace=True,
            action="list environments",
            not_found="The environments list was not found at this base URL.",
            params=_query(include_archived=include_archived, limit=limit, page=page),
        )

    def retrieve_environment(self, environment_id: str) -> _Call[Environment]:
        env = validate_environment_id(environment_id)
        return self._call(
            "retrieve_environment",
            "GET",
            f"/v1/environments/{_segment(env)}",
            Environment.from_json,
            credential=_checked_credential(self.api_key, "API key"),
            credential_name="API key",
            workspace=True,
            action=f"retrieve environment {env}",
            not_found=f"Environment {env} was not found.",
        )

    def retrieve_work(self, environment_id: str, work_id: str) -> _Call[WorkItem]:
        env, work = validate_environment_id(environment_id), validate_work_id(work_id)
        return self._call(
            "retrieve_work",
            "GET",
            f"/v1/environments/{_segment(env)}/work/{_segment(work)}",
            WorkItem.from_json,
            credential=_checked_credential(self.api_key, "API key"),
            credential_name="API key",
            workspace=True,
            action=f"retrieve work item {work} in environment {env}",
            not_found=f"Work item {work} was not found in environment {env}.",
        )

    def update_work_metadata(
        self, environment_id: str, work_id: str, metadata: Mapping[str, str | None]
    ) -> _Call[WorkItem]:
        env, work = validate_environment_id(environment_id), validate_work_id(work_id)
        patch = _checked_metadata_patch(metadata)
        return self._call(
            "update_work_metadata",
            "POST",
            f"/v1/environments/{_segment(env)}/work/{_segment(work)}",
            WorkItem.from_json,
            credential=_checked_credential(self.api_key, "API key"),
            credential_name="API key",
            workspace=True,
            action=f"update the metadata of work item {work} in environment {env}",
            not_found=f"Work item {work} was not found in environment {env}.",
            body=_json_body({"metadata": patch}),
        )

    def stop_work(
        self, environment_id: str, work_id: str, force: bool | None, credential: str | None
    ) -> _Call[WorkItem]:
        env, work = validate_environment_id(environment_id), validate_work_id(work_id)
        name = "API key" if credential is None else "credential"
        how = "force-stop" if force else "stop"
        return self._call(
            "stop_work",
            "POST",
            f"/v1/environments/{_segment(env)}/work/{_segment(work)}/stop",
            WorkItem.from_json,
            credential=_checked_credential(self.api_key if credential is None else credential, name),
            credential_name=name,
            workspace=True,
            action=f"{how} work item {work} in environment {env}",
            not_found=f"Work item {work} was not found in environment {env}.",
            # Always a JSON object: {} when force is not given.
            body=_json_body({} if force is None else {"force": bool(force)}),
        )

    def work_stats(self, environment_id: str) -> _Call[QueueStats]:
        env = validate_environment_id(environment_id)
        return self._call(
            "work_stats",
            "GET",
            f"/v1/environments/{_segment(env)}/work/stats",
            QueueStats.from_json,
            credential=_checked_credential(self.api_key, "API key"),
            credential_name="API key",
            workspace=True,
            action=f"read the queue stats of environment {env}",
            not_found=f"Environment {env} was not found.",
        )

    # --- environment-key calls -----------------------------------------------------------------------------

    def list_work(
        self, environment_id: str, environment_key: str, limit: int | None, page: str | None
    ) -> _Call[Page[WorkItem]]:
        env = validate_environment_id(environment_id)
        return self._call(
            "list_work",
            "GET",
            f"/v1/environments/{_segment(env)}/work",
            lambda d: Page.parse(d, WorkItem.from_json),
            credential=_checked_credential(environment_key, "environment key"),
            credential_name="environment key",
            workspace=False,
            action=f"list the work items of environment {env}",
            not_found=f"Environment {env} was not found.",
            params=_query(limit=limit, page=page),
        )

    def poll_work(
        self,
        environment_id: str,
        environment_key: str,
        block_ms: int | None,
        reclaim_older_than_ms: int | None,
        worker_id: str | None,
    ) -> _Call[WorkItem | None]:
        env = validate_environment_id(environment_id)
        if worker_id is not None and not (isinstance(worker_id, str) and _WORKER_ID_RE.fullmatch(worker_id)):
            raise InvalidID(
                "The worker id must be 1 to 255 printable ASCII characters, not starting with a space."
            )
        return self._call(
            "poll_work",
            "GET",
            f"/v1/environments/{_segment(env)}/work/poll",
            WorkItem.from_json,
            credential=_checked_credential(environment_key, "environment key"),
            credential_name="environment key",
            workspace=False,
            action=f"poll for work in environment {env}",
            not_found=f"Environment {env} was not found.",
            params=_query(block_ms=block_ms, reclaim_older_than_ms=reclaim_older_than_ms),
            worker_id=worker_id,
            # A long poll may legitimately hold the answer back for block_ms.
            extra_timeout=(block_ms or 0) / 1000,
            none_allowed=True,
        )

    def ack_work(self, environment_id: str, work_id: str, credential: str) -> _Call[WorkItem]:
        env, work = validate_environment_id(environment_id), validate_work_id(work_id)
        return self._call(
            "ack_work",
            "POST",
            f"/v1/environments/{_segment(env)}/work/{_segment(work)}/ack",
            WorkItem.from_json,
            credential=_checked_credential(credential, "credential"),
            credential_name="credential",
            workspace=False,
            action=f"acknowledge work item {work} in environment {env}",
            not_found=f"Work item {work} was not found in environment {env}.",
        )

    def heartbeat_work(
        self,
        environment_id: str,
        work_id: str,
        credential: str,
        expected_last_heartbeat: str | None,
        desired_ttl_seconds: int | None,
    ) -> _Call[Heartbeat]:
        env, work = validate_environment_id(environment_id), validate_work_id(work_id)
        return self._call(
            "heartbeat_work",
            "POST",
            f"/v1/environments/{_segment(env)}/work/{_segment(work)}/heartbeat",
            Heartbeat.from_json,
            credential=_checked_credential(credential, "credential"),
            credential_name="credential",
            workspace=False,
            action=f"heartbeat work item {work} in environment {env}",
            not_found=f"Work item {work} was not found in environment {env}.",
            # The SDK sends both as query parameters, in this order, and no body.
            params=_query(
                desired_ttl_seconds=desired_ttl_seconds, expected_last_heartbeat=expected_last_heartbeat
            ),
        )


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asked us to wait: retry-after-ms, else retry-after as seconds or an HTTP date."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / scale
        except ValueError:
            continue
        if value == value and value >= 0:  # not NaN
            return value
    raw = headers.get("retry-after")
    if raw:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def _string_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _wait_phrase(seconds: float | None) -> str:
    if seconds is None or seconds <= 0:
        return "Try again shortly."
    return (
        f"Try again in {seconds:.3g} s." if seconds < 120 else f"Try again in {round(seconds / 60)} minutes."
    )


class _Body:
    """Collects a response body up to MAX_BODY_BYTES and within the call's deadline."""

    def __init__(self, response: httpx.Response, call: _Call[Any], started: float, limit: int) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.too_large = False
        self.deadline = started + call.timeout
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            self.too_large = True

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk``; False once the body is over the limit (stop reading)."""
        self.size += len(chunk)
        if self.size > self.limit:
            self.too_large = True
            self.chunks.clear()
            return False
        self.chunks.append(chunk)
        if time.monotonic() > self.deadline:
            # The per-read timeout does not bound a body that trickles in; this does.
            raise httpx.ReadTimeout("the response body took too long")
        return True

    def content(self) -> bytes | None:
        return None if self.too_large else b"".join(self.chunks)


class _Answers:
    """Turns what came back (or failed to) into a record or a WorkAPIError, and decides on retries."""

    def __init__(self, requests: _Requests) -> None:
        self.requests = requests

    def transport_error(self, call: _Call[Any], exc: httpx.HTTPError) -> WorkAPIError:
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(
                f"The Work API did not answer within {call.timeout:g} s while trying to {call.action}. "
                "Try again shortly."
            )
        if isinstance(exc, httpx.DecodingError):
            return MalformedResponse(
                f"The Work API's answer could not be decoded while trying to {call.action}.",
                detail="the body could not be decoded",
            )
        reason = redact(str(exc), call.credential).strip() or type(exc).__name__
        return ConnectionFailed(
            f"Could not reach the Work API at {self.requests.base_url} to {call.action}: {reason[:200]}. "
            "Check that it is running and the base URL is right."
        )

    def result(self, call: _Call[T], response: httpx.Response, body: bytes | None) -> T:
        """The parsed record for a 2xx answer; raises the matching WorkAPIError otherwise."""
        status = response.status_code
        if not 200 <= status < 300:
            raise self.status_error(call, response, body)
        request_id = response.headers.get("request-id")

        def malformed(detail: str) -> MalformedResponse:
            return MalformedResponse(
                f"The Work API's answer could not be understood while trying to {call.action}: {detail}.",
                detail=detail,
                status=status,
                request_id=request_id,
            )

        if body is None:
            raise malformed(f"the body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB")
        content_type = response.headers.get("content-type", "")
        if not _is_json(content_type):
            shown = redact(content_type.split(";", 1)[0].strip(), call.credential)[:60] or "none"
            raise malformed(f"its content type is {shown!r}, not JSON")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise malformed("the body is not valid JSON") from None
        if data is None and call.none_allowed:
            return None  # type: ignore[return-value]  # T is Optional for the calls that allow null
        try:
            return call.parse(data)
        except MalformedResponse as exc:
            raise malformed(exc.detail) from None

    def status_error(self, call: _Call[Any], response: httpx.Response, body: bytes | None) -> WorkAPIError:
        status = response.status_code
        envelope: object = None
        if body:
            try:
                envelope = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                envelope = None
        error = envelope.get("error") if isinstance(envelope, dict) else None
        error = error if isinstance(error, dict) else {}
        details = error.get("details")
        details = details if isinstance(details, dict) else {}
        error_type = _string_or_none(error.get("type"))
        error_code = _string_or_none(details.get("error_code"))
        upstream_message = _string_or_none(error.get("message")) or ""
        request_id = response.headers.get("request-id")
        if not request_id and isinstance(envelope, dict) and isinstance(envelope.get("request_id"), str):
            request_id = envelope["request_id"]
        retry_after = _retry_after(response.headers)
        said = redact(upstream_message, call.credential).strip()[:300]
        quoted = f": {said}" if said else "."
        common: dict[str, Any] = {
            "status": status,
            "request_id": request_id,
            "error_type": error_type,
            "error_code": error_code,
            "retry_after": retry_after,
        }

        exc: WorkAPIError
        if status == 400 and error_code == "invalid_metadata":
            exc = InvalidMetadata(f"The Work API refused the metadata (400){quoted}", **common)
        elif status == 401:
            exc = AuthenticationFailed(
                f"The Work API did not accept the {call.credential_name} while trying to {call.action} (401). "
                f"Check that the {call.credential_name} is the right one and has not been revoked.",
                **common,
            )
        elif status == 403:
            exc = PermissionDenied(
                f"The {call.credential_name} is not allowed to {call.action} (403){quoted}", **common
            )
        elif status == 404:
            exc = NotFound(call.not_found, **common)
        elif status == 408:
            exc = UpstreamTimeout(
                f"The Work API timed out while trying to {call.action} (408). {_wait_phrase(retry_after)}",
                **common,
            )
        elif status == 409 and call.operation == "stop_work":
            exc = AlreadyStopped(call.not_found.replace("was not found", "is already stopped"), **common)
        elif status == 409:
            # On a read, a 409 is a lock that timed out on the server: trying again can help (the SDK does too).
            exc = Conflict(
                f"The Work API reported a conflict while trying to {call.action} (409){quoted}",
                retryable=call.retried,
                **common,
            )
        elif status == 412:
            lease_state = None
            if isinstance(details.get("current_state"), dict):
                try:
                    lease_state = LeaseState.from_json(details["current_state"])
                except MalformedResponse:
                    lease_state = None
            now = f" The item is now {lease_state.state}." if lease_state else ""
            exc = PreconditionFailed(
                f"The Work API refused to {call.action} (412): the lease changed or is held by another worker.{now}",
                lease_state=lease_state,
                **common,
            )
        elif status == 429:
            exc = RateLimited(
                f"The Work API is rate limiting requests (429). {_wait_phrase(retry_after)}", **common
            )
        elif status == 503:
            exc = Unavailable(f"The Work API is unavailable (503). {_wait_phrase(retry_after)}", **common)
        elif status == 529:
            exc = Overloaded(f"The Work API is overloaded (529). {_wait_phrase(retry_after)}", **common)
        elif status >= 500:
            exc = ServerError(
                f"The Work API failed while trying to {call.action} ({status}). {_wait_phrase(retry_after)}",
                **common,
            )
        elif status >= 400:
            exc = BadRequest(f"The Work API refused to {call.action} ({status}){quoted}", **common)
        else:
            exc = MalformedResponse(
                f"The Work API answered with an unexpected status {status} while trying to {call.action}.",
                detail=f"unexpected status {status}",
                **common,
            )
        # The server may say outright whether trying again can help (the SDK obeys this header too).
        should_retry = response.headers.get("x-should-retry")
        if should_retry in ("true", "false") and status >= 400:
            exc.retryable = should_retry == "true"
        return exc

    def retry_delay(self, call: _Call[Any], exc: WorkAPIError, attempt: int, elapsed: float) -> float | None:
        """Seconds to wait before trying ``call`` again, or None to raise ``exc`` now."""
        if not call.retried or not exc.retryable or attempt >= self.requests.max_retries:
            return None
        if exc.retry_after is not None and exc.retry_after > 0:
            delay = exc.retry_after
        else:
            delay = min(_INITIAL_RETRY_DELAY * 2.0 ** min(attempt, 32), _MAX_RETRY_DELAY)
            delay *= 1 - 0.25 * random.random()
        # Past the total budget (including when the server asks for a longer wait) the caller hears now.
        if elapsed + delay > self.requests.retry_total:
            return None
        return delay


def _check_cursor(seen: set[str], cursor: str, action: str) -> None:
    if cursor in seen:
        raise MalformedResponse(
            f"The Work API returned the same page cursor twice while trying to {action}; stopped paging.",
            detail="repeated page cursor",
        )
    seen.add(cursor)


class WorkAPIClient:
    """Async client of the Work API and the Environments API (``async with WorkAPIClient(...) as client:``)."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        retry_total: float = 8.0,
        workspace_id: str | None = None,
        betas: tuple[str, ...] | list[str] = (),
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._requests = _Requests(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            retry_total=retry_total,
            workspace_id=workspace_id,
            betas=tuple(betas),
            max_retries=max_retries,
        )
        self._answers = _Answers(self._requests)
        self._max_body_bytes = max_body_bytes
        self._http = httpx.AsyncClient(
            transport=transport, timeout=timeout, follow_redirects=False, verify=tls_context()
        )

    @property
    def base_url(self) -> str:
        return self._requests.base_url

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _attempt(self, call: _Call[T]) -> T:
        started = time.monotonic()
        request = self._http.build_request(
            call.method,
            self._requests.url(call),
            params=call.params or None,
            headers=call.headers,
            content=call.body,
            timeout=call.timeout,
        )
        try:
            response = await self._http.send(request, stream=True)
            try:
                body = _Body(response, call, started, self._max_body_bytes)
                if not body.too_large:
                    async for chunk in response.aiter_bytes():
                        if not body.add(chunk):
                            break
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise self._answers.transport_error(call, exc) from exc
        return self._answers.result(call, response, body.content())

    async def _send(self, call: _Call[T]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return await self._attempt(call)
            except WorkAPIError as exc:
                delay = self._answers.retry_delay(call, exc, attempt, time.monotonic() - started)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    # --- API-key calls -------------------------------------------------------------------------------------

    async def list_environments(
        self, include_archived: bool | None = None, limit: int | None = None, page: str | None = None
    ) -> Page[Environment]:
        return await self._send(self._requests.list_environments(include_archived, limit, page))

    async def iter_environments(
        self, include_archived: bool | None = None, limit: int | None = None
    ) -> AsyncIterator[Environment]:
        """Every environment, page after page."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = await self.list_environments(include_archived=include_archived, limit=limit, page=cursor)
            for environment in page.data:
                yield environment
            if page.next_page is None:
                return
            _check_cursor(seen, page.next_page, "list environments")
            cursor = page.next_page

    async def retrieve_environment(self, environment_id: str) -> Environment:
        return await self._send(self._requests.retrieve_environment(environment_id))

    async def retrieve_work(self, environment_id: str, work_id: str) -> WorkItem:
        return await self._send(self._requests.retrieve_work(environment_id, work_id))

    async def update_work_metadata(
        self, environment_id: str, work_id: str, metadata: Mapping[str, str | None]
    ) -> WorkItem:
        """Merge ``metadata`` into the item's: a string sets a key, None deletes it, other keys are kept."""
        return await self._send(self._requests.update_work_metadata(environment_id, work_id, metadata))

    async def stop_work(
        self, environment_id: str, work_id: str, force: bool | None = None, credential: str | None = None
    ) -> WorkItem:
        """Stop gracefully (or at once with ``force=True``); raises ``AlreadyStopped`` if it had stopped."""
        return await self._send(self._requests.stop_work(environment_id, work_id, force, credential))

    def read_stop_answer(
        self,
        environment_id: str,
        work_id: str,
        force: bool | None,
        *,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> WorkItem | WorkAPIError:
        """What an answer to a stop sent by other means (the gateway forwards its caller's) says, read as
        ``stop_work`` reads its own: the item, or the error ``stop_work`` would have raised."""
        call = self._requests.stop_work(environment_id, work_id, force, None)
        response = httpx.Response(status, headers=dict(headers), content=body)
        try:
            return self._answers.result(call, response, body)
        except WorkAPIError as exc:
            return exc

    async def work_stats(self, environment_id: str) -> QueueStats:
        return await self._send(self._requests.work_stats(environment_id))

    # --- environment-key calls -----------------------------------------------------------------------------

    async def list_work(
        self, environment_id: str, *, environment_key: str, limit: int | None = None, page: str | None = None
    ) -> Page[WorkItem]:
        return await self._send(self._requests.list_work(environment_id, environment_key, limit, page))

    async def iter_work(
        self, environment_id: str, *, environment_key: str, limit: int | None = None
    ) -> AsyncIterator[WorkItem]:
        """Every work item of the environment, newest first, page after page."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = await self.list_work(
                environment_id, environment_key=environment_key, limit=limit, page=cursor
            )
            for item in page.data:
                yield item
            if page.next_page is None:
                return
            _check_cursor(seen, page.next_page, f"list the work items of environment {environment_id}")
            cursor = page.next_page

    async def poll_work(
        self,
        environment_id: str,
        *,
        environment_key: str,
        block_ms: int | None = None,
        reclaim_older_than_ms: int | None = None,
        worker_id: str | None = None,
    ) -> WorkItem | None:
        """The next item for this worker (with its ``secret``), or None when there is none."""
        return await self._send(
            self._requests.poll_work(
                environment_id, environment_key, block_ms, reclaim_older_than_ms, worker_id
            )
        )

    async def ack_work(self, environment_id: str, work_id: str, *, credential: str) -> WorkItem:
        return await self._send(self._requests.ack_work(environment_id, work_id, credential))

    async def heartbeat_work(
        self,
        environment_id: str,
        work_id: str,
        *,
        credential: str,
        expected_last_heartbeat: str | None = None,
        desired_ttl_seconds: int | None = None,
    ) -> Heartbeat:
        """Extend the lease; pass ``NO_HEARTBEAT`` first, then echo the last ``Heartbeat.last_heartbeat``."""
        return await self._send(
            self._requests.heartbeat_work(
                environment_id, work_id, credential, expected_last_heartbeat, desired_ttl_seconds
            )
        )
