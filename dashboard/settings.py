"""Settings for the dashboard, read from the environment (the emulator has its own: ``workqueue.emulator.settings``).

Defaults give the embedded setup (SQLite, in-memory channel layer, the local emulator's address); every value can
be overridden by an environment variable, and a malformed one stops the process at start.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from dashboard.env import env_bool, env_float, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DASHBOARD_DATA_DIR", str(BASE_DIR / "var")))
# Only the dashboard's own user may read it: it holds the SQLite databases (sessions), the generated secret and the
# demo's logs (which name the emulator's environment keys).
DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
with contextlib.suppress(OSError):
    DATA_DIR.chmod(0o700)

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    configured = env_str("SECRET_KEY")
    if configured:
        if len(configured) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long")
        return configured
    # The embedded setup keeps a generated key in its data directory, so sessions and encrypted environment
    # keys survive a restart without anyone having to invent a secret.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", []) if env_str("CSRF_TRUSTED_ORIGINS") else []

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    # Failed logins are counted in the database (so across instances) and throttled: see LOGIN_FAILURE_LIMIT.
    "axes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    # {% partialdef %}: each live region is defined once, in its page, and rendered alone by the live feed.
    "template_partials.apps.SimpleAppConfig",
    "workqueue",
    "dashboard",
    "dashboard.gateway",
    "dashboard.live",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "dashboard.security.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "dashboard.security.IdleSessionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Answers a locked-out login with 429 and the lockout page (last, as django-axes asks).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
ASGI_APPLICATION = "dashboard.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "OPTIONS": {
            # "page.html#region" names one {% partialdef %} of a page (django-template-partials).
            "loaders": [
                (
                    "template_partials.loader.Loader",
                    [
                        (
                            "django.template.loaders.cached.Loader",
                            [
                                "django.template.loaders.filesystem.Loader",
                                "django.template.loaders.app_directories.Loader",
                            ],
                        )
                    ],
                )
            ],
            "builtins": ["template_partials.templatetags.partials"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.layout",
            ],
        },
    },
]

# --- Databases -------------------------------------------------------------------------------------------------
# The dashboard's own data (users, audit log, environment keys, history, the work index).
DATABASE_URL = env_url(
    "DATABASE_URL",
    f"sqlite:///{DATA_DIR / 'dashboard.sqlite3'}",
    schemes=("sqlite", "postgres", "postgresql"),
)
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
for _alias, _db in DATABASES.items():
    if _db["ENGINE"] == "django.db.backends.sqlite3":
        # A busy SQLite file waits rather than failing at once; WAL lets readers run beside a writer.
        _db.setdefault("OPTIONS", {})
        _db["OPTIONS"].update(
            {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
        )
        _db["TEST"] = {"NAME": str(DATA_DIR / f"test-{_alias}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer ---------------------------------------------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", "", schemes=("redis", "rediss", "unix"))
if REDIS_URL:
    # channels-redis receives with a blocking pop of up to 5 s; redis-py's default read timeout is also 5 s, so an
    # idle receive would fail with "Timeout reading" (and a message popped just then would be lost). Reads get
    # longer than the pop.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Upstream (the Work API) -----------------------------------------------------------------------------------
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY", "sk-ant-api03-emulator")
ANTHROPIC_BASE_URL = env_url("ANTHROPIC_BASE_URL", "http://127.0.0.1:8100", schemes=("http", "https"))
ANTHROPIC_WORKSPACE_ID = env_str("ANTHROPIC_WORKSPACE_ID")
UPSTREAM_TIMEOUT_SECONDS = env_float("UPSTREAM_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=120)
UPSTREAM_RETRY_TOTAL_SECONDS = env_float("UPSTREAM_RETRY_TOTAL_SECONDS", 8.0, minimum=0, maximum=120)
UPSTREAM_MAX_RETRIES = env_int("UPSTREAM_MAX_RETRIES", 2, minimum=0, maximum=5)
UPSTREAM_REQUESTS_PER_MINUTE = env_int("UPSTREAM_REQUESTS_PER_MINUTE", 1200, minimum=0, maximum=600_000)

# --- Pages -----------------------------------------------------------------------------------------------------
# Shown in every page's header so nobody mistakes one deployment for another ("production" is shown in red).
DASHBOARD_LABEL = env_str("DASHBOARD_LABEL", "local")

# --- The gateway for scripts (dashboard.gateway) ---------------------------------------------------------------
# Mutating calls through /gateway/ must carry an X-Reason header; per-token token bucket: refill per minute, burst.
GATEWAY_REQUIRE_REASON = env_bool("GATEWAY_REQUIRE_REASON", True)
GATEWAY_RATE_PER_MINUTE = env_int("GATEWAY_RATE_PER_MINUTE", 120, minimum=1, maximum=100000)
GATEWAY_RATE_BURST = env_int("GATEWAY_RATE_BURST", 30, minimum=1, maximum=100000)

# --- Stuck work, bulk actions, environment keys (dashboard core) -----------------------------------------------
# A work item is stuck past these ages: no heartbeat while starting/active, stopping, or waiting queued.
STUCK_HEARTBEAT_SECONDS = env_int("STUCK_HEARTBEAT_SECONDS", 120, minimum=10, maximum=7 * 86400)
STUCK_STOPPING_SECONDS = env_int("STUCK_STOPPING_SECONDS", 300, minimum=10, maximum=7 * 86400)
STUCK_QUEUED_SECONDS = env_int("STUCK_QUEUED_SECONDS", 600, minimum=10, maximum=7 * 86400)
# The most work items one bulk stop may cover.
BULK_MAX_ITEMS = env_int("BULK_MAX_ITEMS", 500, minimum=1, maximum=5000)
# Refused requests one person (or one address, signed out) gets written to the audit log a minute, per instance;
# beyond it they are counted in dashboard_audit_refusals_unrecorded_total, so refusals cannot grow the log unbounded.
AUDIT_REFUSALS_PER_MINUTE = env_int("AUDIT_REFUSALS_PER_MINUTE", 30, minimum=1, maximum=100_000)
# The audit chain's HMAC key (kept outside the database, so whoever can write the database cannot forge entries);
# derived from SECRET_KEY when unset. Set it on its own in production: rotating SECRET_KEY then leaves it alone.
AUDIT_CHAIN_KEY = env_str("AUDIT_CHAIN_KEY")
if AUDIT_CHAIN_KEY and len(AUDIT_CHAIN_KEY) < 32:
    raise ImproperlyConfigured("AUDIT_CHAIN_KEY must be at least 32 characters long")
# Environment keys are stored encrypted with a key derived from this (or, if unset, from SECRET_KEY).
ENVIRONMENT_KEY_ENCRYPTION_KEY = env_str("ENVIRONMENT_KEY_ENCRYPTION_KEY")
if ENVIRONMENT_KEY_ENCRYPTION_KEY and len(ENVIRONMENT_KEY_ENCRYPTION_KEY) < 32:
    raise ImproperlyConfigured("ENVIRONMENT_KEY_ENCRYPTION_KEY must be at least 32 characters long")


def _environment_keys() -> dict[str, str]:
    """``ENVIRONMENT_KEYS="env_a=sk-ant-oat01-…,env_b=…"``: environment keys given by the deployment."""
    raw = env_str("ENVIRONMENT_KEYS").strip()
    keys: dict[str, str] = {}
    for position, pair in enumerate(raw.split(",") if raw else [], start=1):
        environment_id, sep, key = (part.strip() for part in pair.partition("="))
        # The messages name the position and the id, never the key.
        if not sep or not key or any(ch.isspace() for ch in key):
            raise ImproperlyConfigured(f"ENVIRONMENT_KEYS entry {position} is not environment_id=key")
        if not re.fullmatch(r"env_[A-Za-z0-9_-]{1,100}", environment_id):
            raise ImproperlyConfigured(
                f"ENVIRONMENT_KEYS entry {position} does not start with an environment id"
            )
        if environment_id in keys:
            raise ImproperlyConfigured(f"ENVIRONMENT_KEYS names {environment_id} twice")
        keys[environment_id] = key
    return keys


ENVIRONMENT_KEYS = _environment_keys()

# --- Live feed, history, wall displays, metrics (dashboard.live) -------------------------------------------------
# One poller per environment reads the queue stats this often and keeps the work index in step (dashboard.index),
# whatever the number of viewers or instances.
# Live sockets one signed-in person may hold open on one instance (tabs, wall screens signed in as a person).
LIVE_MAX_SOCKETS_PER_USER = env_int("LIVE_MAX_SOCKETS_PER_USER", 50, minimum=1, maximum=10_000)
# Work items one signed-in person's sockets may have followed on one instance (a page follows the rows it shows).
LIVE_MAX_WATCHED_ITEMS_PER_USER = env_int("LIVE_MAX_WATCHED_ITEMS_PER_USER", 500, minimum=1, maximum=100_000)
FEED_INTERVAL_SECONDS = env_float("FEED_INTERVAL_SECONDS", 3.0, minimum=0.2, maximum=60)
# Work items a page watches that the feed retrieves one by one per interval and environment, when the index's own
# round has not confirmed them (the rest wait for the next interval).
FEED_MAX_WATCHED_ITEMS = env_int("FEED_MAX_WATCHED_ITEMS", 20, minimum=0, maximum=200)
# One feed call's timeout: short, since the next interval polls again anyway.
FEED_TIMEOUT_SECONDS = env_float(
    "FEED_TIMEOUT_SECONDS", min(5.0, UPSTREAM_TIMEOUT_SECONDS), minimum=0.1, maximum=60
)
# How often the list of environments is read again (new environments appear on the overview and wall displays).
FEED_DIRECTORY_INTERVAL_SECONDS = env_float(
    "FEED_DIRECTORY_INTERVAL_SECONDS", max(30.0, FEED_INTERVAL_SECONDS), minimum=1, maximum=600
)
# How often an open live socket checks that its person is still signed in with a role.
LIVE_REAUTH_SECONDS = env_float("LIVE_REAUTH_SECONDS", 60.0, minimum=0.1, maximum=3600)
# Wall display colours: a tile turns amber when its oldest queued item is this old (red at STUCK_QUEUED_SECONDS),
# and red at this many stuck items (one already turns it amber).
DISPLAY_OLDEST_WARNING_SECONDS = env_float(
    "DISPLAY_OLDEST_WARNING_SECONDS", 60.0, minimum=1, maximum=7 * 86400
)
DISPLAY_STUCK_CRITICAL = env_int("DISPLAY_STUCK_CRITICAL", 5, minimum=1, maximum=100_000)
# History kept: the environment page's minute samples (stuck, stopped, time to acknowledge; 7 days for its 7-day
# chart) and the overview's queue samples.
HISTORY_RETENTION_HOURS = env_int("HISTORY_RETENTION_HOURS", 168, minimum=1, maximum=24 * 365)
# The work index (dashboard.index): upstream requests one environment's feed may make a minute (stats polls, list
# pages and retrieves), whether it follows every environment with a key or only watched ones, and how long stopped
# items stay in it.
INDEX_REQUESTS_PER_MINUTE = env_int("INDEX_REQUESTS_PER_MINUTE", 120, minimum=30, maximum=6000)
INDEX_ALL_ENVIRONMENTS = env_bool("INDEX_ALL_ENVIRONMENTS", True)
INDEX_STOPPED_RETENTION_HOURS = env_int("INDEX_STOPPED_RETENTION_HOURS", 168, minimum=1, maximum=24 * 3650)
# /metrics needs "Authorization: Bearer <METRICS_TOKEN>" when set; unset, only loopback requests are answered.
METRICS_TOKEN = env_str("METRICS_TOKEN")
# Keys the live layer keeps in Redis (leases, presence, latest snapshots) start with this.
LIVE_REDIS_PREFIX = env_str("LIVE_REDIS_PREFIX", "dashboard:live")
# The wall display's clock shows this time zone unless the display link names another.
DISPLAY_TIME_ZONE = env_str("DISPLAY_TIME_ZONE", "UTC")

# --- Auth, sessions, security ----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes) on every login form, the admin's included: after LOGIN_FAILURE_LIMIT failed
# attempts for one username, or from one address, further attempts for it are refused (429) for
# LOGIN_LOCKOUT_MINUTES; a lockout is an audit entry. The address is the connection's (REMOTE_ADDR): a proxy in
# front passes the client's through the ASGI server's --forwarded-allow-ips, never through a header read here.

# Sign-in through the company's OpenID Connect provider (dashboard.oidc, mozilla-django-oidc): off unless OIDC_ISSUER
# is set. Authorization code flow with PKCE, state and nonce; the ID token is RS256, issuer and audience exact.
OIDC_ISSUER = env_url("OIDC_ISSUER", "", schemes=("https", "http"))
OIDC_RP_CLIENT_ID = env_str("OIDC_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = env_str("OIDC_CLIENT_SECRET")
OIDC_RP_SCOPES = env_str("OIDC_SCOPES", "openid email profile groups")
OIDC_ROLE_CLAIM = env_str("OIDC_ROLE_CLAIM", "groups")
OIDC_PROVIDER_NAME = env_str("OIDC_PROVIDER_NAME")


def _role_map() -> dict[str, str]:
    """``OIDC_ROLE_MAP="ops-admins=admin,ops=operator,everyone=viewer"``: the provider's groups and their roles."""
    raw = env_str("OIDC_ROLE_MAP").strip()
    roles: dict[str, str] = {}
    for position, pair in enumerate(raw.split(",") if raw else [], start=1):
        group, sep, role = (part.strip() for part in pair.partition("="))
        if not sep or not group or role not in ("viewer", "operator", "admin"):
            raise ImproperlyConfigured(
                f"OIDC_ROLE_MAP entry {position} is not group=viewer, group=operator or group=admin"
            )
        if group in roles:
            raise ImproperlyConfigured(f"OIDC_ROLE_MAP names the group {group!r} twice")
        roles[group] = role
    return roles


