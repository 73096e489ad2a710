"""The confirmation page of every revocation and removal, and the reason form every confirmed action asks for.

Revoking a token or a display link and removing an environment key cannot be undone by a click, so each asks first
(GET shows this page, POST with a reason does it) and the reason goes to the audit log with the action. Stops and
bulk stops read their reason with the same form (``read_reason``), so a missing or overlong one reads the same
wherever it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

from django import forms
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render

__all__ = ["REASON_MAX", "ReasonForm", "confirm_page", "read_reason"]

REASON_MAX = 1000


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=REASON_MAX,
        error_messages={
            "required": "Say why: the reason goes into the audit log.",
            "max_length": "The reason is %(show_value)d characters long (at most %(limit_value)d).",
        },
    )


def read_reason(data: QueryDict) -> tuple[str, str | None]:
    """The reason posted (stripped; cut to ``REASON_MAX`` when it is shown again) and what is wrong with it, if
    anything."""
    form = ReasonForm(data)
    if form.is_valid():
        return form.cleaned_data["reason"], None
    return str(data.get("reason", "")).strip()[:REASON_MAX], str(form.errors["reason"][0])


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
