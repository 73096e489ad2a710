"""The one exception family for everything that can go wrong talking to the Work API.

Every failure the client reports is a ``WorkAPIError``: a short ``kind`` to branch on, the upstream HTTP status and
``request-id`` when there was a response, when it happened, whether trying again could help, and a message a person
can act on. Messages never contain a credential: upstream text is scrubbed before it is quoted.

Also here: ``InvalidSecret``, raised by ``decode_secret`` (a ``ValueError``, not an upstream failure).
What does not live here: the mapping from HTTP responses to these classes (``workqueue.client``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from workqueue.records import LeaseState

__all__ = [
    "AlreadyStopped",
    "AuthenticationFailed",
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "InvalidID",
    "InvalidMetadata",
    "InvalidSecret",
    "MalformedResponse",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "PreconditionFailed",
    "RateLimited",
    "ServerError",
    "Unavailable",
    "UpstreamTimeout",
    "WorkAPIError",
    "redact",
]

# Anthropic credentials all share this prefix (API keys sk-ant-api03-, environment keys sk-ant-oat01-, sessions
# tokens sk-ant-req-). Anything shaped like one is cut out of text we did not write ourselves.
_CREDENTIAL_RE = re.compile(r"sk-ant-[A-Za-z0-9_\-]*")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)\S+")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with the given secrets and anything that looks like a credential replaced by ``[redacted]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _CREDENTIAL_RE.sub("[redacted]", text)
    return _BEARER_RE.sub(r"\1[redacted]", text)


class WorkAPIError(Exception):
    """A failed call to the Work API (or one refused before it was made)."""

    default_kind: ClassVar[str] = "server_error"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind or self.default_kind
        self.status = status
        self.request_id = request_id
        self.error_type = error_type
        self.error_code = error_code
        self.retry_after = retry_after
        self.retryable = self.default_retryable if retryable is None else retryable
        self.occurred_at = datetime.now(UTC)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kind={self.kind!r}, status={self.status!r}, "
            f"request_id={self.request_id!r}, message={self.message!r})"
        )


class InvalidID(WorkAPIError):
    """An environment or work id that cannot go into a URL path; raised before any request is made."""

    default_kind = "invalid_id"


class ConnectionFailed(WorkAPIError):
    default_kind = "connection"
    default_retryable = True


class UpstreamTimeout(WorkAPIError):
    default_kind = "timeout"
    default_retryable = True


class MalformedResponse(WorkAPIError):
    """The upstream answered, but not with something this client can understand (wrong type, bad JSON, too big)."""

    default_kind = "malformed"

    def __init__(self, message: str, *, detail: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        # What exactly was wrong ("work item.created_at is missing"), for messages that add their own context.
        self.detail = detail or message


class BadRequest(WorkAPIError):
    default_kind = "bad_request"


class InvalidMetadata(BadRequest):
    default_kind = "invalid_metadata"


class AuthenticationFailed(WorkAPIError):
    default_kind = "authentication"


class PermissionDenied(WorkAPIError):
    default_kind = "permission"


class NotFound(WorkAPIError):
    default_kind = "not_found"


class Conflict(WorkAPIError):
    default_kind = "conflict"


class AlreadyStopped(Conflict):
    """A stop answered 409: the work item had already stopped. Reported at once, never retried."""

    default_kind = "already_stopped"


class PreconditionFailed(WorkAPIError):
    """A heartbeat whose ``expected_last_heartbeat`` did not match; ``lease_state`` is the server's view, if sent."""

    default_kind = "precondition_failed"

    def __init__(self, message: str, *, lease_state: LeaseState | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.lease_state = lease_state


class RateLimited(WorkAPIError):
    default_kind = "rate_limited"
    default_retryable = True


class Overloaded(WorkAPIError):
    default_kind = "overloaded"
    default_retryable = True


class Unavailable(WorkAPIError):
    default_kind = "unavailable"
    default_retryable = True


class ServerError(WorkAPIError):
    default_kind = "server_error"
    default_retryable = True


class InvalidSecret(ValueError):
    """A work item's ``secret`` that is not base64url-encoded JSON with a sessions token. Never quotes the secret."""
