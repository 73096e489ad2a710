"""Settings of the emulator's own process (``DJANGO_SETTINGS_MODULE=workqueue.emulator.settings``), read from the
environment: only the emulator's app, its database, its routes and its one middleware. The dashboard's settings
know nothing of the emulator; ``workqueue.emulator.launch`` starts the process with these.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from dashboard.env import env_bool, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parents[2]
# The emulator's SQLite file sits beside the dashboard's, in the data directory they share by default.
DATA_DIR = Path(env_str("DASHBOARD_DATA_DIR", str(BASE_DIR / "var")))
DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)

DEBUG = False
# Nothing is signed: the emulator has no sessions, cookies or forms.
SECRET_KEY = "the-work-api-emulator-signs-nothing-with-this-key"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = ["workqueue.emulator"]
MIDDLEWARE = ["workqueue.emulator.middleware.EmulatorMiddleware"]
ROOT_URLCONF = "workqueue.emulator.urls"

# The engine names its database "emulator" (the alias it uses everywhere, here and in a test process that holds the
# emulator beside the dashboard); "default" is the same database, which nothing uses.
EMULATOR_DATABASE_URL = env_url(
    "EMULATOR_DATABASE_URL",
    f"sqlite:///{DATA_DIR / 'emulator.sqlite3'}",
    schemes=("sqlite", "postgres", "postgresql"),
)


def emulator_database() -> dict[str, object]:
    database: dict[str, object] = dict(dj_database_url.parse(EMULATOR_DATABASE_URL, conn_max_age=0))
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # A busy SQLite file waits rather than failing at once; WAL lets readers run beside a writer.
        database["OPTIONS"] = {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        database["TEST"] = {"NAME": str(DATA_DIR / "test-emulator.sqlite3"), "DEPENDENCIES": []}
    else:
        database["TEST"] = {"DEPENDENCIES": []}
    return database


DATABASES = {"default": emulator_database(), "emulator": emulator_database()}
DATABASE_ROUTERS = ["workqueue.emulator.routers.EmulatorRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMULATOR_API_KEY = env_str("EMULATOR_API_KEY", "sk-ant-api03-emulator")
EMULATOR_WORKSPACE_ID = env_str("EMULATOR_WORKSPACE_ID", "wrkspc_01EmulatorDefault")
# Lease TTL a heartbeat grants when the worker asks for none (the upstream's default is not documented).
EMULATOR_LEASE_TTL_SECONDS = env_int("EMULATOR_LEASE_TTL_SECONDS", 60, minimum=10, maximum=600)
# Send `x-should-retry: false` with 409s (stop/ack of a stopped item). Off = faithful: the upstream is not known to.
EMULATOR_NO_RETRY_CONFLICTS = env_bool("EMULATOR_NO_RETRY_CONFLICTS", False)
# Answer 400 when `anthropic-beta` lacks managed-agents-2026-04-01 (the upstream's behaviour is not known).
EMULATOR_REQUIRE_BETA = env_bool("EMULATOR_REQUIRE_BETA", False)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
}
