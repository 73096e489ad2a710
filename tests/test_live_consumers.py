"""The live websockets through the real ASGI application (Origin check, session auth, channel layer): who may
connect, what a new viewer gets at once, and that each socket receives only what it may see."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from live_support import (
    INTERVAL,
    communicator,
    figure,
    receive_matching,
    session_cookie,
    wait_until,
)
from pages_support import environment, make_user, start_work

from dashboard.live.consumers import CLOSE_REVOKED, CLOSE_SIGNED_OUT, RELOAD_DISPLAY
from dashboard.live.models import DisplayLink

pytestmark = pytest.mark.django_db(transaction=True)


def make_link(name: str = "ops room", environments: list[str] | None = None) -> tuple[DisplayLink, str]:
    link = DisplayLink(name=name, environments=environments or [])
    token = link.issue_token()
    link.save()
    return link, token


async def viewer_cookie(role: str = "viewer") -> bytes:
    return await session_cookie(await sync_to_async(make_user)(role))


async def test_a_foreign_origin_is_refused(live_runtime, upstream):
    cookie = await viewer_cookie()
    comm = communicator("/ws/live/", cookie=cookie, origin=b"http://evil.example")
    connected, _ = await comm.connect()
    assert not connected
    # The same socket from the dashboard's own origin is accepted.
    comm = communicator("/ws/live/", cookie=cookie)
    connected, _ = await comm.connect()
    assert connected
    await comm.disconnect()


async def test_a_socket_without_an_origin_header_is_refused(live_runtime, upstream):
    comm = communicator("/ws/live/", cookie=await viewer_cookie(), origin=None)
    assert not (await comm.connect())[0]


async def test_an_unauthenticated_socket_is_refused(live_runtime, upstream):
    env, _ = await sync_to_async(environment)(upstream, "private")
    for path in ("/ws/live/", f"/ws/live/{env['id']}/", f"/ws/live/{env['id']}/work_abc/"):
        comm = communicator(path)
        assert not (await comm.connect())[0], path
    assert live_runtime.local_watch == {}


async def test_a_user_without_a_role_is_refused(live_runtime, upstream):
    comm = communicator("/ws/live/", cookie=await viewer_cookie("none"))
    assert not (await comm.connect())[0]


async def test_malformed_ids_are_refused(live_runtime, upstream):
    cookie = await viewer_cookie()
    for path in ("/ws/live/not-an-env/", "/ws/live/env_ok/not-a-work-id/"):
        assert not (await communicator(path, cookie=cookie).connect())[0], path


async def test_a_viewer_gets_the_latest_snapshot_at_once(live_runtime, upstream, settings):
    settings.INDEX_ALL_ENVIRONMENTS = False  # the feed starts with the first viewer, not before
    env, _ = await sync_to_async(environment)(upstream, "latest")
    for _ in range(3):
        await sync_to_async(upstream.enqueue)(env["id"])
    # The feed polls as it starts and then not for a minute (its interval is fixed when it starts): what the second
    # viewer sees at once can only come from the cache.
    settings.FEED_INTERVAL_SECONDS = 60
    cookie = await viewer_cookie()
    first = communicator(f"/ws/live/?env={env['id']}", cookie=cookie)
    assert (await first.connect())[0]
    await receive_matching(first, r'data-figure="depth">3<')
    await sync_to_async(upstream.reset_requests)()
    connecting_at = datetime.now(UTC)
    second = communicator(f"/ws/live/?env={env['id']}", cookie=cookie)
    assert (await second.connect())[0]
    text = await second.receive_from(timeout=0.5)
    assert 'hx-swap-oob="true"' in text
    assert figure(text, f"figures-{env['id']}", "depth") == "3"
    assert f'id="live-tile-{env["id"]}"' in text
    taken_at = re.search(r'data-live-at="([^"]+)"', text)
    assert taken_at is not None
    assert datetime.fromisoformat(taken_at.group(1)) <= connecting_at
    assert (await sync_to_async(upstream.requests)())["by_route"].get("stats", 0) == 0
    await first.disconnect()
    await second.disconnect()


async def test_every_viewer_receives_the_same_bytes(live_runtime, upstream):
    env, _ = await sync_to_async(environment)(upstream, "shared")
    viewers = []
    for role in ("viewer", "operator", "admin"):
        comm = communicator(f"/ws/live/{env['id']}/", cookie=await viewer_cookie(role))
        assert (await comm.connect())[0]
        viewers.append(comm)
    await sync_to_async(upstream.enqueue)(env["id"])
    frames = [await receive_matching(comm, r'data-figure="depth">1<') for comm in viewers]
    assert frames[0] == frames[1] == frames[2]
    for comm in viewers:
        await comm.disconnect()


async def test_the_overview_socket_only_forwards_the_environments_its_page_shows(live_runtime, upstream):
    shown, _ = await sync_to_async(environment)(upstream, "shown")
    other, _ = await sync_to_async(environment)(upstream, "other")
    watcher = communicator(f"/ws/live/{other['id']}/", cookie=await viewer_cookie("operator"))
    assert (await watcher.connect())[0]
    comm = communicator(f"/ws/live/?env={shown['id']}", cookie=await viewer_cookie())
    assert (await comm.connect())[0]
    await wait_until(lambda: {shown["id"], other["id"]} <= set(live_runtime.feeds))
    for _ in range(int(3 / INTERVAL)):
        text = await comm.receive_from(timeout=2)
        if 'id="overview-refresh"' in text:
            continue  # the list of environments changed since the page was drawn: it asks for its tiles again
        if 'id="overview-headline"' in text:
            continue  # the headline: the sum over every environment, the same for every overview
        assert f"figures-{shown['id']}" in text
        assert other["id"] not in text
    await comm.disconnect()
    await watcher.disconnect()


async def test_the_environment_socket_updates_the_rows_its_page_shows(live_runtime, upstream, settings):
    env, key = await sync_to_async(environment)(upstream, "rows")
    item = await sync_to_async(start_work)(upstream, env["id"], key, state="active")
    comm = communicator(f"/ws/live/{env['id']}/?work={item.id}", cookie=await viewer_cookie())
    assert (await comm.connect())[0]
    await receive_matching(comm, rf'id="queue-{env["id"]}"')
    cells = await receive_matching(comm, rf'id="row-state-{item.id}"')
    # Table cells come in a frame of their own, starting with a cell (an HTML parser drops stray ones).
    assert cells.startswith("<td") and "state-active" in cells and "<section" not in cells
    await sync_to_async(upstream.server_stop)(env["id"], item.id)
    text = await receive_matching(
        comm, rf'id="row-state-{item.id}"[^>]*>\s*<span class="badge state-stopping"'
    )
    assert f'id="row-stop-requested-{item.id}"' in text
    await comm.disconnect()


async def test_the_work_item_socket_follows_its_state(live_runtime, upstream):
    env, key = await sync_to_async(environment)(upstream, "item")
    item = await sync_to_async(start_work)(upstream, env["id"], key, state="active")
    comm = communicator(f"/ws/live/{env['id']}/{item.id}/", cookie=await viewer_cookie())
    assert (await comm.connect())[0]
    text = await receive_matching(comm, rf'id="item-status-{item.id}"')
    assert "data-lease-status=" in text and "state-active" in text
    await sync_to_async(upstream.server_stop)(env["id"], item.id)
    await receive_matching(comm, rf'id="item-status-{item.id}"[^>]*>\s*<span class="badge state-stopping"')
    await comm.disconnect()


async def test_a_display_link_socket_receives_its_environments_only(live_runtime, upstream):
    shown, _ = await sync_to_async(environment)(upstream, "on the wall")
    hidden, _ = await sync_to_async(environment)(upstream, "not on the wall")
    link, token = await sync_to_async(make_link)(environments=[shown["id"]])
    # The link asks for both; it was made for one, so it receives one.
    comm = communicator(f"/ws/display/{token}/?env={shown['id']}&env={hidden['id']}")
    assert (await comm.connect())[0]
    watcher = communicator(f"/ws/live/{hidden['id']}/", cookie=await viewer_cookie())
    assert (await watcher.connect())[0]
    await wait_until(lambda: {shown["id"], hidden["id"]} <= set(live_runtime.feeds))
    for _ in range(int(2 / INTERVAL)):
        text = await comm.receive_from(timeout=2)
        assert f'id="wall-{shown["id"]}"' in text and "on the wall" in text
        assert hidden["id"] not in text
    await comm.disconnect()
    await watcher.disconnect()


async def test_a_forged_or_revoked_display_link_is_refused(live_runtime, upstream):
    env, _ = await sync_to_async(environment)(upstream, "wall")
    link, token = await sync_to_async(make_link)()
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert not (await communicator(f"/ws/display/{forged}/?env={env['id']}").connect())[0]
    link.revoked_at = link.created_at
    await sync_to_async(link.save)()
    assert not (await communicator(f"/ws/display/{token}/?env={env['id']}").connect())[0]


async def test_revoking_a_display_link_closes_its_open_sockets(live_runtime, upstream):
    env, _ = await sync_to_async(environment)(upstream, "wall")
    link, token = await sync_to_async(make_link)()
    comm = communicator(f"/ws/display/{token}/?env={env['id']}")
    assert (await comm.connect())[0]
    await receive_matching(comm, rf'id="wall-{env["id"]}"')

    def revoke() -> int:
        client = Client()
        client.force_login(make_user("admin"))
        return client.post(f"/displays/{link.pk}/revoke", {"reason": "moved"}).status_code

    assert await sync_to_async(revoke)() == 302
    while True:
        output = await comm.receive_output(timeout=2)
        if output["type"] == "websocket.close":
            break
    assert output["code"] == CLOSE_REVOKED


async def test_a_display_of_every_environment_reloads_when_one_is_added(live_runtime, upstream):
    first, _ = await sync_to_async(environment)(upstream, "first")
    _, token = await sync_to_async(make_link)()
    comm = communicator(f"/ws/display/{token}/?env={first['id']}")
    assert (await comm.connect())[0]
    await receive_matching(comm, rf'id="wall-{first["id"]}"')
    await sync_to_async(environment)(upstream, "second")
    # The environments list is read every second here; the display is told to load itself again.
    assert await receive_matching(comm, "wall-reload", timeout=8) == RELOAD_DISPLAY
    await comm.disconnect()


async def test_a_socket_is_closed_once_its_person_signs_out(live_runtime, upstream, settings):
    settings.LIVE_REAUTH_SECONDS = 0.2
    cookie = await viewer_cookie()
    comm = communicator("/ws/live/", cookie=cookie)
    assert (await comm.connect())[0]
    still_open = await comm.receive_nothing(timeout=0.5)
    assert still_open, "a signed-in viewer keeps the socket"

    def sign_out() -> None:
        from django.contrib.sessions.models import Session

        Session.objects.filter(session_key=cookie.decode().split("=", 1)[1]).delete()

    await sync_to_async(sign_out)()
    output = await comm.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": CLOSE_SIGNED_OUT}


async def test_one_person_holds_a_bounded_number_of_sockets(live_runtime, upstream, settings):
    settings.LIVE_MAX_SOCKETS_PER_USER = 3
    cookie = await viewer_cookie()
    held = [communicator("/ws/live/", cookie=cookie) for _ in range(3)]
    for comm in held:
        assert (await comm.connect())[0]
    one_more = communicator("/ws/live/", cookie=cookie)
    assert not (await one_more.connect())[0]
    # Someone else is not affected, and a closed socket frees its place.
    other = communicator(
        "/ws/live/", cookie=await session_cookie(await sync_to_async(make_user)("viewer", "other"))
    )
    assert (await other.connect())[0]
    await held.pop().disconnect()
    again = communicator("/ws/live/", cookie=cookie)
    assert (await again.connect())[0]
    for comm in [*held, other, again]:
        await comm.disconnect()
    from hold_support import FIGURES

    FIGURES.measured("socket count per person", "4 opened at a cap of 3: 3 accepted, the 4th refused")


async def test_one_person_follows_a_bounded_number_of_work_items(live_runtime, upstream, settings):
    """Every followed item costs the feed a refresh on the organization's key: one person's sockets together follow
    at most LIVE_MAX_WATCHED_ITEMS_PER_USER of them; the rest of their rows are not followed."""
    from dashboard.live.feed import work_key

    settings.LIVE_MAX_WATCHED_ITEMS_PER_USER = 3
    env, key = await sync_to_async(environment)(upstream, "many rows")
    ids = [f"work_01Followed{n:012d}" for n in range(6)]

    def followed() -> set[str]:
        return {k for k, n in live_runtime.local_watch.items() if n and k.startswith("work:")}

    cookie = await viewer_cookie()
    first = communicator(f"/ws/live/{env['id']}/?work={ids[0]}&work={ids[1]}", cookie=cookie)
    second = communicator(f"/ws/live/{env['id']}/?work={ids[2]}&work={ids[3]}&work={ids[4]}", cookie=cookie)
    item_page = communicator(f"/ws/live/{env['id']}/{ids[5]}/", cookie=cookie)
    for comm in (first, second, item_page):
        assert (await comm.connect())[0]
    assert followed() == {work_key(env["id"], w) for w in ids[:3]}

    # Someone else has a cap of their own; a closed socket gives its items back.
    other = communicator(
        f"/ws/live/{env['id']}/{ids[5]}/",
        cookie=await session_cookie(await sync_to_async(make_user)("viewer", "other")),
    )
    assert (await other.connect())[0]
    assert work_key(env["id"], ids[5]) in followed()
    await other.disconnect()
    await first.disconnect()
    again = communicator(f"/ws/live/{env['id']}/?work={ids[4]}&work={ids[5]}", cookie=cookie)
    assert (await again.connect())[0]
    assert followed() == {work_key(env["id"], w) for w in (ids[2], ids[4], ids[5])}
    for comm in (second, item_page, again):
        await comm.disconnect()


async def test_the_stuck_socket_gets_the_stuck_mark_and_no_tiles(live_runtime, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0  # an active item is stuck at once
    env, key = await sync_to_async(environment)(upstream, "stuck here")
    # Nothing else watches the environment: the stuck socket alone keeps its feed running.
    cookie = await viewer_cookie()
    comm = communicator("/ws/live/?stuck=1", cookie=cookie)
    assert (await comm.connect())[0]
    overview = communicator(f"/ws/live/?env={env['id']}", cookie=cookie)
    assert (await overview.connect())[0]
    await wait_until(lambda: env["id"] in live_runtime.feeds)
    await sync_to_async(start_work)(upstream, env["id"], key, state="active")
    frame = await receive_matching(comm, r'data-index-mark="1\.', timeout=10)
    assert re.fullmatch(
        r'<span id="stuck-mark" hx-swap-oob="true" hidden data-index-mark-for="stuck-region"'
        r' data-index-mark="1\.[0-9a-f]{16}" data-live data-live-at="\d{4}-[^"]+" data-live-interval="[\d.]+"></span>',
        frame,
    )
    for _ in range(int(3 / INTERVAL)):
        text = await comm.receive_from(timeout=3)
        assert text.startswith('<span id="stuck-mark"'), text  # no tile, no headline, no refresh of tiles
    # The overview gets the headline, never the stuck page's mark (it has no element for it).
    for _ in range(int(3 / INTERVAL)):
        assert "stuck-mark" not in await overview.receive_from(timeout=3)
    await comm.disconnect()
    await overview.disconnect()
