"""Template tags for the read pages: timestamps people can read, durations, and query strings for links.

A timestamp renders as ``<time datetime=...>`` with the relative time as text and UTC on hover, so a page is
readable without JavaScript; ``static/app.js`` keeps the relative text current and offers local time instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from dashboard.durations import age_text

register = template.Library()

_MINUTE = 60
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'}"


def duration_text(seconds: float) -> str:
    """``3 minutes``, ``2 hours 5 minutes``: the same wording as the relative times in ``static/app.js``."""
    s = abs(round(seconds))
    if s < _MINUTE:
        return _plural(s, "second")
    if s < _HOUR:
        return _plural(s // _MINUTE, "minute")
    if s < _DAY:
        hours, minutes = s // _HOUR, (s % _HOUR) // _MINUTE
        return _plural(hours, "hour") + (f" {_plural(minutes, 'minute')}" if hours < 6 and minutes else "")
    return _plural(s // _DAY, "day")


def relative_text(moment: datetime, now: datetime) -> str:
    seconds = (now - moment).total_seconds()
    if abs(seconds) < 5:
        return "just now"
    return f"in {duration_text(seconds)}" if seconds < 0 else f"{duration_text(seconds)} ago"


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@register.simple_tag
def timestamp(moment: datetime | None, empty: str = "—") -> SafeString | str:
    """``<time>`` with the relative time as text and the UTC time on hover; ``empty`` when there is no time."""
    if moment is None:
        return empty
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        moment.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        utc_text(moment),
        relative_text(moment, timezone.now()),
    )


@register.simple_tag
def age(moment: datetime | None, empty: str = "—") -> SafeString | str:
    """How long ago ``moment`` was, to the second and counting (``static/live.js`` updates ``data-age-since``
    every second), with the UTC time on hover: for the last sign of life of a worker."""
    if moment is None:
        return empty
    # static/live.js's ageText takes over once the page runs, in the same words ("2 min 33 s").
    text = age_text((timezone.now() - moment).total_seconds())
    # Not a <time>: the local-time switch rewrites those, and this one counts up by itself.
    return format_html(
        '<span class="age" title="{}"><span data-age-since="{}">{}</span> ago</span>',
        utc_text(moment),
        moment.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        text,
    )


@register.filter
def duration(value: float | timedelta | None) -> str:
    """A number of seconds (or a timedelta) as words: ``4 minutes``; ``—`` for nothing."""
    if value is None or value == "":
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return duration_text(seconds)


@register.simple_tag
def query(params: dict[str, Any], **changes: Any) -> str:
    """``?a=1&b=2`` from ``params`` with ``changes`` applied; a change to ``None`` or ``""`` drops the key."""
    merged = {**params, **changes}
    kept = {key: value for key, value in merged.items() if value not in (None, "")}
    return "?" + urlencode(kept) if kept else "?"


@register.simple_tag
def environment_name(environment_id: str) -> str:
    """``{% environment_name id %}``: the environment's name from the work index, else its id (breadcrumbs)."""
    from dashboard.index.queries import environment_name as name_of

    return name_of(str(environment_id))
