"""Template tags the pages use to wire themselves to the live feed: the socket URL attributes and the placeholders
that the first snapshot replaces (so every out-of-band swap finds its target)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from dashboard.live import conf

register = template.Library()


def _socket(path: str, name: str = "", values: Iterable[str] = ()) -> SafeString:
    """``hx-ext="ws" ws-connect="<path>?name=a&name=b"`` for the element that holds a page's socket."""
    query = urlencode([(name, value) for value in values]) if name else ""
    return format_html(' hx-ext="ws" ws-connect="{}" data-live-socket', f"{path}?{query}" if query else path)


@register.simple_tag
def live_overview_socket(tiles: Iterable[Any]) -> SafeString:
    """The overview's socket: the tiles it shows (each a snapshot, ``tile.environment_id``)."""
    return _socket("/ws/live/", "env", [tile.environment_id for tile in tiles])


@register.simple_tag
def live_environment_socket(environment_id: str, rows: Iterable[Any]) -> SafeString:
    """An environment page's socket: its queue panel and the rows it shows (``row.item.id``)."""
    return _socket(f"/ws/live/{quote(environment_id)}/", "work", [row.item.id for row in rows])


@register.simple_tag
def live_work_item_socket(environment_id: str, work_id: str) -> SafeString:
    return _socket(f"/ws/live/{quote(environment_id)}/{quote(work_id)}/")


@register.simple_tag
def live_stuck_socket() -> SafeString:
    """The stuck page's socket: the stuck set's mark, which makes its list read itself again when it changes."""
    return _socket("/ws/live/", "stuck", ["1"])


@register.simple_tag
def live_attrs() -> SafeString:
    """Marks a region as live before its first snapshot arrives (``static/live.js`` then reports its age)."""
    return format_html(' data-live data-live-at="" data-live-interval="{}"', f"{conf.feed_interval():g}")


@register.inclusion_tag("live/_live_meta.html")
def live_meta() -> dict[str, object]:
    """The "updated … ago" line of a region, empty until the first snapshot."""
    return {"s": None}
