"""The test process's settings: the dashboard's, with the emulator's app and database beside them, so a test can
drive the emulator's engine in process (``tests/test_emulator_stateful.py``). The dashboard's own settings hold no
emulator (``tests/test_settings.py`` checks it)."""

from __future__ import annotations

from typing import Any, cast

from dashboard.settings import *  # noqa: F403
from dashboard.settings import DATABASES, INSTALLED_APPS
from workqueue.emulator import settings as emulator

INSTALLED_APPS = [*INSTALLED_APPS, "workqueue.emulator"]
DATABASES = {**DATABASES, "emulator": cast(Any, emulator.emulator_database())}
DATABASE_ROUTERS = emulator.DATABASE_ROUTERS
EMULATOR_API_KEY = emulator.EMULATOR_API_KEY
EMULATOR_WORKSPACE_ID = emulator.EMULATOR_WORKSPACE_ID
EMULATOR_LEASE_TTL_SECONDS = emulator.EMULATOR_LEASE_TTL_SECONDS
EMULATOR_NO_RETRY_CONFLICTS = emulator.EMULATOR_NO_RETRY_CONFLICTS
EMULATOR_REQUIRE_BETA = emulator.EMULATOR_REQUIRE_BETA
