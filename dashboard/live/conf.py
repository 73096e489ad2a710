"""The live layer's settings, read from ``django.conf.settings`` with defaults and bounds.

Read on each use (not at import) so a test's settings override takes effect for the next feed started.
"""

from __future__ import annotations

from django.conf import settings


def _number(name: str, default: float, minimum: float, maximum: float) -> float:
    value = float(getattr(settings, name, default))
    # The environment readers already bound these; a value set in code is clamped rather than trusted.
    return min(max(value, minimum), maximum)


def feed_interval() -> float:
    """Seconds between two stats polls of one environment (``FEED_INTERVAL_SECONDS``, default 3)."""
    return _number("FEED_INTERVAL_SECONDS", 3.0, 0.2, 60.0)


def feed_max_watched_items() -> int:
    """The most work items, outside the listed pages, the feed retrieves one by one per interval and environment."""
    return int(_number("FEED_MAX_WATCHED_ITEMS", 20, 0, 200))


def feed_timeout() -> float:
    """Timeout of one feed call: short, because the next interval polls again anyway."""
    return _number("FEED_TIMEOUT_SECONDS", min(5.0, float(settings.UPSTREAM_TIMEOUT_SECONDS)), 0.1, 60.0)


def directory_interval() -> float:
    """Seconds between two reads of the environments list (for the overview and "all environments" displays)."""
    return _number("FEED_DIRECTORY_INTERVAL_SECONDS", max(30.0, feed_interval()), 1.0, 600.0)


def history_retention_hours() -> float:
    return _number("HISTORY_RETENTION_HOURS", 24, 1, 24 * 365)


def history_window_seconds() -> float:
    """The span of the overview's chart."""
    return 3600.0


def lease_ttl() -> float:
    """A feed's lease lasts 1.5 intervals and is renewed every half interval, so a dead holder's feed is taken
    over within two intervals and a live holder has two chances to renew before its lease could lapse."""
    return 1.5 * feed_interval()


def supervisor_tick() -> float:
    return feed_interval() / 2


def redis_url() -> str:
    return str(getattr(settings, "REDIS_URL", "") or "")


def redis_prefix() -> str:
    return str(getattr(settings, "LIVE_REDIS_PREFIX", "") or "dashboard:live")


def metrics_token() -> str:
    return str(getattr(settings, "METRICS_TOKEN", "") or "")


def display_time_zone() -> str:
    return str(getattr(settings, "DISPLAY_TIME_ZONE", "") or settings.TIME_ZONE)


def oldest_warning_seconds() -> float:
    """Oldest-queued age at which a tile turns amber; it turns red at ``STUCK_QUEUED_SECONDS``."""
    return _number("DISPLAY_OLDEST_WARNING_SECONDS", 60, 1, 7 * 86400)


def oldest_critical_seconds() -> float:
    return float(getattr(settings, "STUCK_QUEUED_SECONDS", 600))


def stuck_critical_count() -> int:
    """Stuck items at which a tile turns red (one stuck item already turns it amber)."""
    return int(_number("DISPLAY_STUCK_CRITICAL", 5, 1, 100000))


def reauth_seconds() -> float:
    """How often an open socket checks that its person is still signed in with a role."""
    return _number("LIVE_REAUTH_SECONDS", 60, 0.1, 3600)
