"""The form that creates a personal access token."""

from __future__ import annotations

from django import forms

from dashboard.gateway.tokens import EXPIRY_CHOICES


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        strip=True,
        help_text="What the token is for, e.g. the script that will use it.",
    )
    expires_in_days = forms.TypedChoiceField(
        label="Expires in", choices=EXPIRY_CHOICES, coerce=int, initial=30
    )

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise forms.ValidationError("The name cannot contain control characters.")
        return name