OIDC_ROLE_MAP = _role_map()
if OIDC_ISSUER:
    _issuer = urlsplit(OIDC_ISSUER)
    if _issuer.scheme != "https" and _issuer.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ImproperlyConfigured("OIDC_ISSUER must use https (http only on this machine's loopback)")
    if not OIDC_RP_CLIENT_ID or not OIDC_RP_CLIENT_SECRET:
        raise ImproperlyConfigured("OIDC_ISSUER is set: OIDC_CLIENT_ID and OIDC_CLIENT_SECRET are needed too")
    if "openid" not in OIDC_RP_SCOPES.split():
        raise ImproperlyConfigured("OIDC_SCOPES must include openid")
    if not OIDC_ROLE_MAP:
        raise ImproperlyConfigured("OIDC_ISSUER is set: OIDC_ROLE_MAP must give at least one group a role")
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_TOKEN_USE_BASIC_AUTH = True
OIDC_TIMEOUT = 10
# Password sign-in (the form and the Django admin's); off once everyone signs in through the provider.
PASSWORD_LOGIN = env_bool("PASSWORD_LOGIN", True)
if not PASSWORD_LOGIN and not OIDC_ISSUER:
    raise ImproperlyConfigured("PASSWORD_LOGIN=off needs OIDC_ISSUER: nobody could sign in")
