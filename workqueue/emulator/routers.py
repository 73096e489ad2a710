"""Keeps the emulator's tables in the ``emulator`` database and everything else out of it."""

from __future__ import annotations

from typing import Any

EMULATOR_APP = "emulator"
EMULATOR_DB = "emulator"


class EmulatorRouter:
    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        return EMULATOR_DB if model._meta.app_label == EMULATOR_APP else "default"

    def db_for_write(self, model: type[Any], **hints: Any) -> str | None:
        return EMULATOR_DB if model._meta.app_label == EMULATOR_APP else "default"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        return (obj1._meta.app_label == EMULATOR_APP) == (obj2._meta.app_label == EMULATOR_APP)

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        if app_label == EMULATOR_APP:
            return db == EMULATOR_DB
        return db != EMULATOR_DB
