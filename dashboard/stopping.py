"""What a stop's answer means, the same through every door that stops work: the item page (``actions.stop``), a
bulk operation (``actions._send_stop``) and the gateway for scripts (``gateway.api``). Each door sends the stop its
own way; each reads the answer here, so the same upstream answer gives the same audit outcome and error wherever it
came from, and a stop that took effect is written into the work index at once.

- a 2xx with the item: succeeded (the index takes the item as answered);
- 409 (``AlreadyStopped``): succeeded — the item is stopped, which is what was asked — with "already stopped";
- any other error: failed, with the error's kind and the sentence a page shows for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dashboard import upstream
from workqueue.errors import AlreadyStopped, WorkAPIError
from workqueue.records import WorkItem

ALREADY_STOPPED = "already stopped"


@dataclass(frozen=True)
class StopOutcome:
    """A stop's answer, as the audit log records it."""

    outcome: str  # "succeeded" or "failed"
    upstream_status: int | None
    request_id: str
    error: str
    item: WorkItem | None = None  # the item as the stop left it (a 2xx)
    failure: WorkAPIError | None = None  # the error, AlreadyStopped included

    @property
    def already_stopped(self) -> bool:
        return isinstance(self.failure, AlreadyStopped)

    def audit_fields(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "upstream_status": self.upstream_status,
            "request_id": self.request_id,
            "error": self.error,
        }


def error_text(exc: WorkAPIError) -> str:
    """An upstream failure in the audit log: its kind and the sentence the pages show."""
    return f"{exc.kind}: {upstream.failure_banner(exc)['message']}"


def outcome(
    answer: WorkItem | WorkAPIError, *, status: int | None = None, request_id: str = ""
) -> StopOutcome:
    """``answer``: what the stop returned or raised; ``status``/``request_id``: the 2xx answer's (an error carries
    its own)."""
    if isinstance(answer, AlreadyStopped):
        return StopOutcome(
            "succeeded", answer.status or 409, answer.request_id or "", ALREADY_STOPPED, failure=answer
        )
    if isinstance(answer, WorkAPIError):
        return StopOutcome(
            "failed", answer.status, answer.request_id or "", error_text(answer), failure=answer
        )
    return StopOutcome("succeeded", status, request_id, "", item=answer)


def settle(result: StopOutcome) -> StopOutcome:
    """The index takes a stopped or stopping item from the stop's answer (synchronous: call it from a thread)."""
    from dashboard.index.sync import record_answer

    if result.item is not None:
        record_answer(result.item)
    return result
