"""Writing and checking the audit log: the one way to add an entry, and the chain verification.

Each entry's hash is an HMAC (``AUDIT_CHAIN_KEY``, kept outside the database) of its fields and the previous entry's
hash, so changing, removing or reordering any entry breaks every hash after it, and nobody without the key can
compute new ones. What the chain cannot see by itself — its newest entries removed together with its head row, or
every entry removed — an exported head (``export_audit_head``) shows (``verify_head``). Appends lock one chain-head row before reading the previous hash: on PostgreSQL the
first statement (an UPDATE of that row) takes a row lock held until commit; on SQLite the same statement takes the
database's write lock. Either way concurrent appends from any number of threads or processes form one chain.

The page that shows the log and its exports live in ``dashboard.auditlog``; the model in ``dashboard.models``.
"""

from __future__ import annotations

import collections
import hmac
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from prometheus_client import Counter

from dashboard.models import AuditChainHead, AuditEntry, Outcome
from workqueue.errors import redact

__all__ = ["ChainBreak", "arecord", "entries_for_work", "record", "verify_chain", "verify_head", "via_of"]

GENESIS_HASH = "0" * 64
_HEAD_ID = 1


def via_of(request: HttpRequest) -> str:
    """How an action arrived: a plain page submission or an htmx request."""
    return "htmx" if request.headers.get("HX-Request") == "true" else "page"


def _username(user: Any) -> str:
    if user is None or not getattr(user, "is_authenticated", False):
        return ""
    return str(user.get_username())


