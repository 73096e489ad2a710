"""The wording of a short duration: ``age_text(192)`` is ``"3 min 12 s"``.

Written here for the server and by ``ageText`` in ``static/live.js`` for the counters that count up in the browser;
the two must say the same (``tests/test_durations.py`` checks both against one table). Longer, rounder durations in
sentences ("4 minutes", "2 hours 5 minutes") are ``duration_text`` in ``dashboard.templatetags.dashboard_pages``,
chart axes are ``dashboard.live.sparkline``.
"""

from __future__ import annotations

__all__ = ["age_text"]


def age_text(seconds: float) -> str:
    """``95`` → ``"1 min 35 s"``: to the second under 10 minutes, then coarser (``"3 h 5 min"``, ``"3 days"``)."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"
