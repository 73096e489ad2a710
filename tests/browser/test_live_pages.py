"""Live pages in a real browser: two tabs follow the queue without a reload, and say so when the upstream goes away
and when it comes back. The upstream here is an emulator process of this test's own, so it can be stopped and
started again on the same port and database."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from live_support import reset_local_state
from pages_support import store_key

from dashboard.live import feed
from workqueue.emulator.control import EmulatorControl

INTERVAL = 0.5


@pytest.fixture
def live_feed(live_server_url: str, settings: Any) -> Iterator[None]:
    """Short feed intervals; the live runtime on the server's loop is stopped before the server."""
    settings.FEED_INTERVAL_SECONDS = INTERVAL
    settings.FEED_DIRECTORY_INTERVAL_SECONDS = 1.0
    reset_local_state()
    yield
    runtime = feed.current_runtime()
    if runtime is not None and runtime.loop.is_running():
        asyncio.run_coroutine_threadsafe(feed.shutdown(), runtime.loop).result(timeout=10)
    reset_local_state()


def test_two_tabs_follow_the_queue_and_the_stale_badge_tells_the_truth(
    page, live_feed, start_emulator, settings, sign_in, shoot
):
    from playwright.sync_api import expect

    own = start_emulator()
    control = EmulatorControl(own.base_url, own.api_key)
    settings.ANTHROPIC_BASE_URL = own.base_url
    settings.ANTHROPIC_API_KEY = own.api_key
    env, key = control.create_environment("Payments")
    store_key(env["id"], key)
    env_id = env["id"]

    sign_in("viewer")
    page.goto("/")
    second = page.context.new_page()
    second.on("console", page.browser_errors.console)
    second.on("pageerror", page.browser_errors.page_error)
    second.goto("/")
    tabs = (page, second)
    for tab in tabs:
        expect(tab.locator(f"#live-tile-{env_id}")).to_have_attribute("data-live-at", re.compile(r"^\d{4}-"))
        expect(tab.locator(f"#figures-{env_id} [data-figure=depth]")).to_have_text("0")
        tab.evaluate("window.stillTheSamePage = true")

    for _ in range(3):
        control.enqueue(env_id)
    for tab in tabs:
        expect(tab.locator(f"#figures-{env_id} [data-figure=depth]")).to_have_text("3")
        expect(tab.locator(f"#live-tile-{env_id} [data-live-age]")).to_contain_text("Updated")
        expect(tab.locator("[data-live-status]")).to_be_hidden()
        assert tab.evaluate("window.stillTheSamePage") is True, "the page was reloaded"
    shoot("overview-live")

    own.stop()
    for tab in tabs:
        badge = tab.locator("[data-live-status]")
        expect(badge).to_be_visible()
        expect(badge).to_have_attribute("data-state", "stale")
        expect(badge).to_contain_text("Stale since")
        expect(badge).to_contain_text("Could not reach the Work API")
        # The last numbers stay on screen, marked stale.
        expect(tab.locator(f"#figures-{env_id} [data-figure=depth]")).to_have_text("3")
        expect(tab.locator(f"#live-tile-{env_id}")).to_have_class(re.compile(r"\bis-stale\b"))
    shoot("upstream-stopped")

    restarted = type(own)(db_path=own.db_path, port=own.port, api_key=own.api_key)
    try:
        restarted.start()
        control.enqueue(env_id)
        for tab in tabs:
            expect(tab.locator("[data-live-status]")).to_be_hidden()
            expect(tab.locator(f"#figures-{env_id} [data-figure=depth]")).to_have_text("4")
            expect(tab.locator(f"#live-tile-{env_id}")).not_to_have_class(re.compile(r"\bis-stale\b"))
            assert tab.evaluate("window.stillTheSamePage") is True
        shoot("upstream-back")
    finally:
        restarted.stop()
        control.close()


def test_the_environment_and_work_item_pages_follow_their_work(page, live_feed, upstream, sign_in):
    from pages_support import environment, fill_index, start_work
    from playwright.sync_api import expect

    env, key = environment(upstream, "Search")
    in_list = start_work(upstream, env["id"], key, state="active")
    followed = start_work(upstream, env["id"], key, state="active")
    fill_index(upstream, env["id"], key)
    sign_in("operator")
    page.goto(f"/environments/{env['id']}/")
    expect(page.locator(f"#queue-{env['id']}")).to_have_attribute("data-live-at", re.compile(r"^\d{4}-"))
    expect(page.locator(f"#queue-{env['id']} [data-figure=active]")).to_have_text("2")
    upstream.enqueue(env["id"])
    expect(page.locator(f"#queue-{env['id']} [data-figure=depth]")).to_have_text("1")
    upstream.server_stop(env["id"], in_list.id)
    fill_index(upstream, env["id"], key)  # what the sync does each interval
    expect(page.locator(f"#row-state-{in_list.id} .badge").first).to_have_text("stopping")
    expect(page.locator(f"#queue-{env['id']} [data-figure=active]")).to_have_text("1")

    page.goto(f"/environments/{env['id']}/work/{followed.id}/")
    expect(page.locator(f"#lease-{followed.id}")).to_have_attribute("data-live-at", re.compile(r"^\d{4}-"))
    expect(page.locator(f"#item-status-{followed.id} [data-state]")).to_have_text("active")
    upstream.server_stop(env["id"], followed.id)
    expect(page.locator(f"#item-status-{followed.id} [data-state]")).to_have_text("stopping")
    expect(page.locator("[data-live-status]")).to_be_hidden()


