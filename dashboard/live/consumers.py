"""The websockets the pages and the wall display connect to, speaking the htmx websocket extension's language.

Every frame is HTML whose top-level elements carry ``hx-swap-oob`` and the id of the element they replace. The
feed renders each snapshot once; a consumer only forwards the text it receives for its groups (for the environment
page, followed by the cells of the rows that page shows). A consumer has no channel of its own on the channel layer:
it registers with the process's relay (``fanout``), which puts each message for its groups on the consumer's
in-process queue; the consumer's loop reads that queue beside the socket, as Channels reads a channel. So a socket
costs no channel-layer work, and leaving costs nothing either (no channel-layer receive to wait out). Routes:

- ``/ws/live/?env=<id>&env=...``: overview tiles of the environments the page shows;
- ``/ws/live/?stuck=1``: the stuck page's mark of the stuck set (``queries.stuck_mark``), with each headline;
- ``/ws/live/<env_id>/?work=<id>&work=...``: an environment's queue panel and the cells of the rows shown;
- ``/ws/live/<env_id>/<work_id>/``: one work item's state and lease;
- ``/ws/display/<token>/?env=...``: a wall display's tiles.

Who may connect: a signed-in user with a role (any role may view everything live), or a display link that is
neither forged nor revoked, which only receives the environments it was made for. A user's socket is closed when
the session ends or the role goes (checked every ``LIVE_REAUTH_SECONDS``); a display's when its link is revoked. The Origin header is checked
by ``dashboard.security.WebsocketOriginValidator`` (scheme, host and port). A refused socket is closed before it is accepted (the
browser sees the handshake fail, and htmx does not retry a refusal).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.utils import await_many_dispatch
from django.conf import settings

from dashboard.live import fanout, metrics
from dashboard.live.feed import LiveRuntime, env_key, group_name, runtime, work_key
from workqueue.errors import WorkAPIError

logger = logging.getLogger(__name__)

_ENVIRONMENT_ID = re.compile(r"env_[A-Za-z0-9_-]{1,100}")
_WORK_ID = re.compile(r"work_[A-Za-z0-9_-]{1,100}")
# Bounds on what one socket may ask for: the overview and displays list environments, a page shows at most 100 rows.
MAX_ENVIRONMENTS = 500
MAX_ROWS = 100
# Open sockets per signed-in person in this process (LIVE_MAX_SOCKETS_PER_USER caps them): a script opening
# hundreds of sockets, each watching made-up work ids, must not turn into upstream calls on the organization's key.
_open_by_user: collections.Counter[Any] = collections.Counter()
# Work items watched by each signed-in person's sockets in this process (rows of environment pages, item pages).
_rows_by_user: collections.Counter[Any] = collections.Counter()
# Close codes (4000-4999 are the application's): htmx reconnects only after abnormal closes, never after these.
CLOSE_REVOKED = 4403
CLOSE_SIGNED_OUT = 4401
# A socket that stopped reading: 1013 ("try again later") makes htmx reconnect, and the new socket gets the latest
# snapshot at once.
CLOSE_BEHIND = 1013
# Tells a wall display's page (static/live.js) to load itself again.
RELOAD_DISPLAY = '<div id="wall-reload" hx-swap-oob="true" hidden data-reload></div>'
# The overview's list of environments changed: the element asks for the tiles region again once (the page's own
# Refresh), which brings the new tiles and a socket for them.
REFRESH_OVERVIEW = (
    '<div id="overview-refresh" hx-swap-oob="true" hidden hx-get="/" hx-target="#tiles" hx-swap="outerHTML"'
    ' hx-trigger="load" data-refresh></div>'
)


def _valid(pattern: re.Pattern[str], values: list[str], limit: int) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        if pattern.fullmatch(value) and value not in seen:
            seen[value] = None
        if len(seen) >= limit:
            break
    return list(seen)


def _can_view(user: Any) -> bool:
    from dashboard.permissions import can

    return can(user, "view")


def _still_signed_in(session: Any, user_id: Any) -> bool:
    """The socket's session still exists (no logout, not expired) and its user still has a role."""
    from django.contrib.auth import get_user_model

    from dashboard.permissions import can

    if session is None or not session.session_key or not session.exists(session.session_key):
        return False
    user = get_user_model().objects.filter(pk=user_id).first()
    return user is not None and can(user, "view")


def _display_link(token: str) -> Any:
    from dashboard.live.models import DisplayLink

    return DisplayLink.for_token(token)


