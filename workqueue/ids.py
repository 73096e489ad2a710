"""Checks on the values the Work API takes from us: the ids that go into URL paths, and work item metadata.

Ids are checked before any request is made, so a stray ``/``, ``..``, whitespace or control character can never
reach a path, and the person sees which value was wrong. ``validate_metadata`` holds the metadata limits in one
place for the client, the emulator and the dashboard's forms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from workqueue.errors import InvalidID, redact

__all__ = [
    "METADATA_LIMITS",
    "validate_environment_id",
    "validate_metadata",
    "validate_work_id",
]

_ENVIRONMENT_ID_RE: Final = re.compile(r"env_[A-Za-z0-9_-]{1,100}")
_WORK_ID_RE: Final = re.compile(r"work_[A-Za-z0-9_-]{1,100}")

# The Work API does not document its own limits; these are the ones its sibling Managed Agents resources document.
METADATA_LIMITS: Final = {"max_keys": 16, "max_key_len": 64, "max_value_len": 512}


def _shown(value: object) -> str:
    # An id is not secret, but a credential pasted into the wrong field would be: never echo one back.
    text = redact(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _validate(value: object, pattern: re.Pattern[str], what: str, example: str) -> str:
    if not isinstance(value, str):
        raise InvalidID(f"The {what} must be a string, not {type(value).__name__}.")
    if not value:
        raise InvalidID(f"The {what} is empty.")
    if not pattern.fullmatch(value):
        raise InvalidID(
            f"{_shown(value)} is not a valid {what}: it should look like {example} "
            "(the prefix, then 1 to 100 letters, digits, '_' or '-')."
        )
    return value


def validate_environment_id(environment_id: object) -> str:
    """``environment_id`` unchanged if it is a well-formed ``env_…`` id; raises ``InvalidID`` otherwise."""
    return _validate(environment_id, _ENVIRONMENT_ID_RE, "environment id", "env_011CZkZ9X2dpNyB7HsEFoRfW")


def validate_work_id(work_id: object) -> str:
    """``work_id`` unchanged if it is a well-formed ``work_…`` id; raises ``InvalidID`` otherwise."""
    return _validate(work_id, _WORK_ID_RE, "work id", "work_011CZkZ9X2dpNyB7HsEFoRfW")


def _short(key: str) -> str:
    return repr(key) if len(key) <= 40 else repr(key[:37] + "...")


def validate_metadata(merged: Mapping[Any, Any]) -> list[str]:
    """The problems with a work item's metadata as it would be stored (after a merge); empty if it is fine.

    Each problem is a sentence naming the key, so it can be shown to the person who typed it.
    """
    problems: list[str] = []
    max_keys, max_key_len, max_value_len = (
        METADATA_LIMITS["max_keys"],
        METADATA_LIMITS["max_key_len"],
        METADATA_LIMITS["max_value_len"],
    )
    if len(merged) > max_keys:
        problems.append(f"Too many metadata keys: {len(merged)} (at most {max_keys}).")
    for key, value in merged.items():
        if not isinstance(key, str):
            problems.append(f"Metadata key {key!r} is not a string.")
            continue
        if len(key) > max_key_len:
            problems.append(
                f"Metadata key {_short(key)} is {len(key)} characters long (at most {max_key_len})."
            )
        if not isinstance(value, str):
            problems.append(f"The value of metadata key {_short(key)} is not a string.")
        elif len(value) > max_value_len:
            problems.append(
                f"The value of metadata key {_short(key)} is {len(value)} characters long (at most {max_value_len})."
            )
    return problems