AUTHENTICATION_BACKENDS = [
    "dashboard.login_throttle.LoginThrottleBackend",
    *(["dashboard.oidc.ProviderBackend"] if OIDC_ISSUER else []),
    *(["django.contrib.auth.backends.ModelBackend"] if PASSWORD_LOGIN else []),
]
AXES_ENABLED = env_bool("LOGIN_THROTTLE", True)
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1, maximum=24 * 60))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
# Signed out after this long without a request (dashboard.security.IdleSessionMiddleware); 8 hours: a shift.
SESSION_IDLE_MINUTES = env_int("SESSION_IDLE_MINUTES", 8 * 60, minimum=5, maximum=14 * 24 * 60)
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if not DEBUG:
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Asking browsers to preload HSTS commits the whole domain and its subdomains for months; that is the domain
        # owner's decision (SECURE_HSTS_PRELOAD=1), not a default. Without it Django's deploy check would warn.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
    # Behind a proxy that ends TLS, health probes and Prometheus reach each instance directly over plain HTTP: a
    # redirect to https://<instance>:8000/ would fail them. Pages stay redirected.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
    if env_bool("SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"  # filled by `manage.py collectstatic` in production
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "uvicorn.access": {"level": "WARNING"},
        # Each failed login is counted quietly; a lockout is a warning (and an audit entry).
        "axes": {"level": "WARNING"},
    },
}