def test_the_stuck_page_follows_the_index_without_a_reload(page, live_feed, upstream, sign_in, settings):
    from pages_support import environment, fill_index, start_work, worker_client
    from playwright.sync_api import expect

    settings.STUCK_HEARTBEAT_SECONDS = 0
    env, key = environment(upstream, "Stuck here")
    first = start_work(upstream, env["id"], key, state="active")
    fill_index(upstream, env["id"], key)
    sign_in("viewer")
    page.goto("/stuck/")
    page.evaluate("window.stillTheSamePage = true")
    expect(page.locator("[data-stuck-total]")).to_have_text("1")
    expect(page.locator(f'tr[data-work-id="{first.id}"]')).to_be_visible()

    # Another item gets stuck and the first is stopped elsewhere: the page follows, within a few refreshes.
    second = start_work(upstream, env["id"], key, state="active")
    with worker_client(upstream) as c:
        c.beta.environments.work.stop(first.id, environment_id=env["id"], force=True)
    fill_index(upstream, env["id"], key)  # what the sync does each interval
    expect(page.locator(f'tr[data-work-id="{second.id}"]')).to_be_visible()
    expect(page.locator(f'tr[data-work-id="{first.id}"]')).to_have_count(0)
    expect(page.locator("[data-stuck-total]")).to_have_text("1")
    assert page.evaluate("window.stillTheSamePage") is True, "the page was reloaded"


def test_the_stuck_page_keeps_a_selection_across_environments_and_stops_it_in_one_operation(
    page, live_feed, upstream, sign_in, settings
):
    """The stuck page follows its socket: while a row is checked, a note says stuck work changed and the
    selection stays; once nothing is checked, an item stuck in another environment appears without a reload; rows
    of both environments then go into one bulk stop."""
    from pages_support import environment, fill_index, start_work
    from playwright.sync_api import expect

    settings.STUCK_HEARTBEAT_SECONDS = 0
    east, east_key = environment(upstream, "East")
    west, west_key = environment(upstream, "West")
    first = start_work(upstream, east["id"], east_key, state="active")
    fill_index(upstream, east["id"], east_key)
    fill_index(upstream, west["id"], west_key)
    sign_in("operator")
    page.goto("/stuck/")
    page.evaluate("window.stillTheSamePage = true")
    first_box = page.locator(f'tr[data-work-id="{first.id}"] input[type=checkbox]')
    first_box.check()
    note = page.locator("#stuck-region [data-index-changed]")
    expect(note).to_be_hidden()

    # Stuck elsewhere, found by the feed's own sync: the list would change, but a row is checked.
    second = start_work(upstream, west["id"], west_key, state="active")
    expect(note).to_be_visible(timeout=15_000)
    expect(first_box).to_be_checked()
    expect(page.locator(f'tr[data-work-id="{second.id}"]')).to_have_count(0)

    # Nothing checked: the next frame brings the new row, and the page says how old its list is.
    first_box.uncheck()
    expect(page.locator(f'tr[data-work-id="{second.id}"]')).to_be_visible(timeout=15_000)
    expect(page.locator("[data-stuck-total]")).to_have_text("2")
    expect(page.locator("[data-stuck-read] [data-age-since]")).to_have_text(re.compile(r"^\d+ (s|min)"))
    expect(page.locator("#stuck-mark")).to_have_attribute("data-live-at", re.compile(r"^\d{4}-"))
    expect(page.locator("[data-live-status]")).to_be_hidden()  # the marks keep coming: nothing is stale
    assert page.evaluate("window.stillTheSamePage") is True, "the page was reloaded"

    page.locator(f'tr[data-work-id="{first.id}"] input[type=checkbox]').check()
    page.locator(f'tr[data-work-id="{second.id}"] input[type=checkbox]').check()
    page.get_by_role("button", name="Stop selected…").click()
    expect(page.locator("[data-bulk-environments]")).to_have_text("In 2 environments: East, West")
    expect(page.locator("[data-bulk-mode=force_stop]")).to_have_count(0)  # operators stop gracefully only
    page.fill("#bulk-stop-reason", "draining both")
    page.get_by_role("button", name="Stop 2 items").click()
    expect(page.locator("#bulk-progress")).to_have_attribute("data-bulk-status", "finished", timeout=30_000)
    expect(page.locator(f'[data-bulk-item="{first.id}"]')).to_have_attribute("data-result", "stopping")
    expect(page.locator(f'[data-bulk-item="{second.id}"]')).to_have_attribute("data-result", "stopping")
    page.goto("/bulk/")
    expect(page.locator("[data-bulk-operation]")).to_have_count(1)
    expect(page.locator("[data-bulk-operation] [data-bulk-counts]")).to_contain_text("2 stopping")


