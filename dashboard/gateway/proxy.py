"""Talking to the Work API on a script's behalf, at the HTTP level, and answering in the Work API's own words.

``forward`` sends one checked call upstream with the dashboard's credential and hands back the upstream's status,
body and the headers a client reads (``request-id``, ``retry-after``...) byte for byte, so the official SDK pointed
at the gateway raises the same typed exceptions it would raise against the upstream. Nothing is retried here: the
caller's client has its own retry policy, and retrying under it would multiply the calls a script makes.

``error_response`` is the upstream's error envelope for the gateway's own answers (401, 403, 429, 502, 504...),
with a request id of the gateway's own (``req_gateway_…``) so nobody looks for it in the upstream's logs.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import httpx
from django.conf import settings
from django.http import HttpResponse

from dashboard.budget import BudgetExhausted
from dashboard.live.metrics import instrumented_transport
from workqueue.client import ANTHROPIC_VERSION, MANAGED_AGENTS_BETA, MAX_BODY_BYTES

# What the SDK reads from a response besides the body (anthropic._base_client and _exceptions).
PASSED_BACK_HEADERS: Final = (
    "content-type",
    "request-id",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "anthropic-workspace-id",
)
_HEADER_VALUE_RE: Final = re.compile(r"[\x20-\x7e]{1,512}")
USER_AGENT: Final = "workqueue-dashboard-gateway/0.1"


def gateway_request_id() -> str:
    return f"req_gateway_{secrets.token_hex(12)}"


def error_response(
    status: int,
    error_type: str,
    message: str,
    *,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    """An answer of the gateway's own, in the upstream's error envelope."""
    request_id = request_id or gateway_request_id()
    body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
    response = HttpResponse(json.dumps(body), status=status, content_type="application/json")
    response["request-id"] = request_id
    for name, value in (headers or {}).items():
        response[name] = value
    return response


@dataclass(frozen=True)
class UpstreamAnswer:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def request_id(self) -> str:
        return self.headers.get("request-id", "")

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def error_message(self) -> str:
        """The upstream's own ``error.message`` (or the status) for the audit log; empty for a success."""
        if self.status < 400:
            return ""
        decoded = self.json()
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
            message = decoded["error"].get("message")
            if isinstance(message, str):
                return message[:2000]
        return f"HTTP {self.status}"

    def as_response(self) -> HttpResponse:
        response = HttpResponse(self.body, status=self.status)
        # HttpResponse always sets a content type; the upstream's (or none) is what the client must see.
        del response["Content-Type"]
        for name, value in self.headers.items():
            response[name] = value
        return response


class UpstreamFailure(Exception):
    """The upstream gave no answer: ``status`` 502 (unreachable, broken answer) or 504 (no answer in time)."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def client_header(value: str | None, default: str) -> str:
    """A caller's ``anthropic-beta`` / ``anthropic-version`` passed on as given, if it is a sane header value."""
    if value is not None and _HEADER_VALUE_RE.fullmatch(value):
        return value
    return default


def upstream_headers(
    method: str, credential: str, *, beta: str | None, version: str | None, workspace: bool
) -> dict[str, str]:
    headers = {
        "Authorization": f"Bearer {credential}",
        "anthropic-version": client_header(version, ANTHROPIC_VERSION),
        "anthropic-beta": client_header(beta, MANAGED_AGENTS_BETA),
        "accept": "application/json",
        "user-agent": USER_AGENT,
    }
    if workspace and settings.ANTHROPIC_WORKSPACE_ID:
        headers["anthropic-workspace-id"] = settings.ANTHROPIC_WORKSPACE_ID
    if method != "GET":
        headers["content-type"] = "application/json"
    return headers


def upstream_url(path: str) -> str:
    base = httpx.URL(settings.ANTHROPIC_BASE_URL)
    # A path in the base URL is kept as a prefix (as the SDK does); credentials in the URL are not ours to send.
    return str(base.copy_with(username=None, password=None, query=None, fragment=None)).rstrip("/") + path


async def forward(
    method: str,
    path: str,
    *,
    credential: str,
    params: list[tuple[str, str]],
    body: bytes | None,
    beta: str | None,
    version: str | None,
    workspace: bool,
) -> UpstreamAnswer:
    """One call to the upstream; raises ``UpstreamFailure`` when there is no usable answer."""
    timeout = float(settings.UPSTREAM_TIMEOUT_SECONDS)
    headers = upstream_headers(method, credential, beta=beta, version=version, workspace=workspace)
    try:
        # The live layer's transport, so the gateway's calls show in the upstream latency and error metrics too.
        async with httpx.AsyncClient(
            transport=instrumented_transport(), timeout=timeout, follow_redirects=False
        ) as http:
            request = http.build_request(
                method, upstream_url(path), params=tuple(params), headers=headers, content=body
            )
            response = await http.send(request, stream=True)
            try:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise UpstreamFailure(
                            502, "api_error", "The Work API sent an answer too large to pass on."
                        )
                    chunks.append(chunk)
            finally:
                await response.aclose()
    except BudgetExhausted as exc:
        # Not sent: the dashboard's own budget of upstream requests is spent for this minute.
        raise UpstreamFailure(429, "rate_limit_error", exc.message) from None
    except httpx.TimeoutException:
        raise UpstreamFailure(
            504, "timeout_error", f"The Work API did not answer within {timeout:g} seconds."
        ) from None
    except httpx.HTTPError:
        # The exception text is not quoted: it could name hosts or addresses the caller has no business seeing.
        raise UpstreamFailure(502, "api_error", "The gateway could not reach the Work API.") from None
    passed = {name: response.headers[name] for name in PASSED_BACK_HEADERS if name in response.headers}
    return UpstreamAnswer(status=response.status_code, body=b"".join(chunks), headers=passed)
