"""Bounds on what untrusted input may cost: parsing JSON, and what a refused request leaves in the audit log.

``load_json`` is the one way the dashboard parses JSON a person or a script sent (the gateway's bodies, the metadata
form's hidden fields): too deep a nesting is a malformed body like any other (``ValueError``), never a
``RecursionError`` escaping as a 500. ``refused_summary`` shrinks what a refused request sent to its field names
and a few kilobytes, so an append-only log cannot be grown without bound by someone who may not act.

What does not live here: the size limits of each endpoint (they belong to the view that knows its use).
"""

from __future__ import annotations

import json
from typing import Any, Final

from workqueue.errors import redact

__all__ = ["MAX_JSON_DEPTH", "REFUSED_SENT_BYTES", "load_json", "refused_summary"]

# A metadata patch is two levels deep; nothing the dashboard accepts comes close to this.
MAX_JSON_DEPTH: Final = 32
# What a refused request may leave in its audit entry (what it sent), and its reason.
REFUSED_SENT_BYTES: Final = 2048
REFUSED_REASON_LENGTH: Final = 500


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (without recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def load_json(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The decoded JSON, or ``ValueError`` (malformed, or nested deeper than ``max_depth``)."""
    try:
        value = json.loads(text)
    except RecursionError:
        # The C scanner gives up at the interpreter's recursion limit; that is a body nobody legitimate sends.
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    if _depth(value) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    return value


def _encoded_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode())


def refused_summary(value: Any, *, limit: int = REFUSED_SENT_BYTES) -> Any:
    """``value`` when it is small; otherwise its field names (and size) within ``limit`` bytes.

    A refused request is recorded so people can see someone tried; its whole body is not evidence worth megabytes.
    """
    if value is None:
        return None
    try:
        size = _encoded_size(value)
    except (TypeError, ValueError, RecursionError):
        return {"omitted": "not storable"}
    if size <= limit:
        return value
    summary: dict[str, Any] = {"bytes": size, "truncated": True}
    if isinstance(value, dict):
        names: list[str] = []
        budget = limit // 2
        for key in value:
            name = redact(str(key))[:64]
            budget -= len(name.encode()) + 3
            if budget < 0:
                break
            names.append(name)
        summary["fields"] = names
        summary["field_count"] = len(value)
        # Small scalar fields (method, path, a short value) stay: they say what was attempted.
        for key, item in value.items():
            if isinstance(item, str | int | float | bool) and len(str(item)) <= 200 and len(summary) < 12:
                summary.setdefault("values", {})[redact(str(key))[:64]] = redact(str(item))
        if _encoded_size(summary) > limit:
            summary.pop("values", None)
    elif isinstance(value, list):
        summary["items"] = len(value)
    else:
        summary["start"] = redact(str(value)[:200])
    return summary