def test_a_new_environment_appears_on_the_overview_without_a_reload(page, live_feed, upstream, sign_in):
    from pages_support import environment
    from playwright.sync_api import expect

    first, _ = environment(upstream, "First")
    sign_in("viewer")
    page.goto("/")
    expect(page.locator(f"#live-tile-{first['id']}")).to_have_attribute(
        "data-live-at", re.compile(r"^\d{4}-")
    )
    page.evaluate("window.stillTheSamePage = true")

    second, _ = environment(upstream, "Second")

    expect(page.locator(f"#tile-{second['id']}")).to_be_visible(timeout=15_000)
    expect(page.locator(f"#live-tile-{second['id']}")).to_have_attribute(
        "data-live-at", re.compile(r"^\d{4}-")
    )
    expect(page.locator(f"#tile-{first['id']}")).to_be_visible()
    assert page.evaluate("window.stillTheSamePage") is True, "the page was reloaded"


def test_every_page_tells_the_same_story_without_a_reload(page, live_feed, upstream, sign_in, settings):
    """The headline, the tile, the stuck page and the item page show the same stuck count and the same state of an
    item stopped elsewhere, each within two feed intervals, and a new row appears on the environment page: all from
    the live feed's own sync of the work index, with no page reloaded."""
    from pages_support import environment, start_work, worker_client
    from playwright.sync_api import expect

    settings.STUCK_HEARTBEAT_SECONDS = 0  # every active item is stuck at once
    # Two intervals, and the time a region takes to be read and drawn again.
    within = int((2 * max(1.0, INTERVAL) + 3) * 1000)
    env, key = environment(upstream, "Told the same")
    env_id = env["id"]
    first = start_work(upstream, env_id, key, state="active")
    second = start_work(upstream, env_id, key, state="active")
    sign_in("operator")

    page.goto("/")
    tabs = {"overview": page}
    for name, path in (
        ("stuck", "/stuck/"),
        ("item", f"/environments/{env_id}/work/{first.id}/"),
        ("environment", f"/environments/{env_id}/"),
    ):
        tab = page.context.new_page()
        tab.on("console", page.browser_errors.console)
        tab.on("pageerror", page.browser_errors.page_error)
        tab.goto(path)
        tabs[name] = tab
    overview, stuck_page, item, env_page = tabs["overview"], tabs["stuck"], tabs["item"], tabs["environment"]
    for tab in tabs.values():
        tab.evaluate("window.stillTheSamePage = true")

    # The feed fills the index by itself: two stuck items, the same number everywhere.
    expect(overview.locator("[data-headline-stuck]")).to_have_text("2 stuck items", timeout=within + 5_000)
    expect(overview.locator(f"#figures-{env_id} [data-figure=stuck]")).to_have_text("2", timeout=within)
    expect(stuck_page.locator("[data-stuck-total]")).to_have_text("2", timeout=within)
    expect(item.locator(f"#item-status-{first.id} [data-state]")).to_have_text("active")
    expect(item.locator(f"#item-status-{first.id} .badge.stuck")).to_be_visible()
    expect(item.locator("#item-body [data-action=stop]")).to_be_visible()

    # Stopped elsewhere (a worker's client, not this dashboard).
    with worker_client(upstream) as c:
        c.beta.environments.work.stop(first.id, environment_id=env_id, force=True)

    expect(overview.locator("[data-headline-stuck]")).to_have_text("1 stuck item", timeout=within)
    expect(overview.locator(f"#figures-{env_id} [data-figure=stuck]")).to_have_text("1", timeout=within)
    expect(stuck_page.locator("[data-stuck-total]")).to_have_text("1", timeout=within)
    expect(stuck_page.locator(f'tr[data-work-id="{first.id}"]')).to_have_count(0, timeout=within)
    expect(stuck_page.locator(f'tr[data-work-id="{second.id}"]')).to_be_visible()
    expect(item.locator(f"#item-status-{first.id} [data-state]")).to_have_text("stopped", timeout=within)
    # The item page's panels and actions follow too: the fields say stopped, and Stop is no longer offered.
    expect(item.locator("#item-body .fields").first).to_contain_text("stopped", timeout=within)
    expect(item.locator("#item-body [data-action=stop]")).to_have_count(0, timeout=within)
    expect(item.locator("#item-body")).to_contain_text("Stopped: nothing left to stop.")
    expect(env_page.locator(f"#row-state-{first.id} .badge").first).to_have_text("stopped", timeout=within)
    expect(env_page.locator("[data-count-stuck]")).to_have_text("1 stuck", timeout=within)

    # A new work item: its row appears on the environment page, and the counts follow.
    created = upstream.enqueue(env_id)
    expect(env_page.locator(f'tr[data-work-id="{created["id"]}"]')).to_be_visible(timeout=within)
    expect(env_page.locator("[data-count-state=queued]")).to_have_text("1", timeout=within)
    expect(env_page.locator("[data-count-total]")).to_have_text("3")

    for name, tab in tabs.items():
        assert tab.evaluate("window.stillTheSamePage") is True, f"the {name} page was reloaded"