class LiveConsumer(AsyncWebsocketConsumer):
    """One socket of one page; which page is told by the route (``kind`` in the route's kwargs)."""

    runtime: LiveRuntime

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Channels' own loop, with the relay's queue in place of a channel-layer channel (see the module docstring).
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.behind = False
        with contextlib.suppress(StopConsumer):
            await await_many_dispatch([receive, self.inbox.get], self.dispatch)

    def deliver(self, message: dict[str, Any]) -> None:
        """Called by the relay for each message of this socket's groups; never waits."""
        if self.behind:
            return
        if self.inbox.qsize() >= fanout.INBOX_LIMIT:
            # The client stopped reading: drop what waits and close, rather than let the queue grow.
            self.behind = True
            while not self.inbox.empty():
                self.inbox.get_nowait()
            self.inbox.put_nowait({"type": "live.behind"})
            return
        self.inbox.put_nowait(message)

    async def dispatch(self, message: dict[str, Any]) -> None:
        if message.get("group") is None and message.get("type") != "live.behind":
            await super().dispatch(message)
            return
        # The relay's messages only write to the socket: skip Channels' per-message closing of old database
        # connections, a thread hop per socket per snapshot.
        handler = getattr(self, get_handler_name(message), None)
        if handler is not None:
            await handler(message)

    async def connect(self) -> None:
        self.groups_joined: list[str] = []
        self.watched: list[str] = []
        self.accepted = False
        self.kind = ""
        self.environments: set[str] = set()
        self.rows: set[str] = set()
        self.recheck: asyncio.Task[None] | None = None
        self.user_id: Any = None
        self.runtime = runtime()
        self.runtime.ensure_started()
        kwargs = self.scope["url_route"]["kwargs"]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        if "token" in kwargs:
            await self._connect_display(kwargs["token"], query)
            return
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not await database_sync_to_async(_can_view)(user):
            await self.close()
            return
        if _open_by_user[user.pk] >= int(settings.LIVE_MAX_SOCKETS_PER_USER):
            logger.warning(
                "Refused a live socket: user %s already has %d open", user.pk, _open_by_user[user.pk]
            )
            await self.close()
            return
        environment_id = kwargs.get("env_id")
        work_id = kwargs.get("work_id")
        self.user_id = user.pk
        if environment_id is None:
            await self._connect_overview(query)
        elif not _ENVIRONMENT_ID.fullmatch(environment_id):
            await self.close()
        elif work_id is None:
            await self._connect_environment(environment_id, query)
        elif _WORK_ID.fullmatch(work_id):
            await self._connect_work_item(environment_id, work_id)
        else:
            await self.close()

    def _allowed_rows(self, requested: list[str]) -> list[str]:
        """The requested work items this person may still have followed (``LIVE_MAX_WATCHED_ITEMS_PER_USER`` across
        their sockets here): each one costs the feed a refresh, on the organization's key."""
        allowance = max(0, int(settings.LIVE_MAX_WATCHED_ITEMS_PER_USER) - _rows_by_user[self.user_id])
        allowed = sorted(requested)[:allowance]
        if len(allowed) < len(requested):
            logger.warning(
                "Live socket of user %s follows %d of the %d work items it asked for: the per-person cap is reached",
                self.user_id,
                len(allowed),
                len(requested),
            )
        self.rows_counted = len(allowed)
        _rows_by_user[self.user_id] += len(allowed)
        return allowed

    async def _known_environments(self, requested: list[str]) -> list[str]:
        """The requested environments that exist (when the list of environments is known)."""
        directory = await self.runtime.directory_with(requested)
        if directory is None:
            return requested
        known = {entry["id"] for entry in directory}
        return [e for e in requested if e in known]

    async def _start(self, kind: str, groups: list[str], watched: list[str]) -> None:
        self.kind = kind
        self.groups_joined = list(groups)
        # Once joined, nothing sent to these groups is missed: the cached snapshot read after this is as new or newer.
        await self.runtime.relay.join(self, groups)
        await self.accept()
        self.accepted = True
        if self.user_id is not None:
            _open_by_user[self.user_id] += 1
        metrics.WEBSOCKETS_OPEN.labels(kind).inc()
        if self.user_id is not None:
            self.recheck = asyncio.create_task(self._recheck_sign_in(self.user_id))
        self.watched = watched
        self.runtime.watch(watched)

    async def _connect_overview(self, query: dict[str, list[str]]) -> None:
        if query.get("stuck"):
            await self._connect_stuck()
            return
        requested = _valid(_ENVIRONMENT_ID, query.get("env", []), MAX_ENVIRONMENTS)
        environments = await self._known_environments(requested)
        self.environments = set(environments)
        groups = [group_name("overview"), group_name("directory")]
        await self._start("overview", groups, [env_key(e) for e in environments])
        cached = await self.runtime.cached(environments)
        text = "".join(payload["tile"] for payload in cached if payload)
        if text:
            await self.send(text_data=text)

    async def _connect_stuck(self) -> None:
        """The stuck page's socket: the stuck set's mark with each headline, nothing else. It keeps every known
        environment's feed running, as the stuck page lists them all."""
        try:
            directory = await self.runtime.directory()
        except WorkAPIError as exc:
            logger.warning("Could not read the environments list: %s", exc)
            directory = None
        environments = [entry["id"] for entry in directory or []][:MAX_ENVIRONMENTS]
        groups = [group_name("overview"), group_name("directory")]
        await self._start("stuck", groups, [env_key(e) for e in environments])

    async def _connect_environment(self, environment_id: str, query: dict[str, list[str]]) -> None:
        self.environments = {environment_id}
        self.rows = set(self._allowed_rows(_valid(_WORK_ID, query.get("work", []), MAX_ROWS)))
        watched = [env_key(environment_id), *(work_key(environment_id, w) for w in sorted(self.rows))]
        await self._start("environment", [group_name("environment", environment_id)], watched)
        (payload,) = await self.runtime.cached([environment_id])
        if payload:
            await self._send_environment(payload["environment"], payload.get("rows") or {})

    async def _connect_work_item(self, environment_id: str, work_id: str) -> None:
        self.environments = {environment_id}
        watched = [work_key(environment_id, work_id)] if self._allowed_rows([work_id]) else []
        await self._start("work_item", [group_name("work", environment_id, work_id)], watched)
        (payload,) = await self.runtime.cached([environment_id])
        text = (payload or {}).get("items", {}).get(work_id)
        if text:
            await self.send(text_data=text)

    async def _connect_display(self, token: str, query: dict[str, list[str]]) -> None:
        link = await database_sync_to_async(_display_link)(token)
        if link is None or link.is_revoked:
            await self.close()
            return
        requested = _valid(_ENVIRONMENT_ID, query.get("env", []), MAX_ENVIRONMENTS)
        environments = [e for e in await self._known_environments(requested) if link.shows(e)]
        self.environments = set(environments)
        self.display_link = link
        groups = [group_name("display", str(link.pk)), *(group_name("wall", e) for e in environments)]
        if link.shows_all:
            groups.append(group_name("directory"))
        await self._start("display", groups, [env_key(e) for e in environments])
        cached = await self.runtime.cached(environments)
        text = "".join(payload["wall"] for payload in cached if payload)
        if text:
            await self.send(text_data=text)

    async def _recheck_sign_in(self, user_id: Any) -> None:
        """A socket outlives its page's login: every so often, check the person is still signed in with a role."""
        from dashboard.live import conf

        while True:
            await asyncio.sleep(conf.reauth_seconds())
            allowed = await database_sync_to_async(_still_signed_in)(self.scope.get("session"), user_id)
            if not allowed:
                await self.close(code=CLOSE_SIGNED_OUT)
                return

    async def disconnect(self, code: int) -> None:
        recheck: asyncio.Task[None] | None = getattr(self, "recheck", None)
        if recheck is not None:
            recheck.cancel()
        groups: list[str] = getattr(self, "groups_joined", [])
        if groups:
            self.groups_joined = []
            await self.runtime.relay.leave(self, groups)
        if getattr(self, "watched", None):
            self.runtime.unwatch(self.watched)
            self.watched = []
        counted = getattr(self, "rows_counted", 0)
        if counted:
            self.rows_counted = 0
            _rows_by_user[self.user_id] -= counted
            if _rows_by_user[self.user_id] <= 0:
                del _rows_by_user[self.user_id]
        if getattr(self, "accepted", False):
            metrics.WEBSOCKETS_OPEN.labels(self.kind).dec()
            self.accepted = False
            if self.user_id is not None:
                _open_by_user[self.user_id] -= 1
                if _open_by_user[self.user_id] <= 0:
                    del _open_by_user[self.user_id]

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Read-only: whatever a client sends is ignored.
        return None

    async def _send_environment(self, text: str, rows: dict[str, str]) -> None:
        await self.send(text_data=text)
        # Table cells go in a frame of their own: after other elements, an HTML parser would drop them.
        cells = "".join(html for work_id, html in sorted(rows.items()) if work_id in self.rows)
        if cells:
            await self.send(text_data=cells)

    # --- group messages (each type named after its handler)

    async def live_tile(self, event: dict[str, Any]) -> None:
        if event.get("environment_id") in self.environments:
            await self.send(text_data=event["text"])

    async def live_headline(self, event: dict[str, Any]) -> None:
        if self.kind == "overview":
            await self.send(text_data=event["text"])
        elif self.kind == "stuck" and event.get("stuck"):
            await self.send(text_data=event["stuck"])

    async def live_environment(self, event: dict[str, Any]) -> None:
        await self._send_environment(event["text"], event.get("rows") or {})

    async def live_item(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])

    async def live_wall(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])

    async def display_revoked(self, event: dict[str, Any]) -> None:
        await self.close(code=CLOSE_REVOKED)

    async def live_behind(self, event: dict[str, Any]) -> None:
        await self.close(code=CLOSE_BEHIND)

    async def live_directory(self, event: dict[str, Any]) -> None:
        """The list of environments changed: a display showing all of them reloads to show the new list."""
        link = getattr(self, "display_link", None)
        if self.kind == "stuck":
            # Follow the new list: every environment's feed keeps running while the stuck page is open.
            watched = [env_key(e) for e in event.get("environments", [])][:MAX_ENVIRONMENTS]
            self.runtime.unwatch(self.watched)
            self.watched = watched
            self.runtime.watch(watched)
            return
        if link is None:
            if self.kind == "overview" and set(event.get("environments", [])) != self.environments:
                await self.send(text_data=REFRESH_OVERVIEW)
            return
        shown = {e for e in event.get("environments", []) if link.shows(e)}
        if shown != self.environments:
            await self.send(text_data=RELOAD_DISPLAY)
