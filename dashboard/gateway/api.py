"""The gateway endpoint: ``/gateway/v1/...`` answers like the Work API, on behalf of a person's access token.

Order of checks for every call: the token (401), its rate limit (429), the path and ids (404/405), whether the
gateway serves the operation at all (poll, ack, heartbeat and environment changes: 403), the person's role (403),
a reason for writes (400), then the upstream call with the dashboard's own credential. Every refusal of an
authenticated person and every write is an audit entry; reads are counted in metrics.

CSRF does not apply: the gateway reads no cookie and authenticates each request by its bearer token alone.
"""

from __future__ import annotations

import contextlib
import json
import re
from functools import partial
from typing import Any, Final
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from dashboard import audit, stopping, upstream
from dashboard.gateway import ratelimit, routes, tokens
from dashboard.gateway.metrics import GATEWAY_READS, GATEWAY_REFUSALS, GATEWAY_WRITES
from dashboard.gateway.models import PersonalAccessToken
from dashboard.gateway.proxy import (
    UpstreamAnswer,
    UpstreamFailure,
    error_response,
    forward,
    gateway_request_id,
)
from dashboard.permissions import ACTIONS, can, role_of
from dashboard.untrusted import load_json

GATEWAY_PREFIX: Final = "/gateway/"
REASON_HEADER: Final = "X-Reason"
# A metadata patch is at most 16 keys of 64 + 512 characters; anything near this size is not a legitimate call.
MAX_BODY_BYTES: Final = 64 * 1024
MAX_REASON_LENGTH: Final = 2000
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


def _segments(request: HttpRequest) -> list[str]:
    """The path after /gateway/, split as the client sent it (still percent-encoded).

    Under ASGI the raw path is used: the decoded one would turn an encoded ``/`` inside an id into a separator.
    """
    scope = getattr(request, "scope", None)
    raw = scope.get("raw_path") if isinstance(scope, dict) else None
    if isinstance(raw, bytes):
        path = raw.decode("latin-1").partition("?")[0]
        script_name = quote(request.META.get("SCRIPT_NAME", "") or "")
        if script_name and path.startswith(script_name):
            path = path[len(script_name) :]
        if path.startswith(GATEWAY_PREFIX):
            return path[len(GATEWAY_PREFIX) :].split("/")
    return quote(request.path_info[len(GATEWAY_PREFIX) :]).split("/")


def _reason(request: HttpRequest) -> str:
    value = request.headers.get(REASON_HEADER, "")
    # HTTP header values arrive as latin-1; a script that sent UTF-8 gets its words back intact.
    with contextlib.suppress(UnicodeError):
        value = value.encode("latin-1").decode("utf-8")
    return _CONTROL_RE.sub(" ", value).strip()[:MAX_REASON_LENGTH]


def without_secrets(answer: UpstreamAnswer) -> UpstreamAnswer:
    """``answer`` with any work item's ``secret`` emptied: only poll hands one out, and the gateway refuses poll.

    An upstream that includes it on retrieve or list (a field it documents for poll) must not pass a worker's
    credential to whoever holds a viewer token.
    """
    if answer.status >= 400 or b'"secret"' not in answer.body:
        return answer
    decoded = answer.json()
    items: list[Any] = []
    if isinstance(decoded, dict):
        items = [decoded]
        if isinstance(decoded.get("data"), list):
            items.extend(decoded["data"])
    dropped = False
    for item in items:
        # Emptied rather than removed: the field is in the schema (null outside poll), and the SDK reads it so.
        if isinstance(item, dict) and item.get("secret") is not None:
            item["secret"] = None
            dropped = True
    if not dropped:
        return answer
    body = json.dumps(decoded, ensure_ascii=False, separators=(",", ":")).encode()
    return UpstreamAnswer(status=answer.status, body=body, headers=answer.headers)


def _needed_role(action: str) -> str:
    needed = ACTIONS.get(action)
    return needed.group_name if needed is not None else "unknown"


# A refused body is kept whole when small; a larger one by its outline (field names, metadata keys), so refused
# calls, which any token can make, do not grow the append-only audit log by their size.
REFUSED_BODY_BYTES = 1024


def refused_body(body: Any) -> Any:
    if body is None or len(json.dumps(body, default=str)) <= REFUSED_BODY_BYTES:
        return body
    if not isinstance(body, dict):
        return {"outline": type(body).__name__}
    outline: dict[str, Any] = {"fields": [str(key)[:100] for key in list(body)[:50]]}
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        outline["metadata_keys"] = [str(key)[:100] for key in list(metadata)[:50]]
    return {"outline": outline}


