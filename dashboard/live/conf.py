"""The live layer's settings: each read from ``django.conf.settings`` on use, where ``dashboard/settings.py`` set it
from the environment with its default and bounds (the one place of both), and the values derived from them.

Read on each use (not at import) so a test's settings override takes effect for the next feed started.
"""

from __future__ import annotations

from django.conf import settings


def feed_interval() -> float:
    """Seconds between two stats polls of one environment (``FEED_INTERVAL_SECONDS``)."""
    return float(settings.FEED_INTERVAL_SECONDS)


def feed_max_watched_items() -> int:
    """The most watched work items the feed retrieves one by one per interval and environment."""
    return int(settings.FEED_MAX_WATCHED_ITEMS)


def feed_timeout() -> float:
    """Timeout of one feed call: short, because the next interval polls again anyway; never longer than a page's."""
    return min(float(settings.FEED_TIMEOUT_SECONDS), float(settings.UPSTREAM_TIMEOUT_SECONDS))


def directory_interval() -> float:
    """Seconds between two reads of the environments list (for the overview and "all environments" displays); never
    more often than the feed polls."""
    return max(float(settings.FEED_DIRECTORY_INTERVAL_SECONDS), feed_interval())


def history_retention_hours() -> float:
    """How long history samples are kept (``HISTORY_RETENTION_HOURS``; 168 by default, for the 7-day chart)."""
    return float(settings.HISTORY_RETENTION_HOURS)


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
    return str(settings.REDIS_URL)


def redis_prefix() -> str:
    return str(settings.LIVE_REDIS_PREFIX)


def metrics_token() -> str:
    return str(settings.METRICS_TOKEN)


def display_time_zone() -> str:
    return str(settings.DISPLAY_TIME_ZONE or settings.TIME_ZONE)


def oldest_warning_seconds() -> float:
    """Oldest-queued age at which a tile turns amber; it turns red at ``STUCK_QUEUED_SECONDS``."""
    return float(settings.DISPLAY_OLDEST_WARNING_SECONDS)


def oldest_critical_seconds() -> float:
    return float(settings.STUCK_QUEUED_SECONDS)


def stuck_critical_count() -> int:
    """Stuck items at which a tile turns red (one stuck item already turns it amber)."""
    return int(settings.DISPLAY_STUCK_CRITICAL)


def reauth_seconds() -> float:
    """How often an open socket checks that its person is still signed in with a role."""
    return float(settings.LIVE_REAUTH_SECONDS)
