"""The form that creates a wall display link: its name, the environments it shows (none: all), its time zone."""

from __future__ import annotations

import zoneinfo
from typing import Any

from django import forms
from django.http import QueryDict

MAX_NAME_LENGTH = 100


class DisplayLinkForm(forms.Form):
    name = forms.CharField(
        max_length=MAX_NAME_LENGTH,
        error_messages={
            "required": "Give the display a name, such as the room it hangs in.",
            "max_length": "At most %(limit_value)d characters.",
        },
    )
    environments = forms.MultipleChoiceField(
        required=False, error_messages={"invalid_choice": "Pick environments from the list."}
    )
    time_zone = forms.CharField(required=False, max_length=64)

    def __init__(self, *args: Any, environment_ids: list[str], default_time_zone: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        environments = self.fields["environments"]
        assert isinstance(environments, forms.MultipleChoiceField)
        environments.choices = [(environment_id, environment_id) for environment_id in environment_ids]
        self.default_time_zone = default_time_zone

    def clean_time_zone(self) -> str:
        time_zone = self.cleaned_data["time_zone"] or self.default_time_zone
        if time_zone not in zoneinfo.available_timezones():
            raise forms.ValidationError("Pick a time zone from the list, such as Europe/Paris or UTC.")
        return str(time_zone)

    def values(self) -> dict[str, Any]:
        """What the page shows in its fields again: what was typed, stripped."""
        return {
            "name": str(self.data.get("name", "")).strip(),
            "environments": self.data.getlist("environments") if isinstance(self.data, QueryDict) else [],
            "time_zone": str(self.data.get("time_zone", "")).strip() or self.default_time_zone,
        }

    def first_errors(self) -> dict[str, str]:
        return {field: str(errors[0]) for field, errors in self.errors.items()}