def _storable(value: Any) -> Any:
    """``value`` with NUL characters replaced (U+FFFD), in strings, keys and nested lists.

    PostgreSQL refuses NUL in text and jsonb; an entry about hostile input must still be written, not lost.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    return value


def _lock_head() -> AuditChainHead:
    """Take the chain lock (must be the transaction's first statement) and return the head row."""
    heads = AuditChainHead.objects.filter(pk=_HEAD_ID)
    if not heads.update(length=F("length") + 1):
        # First append ever (or after a test flush): create the head, carrying on from any entries still there.
        last = AuditEntry.objects.order_by("-sequence").first()
        try:
            with transaction.atomic():
                AuditChainHead.objects.create(
                    pk=_HEAD_ID,
                    length=(last.sequence if last else 0) + 1,
                    last_hash=last.hash if last else GENESIS_HASH,
                )
        except IntegrityError:
            # Someone else created it meanwhile; the UPDATE now waits for their commit, then locks.
            heads.update(length=F("length") + 1)
    return heads.select_for_update().get()


def record(
    *,
    user: Any,
    action: str,
    outcome: str,
    environment_id: str = "",
    work_id: str = "",
    reason: str = "",
    sent: Any = None,
    upstream_status: int | None = None,
    request_id: str | None = "",
    error: str = "",
    via: str = "page",
    token_name: str = "",
    username: str | None = None,
) -> AuditEntry:
    """Append one entry to the audit log and return it. ``outcome`` is "succeeded", "failed" or "denied".

    Anything shaped like a credential in ``reason`` or ``error`` is redacted: people paste the wrong thing.

    ``username`` defaults to the user's; pass it when acting for someone whose account may be gone.
    """
    if outcome not in Outcome.values:
        raise ValueError(f"outcome must be one of {', '.join(Outcome.values)}; got {outcome!r}")
    user_id = user.pk if user is not None and getattr(user, "is_authenticated", False) else None
    with transaction.atomic():
        head = _lock_head()
        entry = AuditEntry(
            sequence=head.length,
            created_at=timezone.now(),
            user_id=user_id,
            username=_storable(_username(user) if username is None else username),
            environment_id=_storable(environment_id or ""),
            work_id=_storable(work_id or ""),
            action=_storable(action),
            reason=_storable(redact(reason or "")),
            sent=_storable(sent),
            outcome=outcome,
            upstream_status=upstream_status,
            request_id=_storable(request_id or ""),
            error=_storable(redact(error or "")),
            via=via,
            token_name=_storable(token_name or ""),
            prev_hash=head.last_hash or GENESIS_HASH,
        )
        entry.hash = entry.compute_hash()
        entry._appending = True  # type: ignore[attr-defined]
        entry.save(force_insert=True)
        head.last_hash = entry.hash
        head.save(update_fields=["last_hash"])
    return entry


async def arecord(**kwargs: Any) -> AuditEntry:
    """``record`` for async views (the append runs in the database thread)."""
    return await sync_to_async(_record_kwargs)(kwargs)


def _record_kwargs(kwargs: dict[str, Any]) -> AuditEntry:
    return record(**kwargs)


def entries_for_work(work_id: str) -> QuerySet[AuditEntry]:
    """The audit trail of one work item, newest first."""
    return AuditEntry.objects.filter(work_id=work_id).order_by("-sequence")


# --- refusals: audited, but not without bound ------------------------------------------------------------------

REFUSALS_UNRECORDED = Counter(
    "dashboard_audit_refusals_unrecorded_total",
    "Refused requests not written to the audit log one by one, because their person (or token owner) passed "
    "AUDIT_REFUSALS_PER_MINUTE on this instance.",
)
_refusals: dict[str, collections.deque[float]] = {}
_refusals_lock = threading.Lock()


def refusal_verdict(who: str, now: float | None = None) -> str:
    """Whether a refused request of ``who`` (a user id, or the address of an anonymous caller) is written to the
    audit log: "record"; "last" for the one that reaches AUDIT_REFUSALS_PER_MINUTE in a minute (its entry says
    further ones are counted only); "skip" after that, until the minute has passed. Per instance."""
    limit = int(settings.AUDIT_REFUSALS_PER_MINUTE)
    now = time.monotonic() if now is None else now
    with _refusals_lock:
        seen = _refusals.setdefault(who, collections.deque())
        while seen and now - seen[0] >= 60.0:
            seen.popleft()
        if len(seen) >= limit:
            REFUSALS_UNRECORDED.inc()
            return "skip"
        seen.append(now)
        if len(_refusals) > 10_000:  # forget the quiet ones, so the table stays small whoever calls
            for key in [k for k, v in _refusals.items() if not v]:
                del _refusals[key]
        return "last" if len(seen) == limit else "record"


def record_refusal(who: str, **fields: Any) -> AuditEntry | None:
    """``record(**fields)`` for a refused request, within the per-person allowance (``refusal_verdict``)."""
    verdict = refusal_verdict(who)
    if verdict == "skip":
        return None
    if verdict == "last":
        limit = int(settings.AUDIT_REFUSALS_PER_MINUTE)
        fields["error"] = (
            f"{fields.get('error', '')} ({limit} refusals in a minute: further ones this minute are counted in "
            "dashboard_audit_refusals_unrecorded_total, not written here)"
        ).strip()
    return record(**fields)


async def arecord_refusal(who: str, **fields: Any) -> AuditEntry | None:
    return await sync_to_async(record_refusal)(who, **fields)


@dataclass(frozen=True)
class ChainBreak:
    sequence: int
    entry_id: int
    problem: str


def verify_head(length: int, digest: str) -> ChainBreak | None:
    """Whether the chain still holds the entry an exported head names (``export_audit_head``), unchanged: the
    chain may have grown since, but not lost or rewritten anything up to it."""
    if length <= 0:
        return None
    entry = AuditEntry.objects.filter(sequence=length).first()
    if entry is None:
        newest = AuditEntry.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
        return ChainBreak(
            length,
            0,
            f"the exported head names entry #{length}, but the log ends at #{newest}: entries were removed",
        )
    if not hmac.compare_digest(entry.hash, digest):
        return ChainBreak(length, entry.pk, "its hash is not the exported head's: the log was rewritten")
    return None


def verify_chain(batch_size: int = 2000) -> Iterator[ChainBreak]:
    """Every place where the chain does not hold, oldest first (nothing when it is intact)."""
    expected_prev = GENESIS_HASH
    expected_sequence = 1
    entries = AuditEntry.objects.order_by("sequence").iterator(chunk_size=batch_size)
    for entry in entries:
        if entry.sequence != expected_sequence:
            yield ChainBreak(
                entry.sequence,
                entry.pk,
                f"sequence {entry.sequence} follows {expected_sequence - 1}: an entry is missing or was reordered",
            )
        if entry.prev_hash != expected_prev:
            yield ChainBreak(
                entry.sequence, entry.pk, "prev_hash does not match the hash of the entry before it"
            )
        if entry.compute_hash() != entry.hash:
            yield ChainBreak(entry.sequence, entry.pk, "its content does not match its hash: it was changed")
        expected_prev = entry.hash
        expected_sequence = entry.sequence + 1
    head = AuditChainHead.objects.filter(pk=_HEAD_ID).first()
    if head is not None and head.length > 0 and head.last_hash != expected_prev:
        yield ChainBreak(
            head.length,
            0,
            f"the chain head records {head.length} entries ending elsewhere: the newest were removed",
        )
