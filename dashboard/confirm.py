"""The confirmation page of every revocation and removal: what goes, what follows, and a required reason.

Revoking a token or a display link and removing an environment key cannot be undone by a click, so each asks first
(GET shows this page, POST with a reason does it) and the reason goes to the audit log with the action.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

__all__ = ["REASON_MAX", "confirm_page", "reason_problems"]

REASON_MAX = 1000


def reason_problems(reason: str) -> list[str]:
    """What is wrong with a reason (nothing when it can be recorded)."""
    if not reason:
        return ["Give a reason: it is kept in the audit log."]
    if len(reason) > REASON_MAX:
        return [f"The reason is too long (at most {REASON_MAX} characters)."]
    return []


def confirm_page(
    request: HttpRequest,
    *,
    title: str,
    facts: Sequence[tuple[str, str]],
    consequence: str,
    button: str,
    cancel_url: str,
    nav: str,
    problems: Sequence[str] = (),
    reason: str = "",
) -> HttpResponse:
    context = {
        "nav": nav,
        "title": title,
        "facts": facts,
        "consequence": consequence,
        "button": button,
        "form_action": request.path,
        "cancel_url": cancel_url,
        "problems": problems,
        "reason": reason,
    }
    return render(request, "dashboard/confirm/revoke.html", context, status=400 if problems else 200)