class _Gateway:
    """One authenticated call: the token, what it asks for, and how it is answered and recorded."""

    def __init__(self, request: HttpRequest, token: PersonalAccessToken, call: routes.Call) -> None:
        self.request = request
        self.token = token
        self.user: Any = token.user
        self.call = call
        self.operation = call.operation
        self.reason = _reason(request)

    async def record(
        self, *, action: str, outcome: str, sent: Any, error: str = "", refusal: bool = False, **more: Any
    ) -> None:
        # A refusal counts against the token owner's allowance of audited refusals (audit.refusal_verdict).
        write = partial(audit.arecord_refusal, f"user:{self.user.pk}") if refusal else audit.arecord
        await write(
            user=self.user,
            action=action,
            outcome=outcome,
            environment_id=self.call.environment_id,
            work_id=self.call.work_id,
            reason=self.reason,
            sent=sent,
            error=error,
            via="gateway",
            token_name=self.token.name,
            **more,
        )

    def sent(self, body: Any = None) -> dict[str, Any]:
        what: dict[str, Any] = {"method": self.request.method, "path": self.call.upstream_path}
        if body is not None:
            what["body"] = body
        return what

    async def deny(self, action: str, message: str, *, body: Any = None) -> HttpResponse:
        GATEWAY_REFUSALS.labels("forbidden").inc()
        await self.record(
            action=action, outcome="denied", sent=self.sent(refused_body(body)), error=message, refusal=True
        )
        return error_response(403, "permission_error", message)

    async def role_allows(self, action: str) -> bool:
        return bool(await sync_to_async(can)(self.user, action))

    async def role_refusal(self, action: str) -> str:
        role = await sync_to_async(role_of)(self.user)
        held = f"the {role.name.lower()} role" if role is not None else "no role"
        return f"This token's user has {held}; {action} needs the {_needed_role(action)} role."

    async def send(self, credential: str, *, body: bytes | None = None) -> UpstreamAnswer | UpstreamFailure:
        headers = self.request.headers
        params = [
            (name, str(self.request.GET[name])[:1024])
            for name in self.operation.query
            if name in self.request.GET
        ]
        try:
            answer = await forward(
                self.request.method or "GET",
                self.call.upstream_path,
                credential=credential,
                params=params,
                body=body,
                beta=headers.get("anthropic-beta"),
                version=headers.get("anthropic-version"),
                workspace=self.operation.workspace_header,
            )
        except UpstreamFailure as failure:
            return failure
        return answer

    async def read(self) -> HttpResponse:
        if not await self.role_allows(self.operation.permission):
            return await self.deny(self.operation.name, await self.role_refusal(self.operation.permission))
        if self.operation.credential == "environment_key":
            credential = await upstream.environment_key(self.call.environment_id)
            if not credential:
                GATEWAY_REFUSALS.labels("no_environment_key").inc()
                return error_response(
                    403,
                    "permission_error",
                    f"Listing the work of {self.call.environment_id} needs its environment key, and the dashboard "
                    "has none: an admin can add it on the configuration page.",
                )
        else:
            credential = settings.ANTHROPIC_API_KEY
        result = await self.send(credential)
        if isinstance(result, UpstreamFailure):
            GATEWAY_READS.labels(self.operation.name, str(result.status)).inc()
            GATEWAY_REFUSALS.labels("upstream_unreachable").inc()
            return error_response(result.status, result.error_type, result.message)
        GATEWAY_READS.labels(self.operation.name, str(result.status)).inc()
        return without_secrets(result).as_response()

    async def write(self) -> HttpResponse:
        try:
            raw = self.request.body
        except RequestDataTooBig:
            raw = b"x" * (MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            return await self.bad_request(
                self.operation.permission,
                413,
                f"The request body is larger than {MAX_BODY_BYTES} bytes.",
                None,
            )
        body: Any = {}
        if raw.strip():
            try:
                body = load_json(raw)
            except ValueError:
                # Too deep a nesting included: a malformed body, answered and audited like any other.
                return await self.bad_request(
                    self.operation.permission,
                    400,
                    "The request body is not valid JSON.",
                    raw[:500].decode("utf-8", "replace"),
                )
        if not isinstance(body, dict):
            return await self.bad_request(
                self.operation.permission, 400, "The request body must be a JSON object.", body
            )
        action = self.operation.permission
        # Anything but an absent or false "force" is treated as a force-stop, so an odd value cannot slip a
        # forced stop past the role check.
        if self.operation.name == "work.stop" and body.get("force") not in (None, False):
            action = "force_stop"
        if not await self.role_allows(action):
            return await self.deny(action, await self.role_refusal(action), body=body)
        if settings.GATEWAY_REQUIRE_REASON and not self.reason:
            GATEWAY_REFUSALS.labels("no_reason").inc()
            message = (
                f"A reason is required for {action}: send it in the {REASON_HEADER} header "
                f"(e.g. '{REASON_HEADER}: INC-1234 draining stuck sessions')."
            )
            await self.record(
                action=action,
                outcome="denied",
                sent=self.sent(refused_body(body)),
                error=message,
                refusal=True,
            )
            return error_response(400, "invalid_request_error", message)
        # The body is re-encoded from what was checked, so the upstream acts on exactly what the role check saw
        # (duplicate keys in the original, for one, cannot be read differently upstream).
        encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        result = await self.send(settings.ANTHROPIC_API_KEY, body=encoded)
        if isinstance(result, UpstreamFailure):
            request_id = gateway_request_id()
            GATEWAY_WRITES.labels(self.operation.name, str(result.status)).inc()
            await self.record(
                action=action,
                outcome="failed",
                sent=self.sent(body),
                error=result.message,
                request_id=request_id,
            )
            return error_response(result.status, result.error_type, result.message, request_id=request_id)
        GATEWAY_WRITES.labels(self.operation.name, str(result.status)).inc()
        if self.operation.name == "work.stop":
            # Read as the item page and bulk operations read theirs (dashboard.stopping): the same answer, the same
            # audit outcome; a stop that took effect goes into the work index at once.
            async with upstream.client() as c:
                answer = c.read_stop_answer(
                    self.call.environment_id,
                    self.call.work_id,
                    action == "force_stop" or None,
                    status=result.status,
                    headers=result.headers,
                    body=result.body,
                )
            settled = await sync_to_async(stopping.settle)(
                stopping.outcome(answer, status=result.status, request_id=result.request_id)
            )
            await self.record(action=action, sent=self.sent(body), **settled.audit_fields())
            return result.as_response()
        await self.record(
            action=action,
            outcome="succeeded" if result.status < 400 else "failed",
            sent=self.sent(body),
            error=result.error_message(),
            upstream_status=result.status,
            request_id=result.request_id,
        )
        return result.as_response()

    async def bad_request(self, action: str, status: int, message: str, body: Any) -> HttpResponse:
        GATEWAY_REFUSALS.labels("bad_request").inc()
        await self.record(action=action, outcome="failed", sent=self.sent(body), error=message)
        return error_response(status, "invalid_request_error", message)

    async def refuse(self) -> HttpResponse:
        return await self.deny(self.operation.name, routes.refusal_message(self.operation))


@csrf_exempt
async def gateway(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Everything under /gateway/: the Work API's paths, answered for the holder of a personal access token."""
    token = await tokens.authenticate(tokens.credential_from_headers(request.headers))
    if token is None:
        GATEWAY_REFUSALS.labels("unauthenticated").inc()
        return error_response(
            401,
            "authentication_error",
            "The gateway needs a valid personal access token (Authorization: Bearer wqd_pat_… or x-api-key); "
            "this one is missing, unknown, revoked or expired.",
        )
    decision = await ratelimit.take(token.user_id)
    if not decision.allowed:
        GATEWAY_REFUSALS.labels("rate_limited").inc()
        return error_response(
            429,
            "rate_limit_error",
            f"Your tokens have made more than {settings.GATEWAY_RATE_PER_MINUTE} calls a minute "
            f"(bursts up to {settings.GATEWAY_RATE_BURST}); try again in {decision.retry_after} s.",
            headers={"retry-after": str(decision.retry_after)},
        )
    resolved = routes.resolve(request.method or "GET", _segments(request))
    if isinstance(resolved, routes.NoRoute):
        GATEWAY_REFUSALS.labels("not_found").inc()
        headers = {"Allow": ", ".join(resolved.allow)} if resolved.allow else None
        return error_response(resolved.status, resolved.error_type, resolved.message, headers=headers)
    call = _Gateway(request, token, resolved)
    if resolved.operation.kind == "refused":
        return await call.refuse()
    if resolved.operation.kind == "read":
        return await call.read()
    return await call.write()
