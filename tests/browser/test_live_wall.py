"""The wall display in a real browser: opened without a login through its link, large tiles that follow the queue,
a clock in the link's time zone, colours for starvation, no buttons, and a DOM that does not grow as updates
keep arriving (it runs for days)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from live_support import reset_local_state
from pages_support import environment

from dashboard.live import feed
from dashboard.live.models import DisplayLink


@pytest.fixture
def fast_feed(live_server_url: str, settings: Any) -> Iterator[None]:
    settings.FEED_INTERVAL_SECONDS = 0.2
    settings.FEED_DIRECTORY_INTERVAL_SECONDS = 1.0
    reset_local_state()
    yield
    runtime = feed.current_runtime()
    if runtime is not None and runtime.loop.is_running():
        asyncio.run_coroutine_threadsafe(feed.shutdown(), runtime.loop).result(timeout=10)
    reset_local_state()


def test_the_wall_display_follows_the_queue_for_hours_without_growing(page, fast_feed, upstream, shoot):
    from playwright.sync_api import expect

    shown, _ = environment(upstream, "Payments")
    hidden, _ = environment(upstream, "Internal")
    link = DisplayLink(name="Ops room", environments=[shown["id"]], time_zone="Asia/Tokyo")
    token = link.issue_token()
    link.save()
    tile = page.locator(f"#wall-{shown['id']}")

    page.goto(f"/display/{token}/")
    expect(tile).to_have_attribute("data-live-at", re.compile(r"^\d{4}-"))
    expect(page.locator(f"#wall-{hidden['id']}")).to_have_count(0)
    expect(page.locator("[data-clock]")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    expect(page.locator(".wall-zone")).to_have_text("Asia/Tokyo")
    assert page.locator("button, form, input, select, textarea").count() == 0
    expect(tile).to_have_class(re.compile(r"\btone-ok\b"))

    # Work waits and nobody polls: the tile turns red and says why.
    upstream.enqueue(shown["id"])
    expect(tile.locator("[data-figure=depth]")).to_have_text("1")
    expect(tile).to_have_class(re.compile(r"\btone-critical\b"))
    expect(tile.locator(".wall-state")).to_contain_text("no worker polling")
    page.evaluate(
        "window.liveUpdates = 0;"
        "document.body.addEventListener('htmx:wsAfterMessage', function () { window.liveUpdates += 1; });"
    )
    nodes_before = page.evaluate("document.getElementsByTagName('*').length")
    shoot("wall-display")

    # Many updates later (five a second here; every few seconds in production) the page has the same nodes.
    for depth in range(2, 6):
        upstream.enqueue(shown["id"])
        expect(tile.locator("[data-figure=depth]")).to_have_text(str(depth))
    # What is measured is the page's size after many updates, not their pace: a busy machine may take longer.
    deadline = time.monotonic() + 60
    while page.evaluate("window.liveUpdates") < 40:
        assert time.monotonic() < deadline, "updates stopped arriving"
        page.wait_for_timeout(200)
    nodes_after = page.evaluate("document.getElementsByTagName('*').length")
    assert nodes_after == nodes_before, (nodes_before, nodes_after)
    assert page.evaluate("document.querySelectorAll('[id=\"wall-" + shown["id"] + "\"]').length") == 1
    expect(page.locator("[data-live-status]")).to_be_hidden()


def test_revoking_a_link_blanks_the_open_display(page, fast_feed, upstream, live_server_url):
    from pages_support import PASSWORD, make_user
    from playwright.sync_api import expect

    shown, _ = environment(upstream, "Payments")
    link = DisplayLink(name="Lobby")
    token = link.issue_token()
    link.save()
    page.goto(f"/display/{token}/")
    expect(page.locator(f"#wall-{shown['id']}")).to_have_attribute("data-live-at", re.compile(r"^\d{4}-"))

    # An admin revokes it from the display-links page, in another browser.
    make_user("admin", password=PASSWORD)
    admin = page.context.browser.new_context(base_url=live_server_url)
    try:
        tab = admin.new_page()
        tab.goto("/accounts/login/")
        tab.fill("#id_username", "admin")
        tab.fill("#id_password", PASSWORD)
        tab.click("main button[type=submit]")
        tab.wait_for_url(lambda url: "/accounts/login/" not in url)
        tab.goto("/displays/")
        tab.locator(f'[data-display-link="{link.pk}"]').get_by_role("link", name="Revoke").click()
        expect(tab.locator("#confirm-reason")).to_be_focused()
        tab.fill("#confirm-reason", "the screen moved rooms")
        tab.locator("[data-confirm]").click()
        expect(tab.locator(f'[data-display-link="{link.pk}"]')).to_contain_text("revoked")
    finally:
        admin.close()

    badge = page.locator("[data-live-status]")
    expect(badge).to_be_visible()
    expect(badge).to_contain_text("This display link was revoked.")
    expect(page.locator(f"#wall-{shown['id']}")).to_be_hidden()


def test_the_wall_display_fills_a_1080p_and_a_4k_screen_alike(page, fast_feed, upstream, shoot):
    """The same layout at 1920x1080 and 3840x2160, twice as large on the 4K screen; the tiles use the screen's
    height, and the age of the oldest waiting item stays on one line, even the longest the counter writes."""
    from playwright.sync_api import expect

    env, _ = environment(upstream, "Payments")
    environment(upstream, "Search")
    upstream.enqueue(env["id"])
    link = DisplayLink(name="Ops room")
    token = link.issue_token()
    link.save()
    tile = page.locator(f"#wall-{env['id']}")
    page.goto(f"/display/{token}/")
    expect(tile.locator("[data-figure=depth]")).to_have_text("1")
    expect(tile.locator("[data-figure=oldest] [data-age-since]")).to_have_count(1)

    measured = {}
    for name, width, height in (("1080p", 1920, 1080), ("4k", 3840, 2160)):
        page.set_viewport_size({"width": width, "height": height})
        shoot(f"wall-{name}")
        # Written and measured in one script, before the next update can replace the tile.
        measured[name] = page.evaluate(
            """id => {
                const tile = document.getElementById("wall-" + id);
                const age = tile.querySelector("[data-figure=oldest]");
                age.querySelector("[data-age-since]").textContent = "23 h 59 min";
                const tiles = [...document.querySelectorAll(".wall-tile")].map(t => t.getBoundingClientRect());
                return {
                    number: parseFloat(getComputedStyle(tile.querySelector("[data-figure=depth]")).fontSize),
                    tilesBottom: Math.max(...tiles.map(box => box.bottom)),
                    ageLines: Math.round(age.getBoundingClientRect().height / parseFloat(getComputedStyle(age).lineHeight)),
                    ageFits: age.scrollWidth <= age.clientWidth,
                };
            }""",
            env["id"],
        )
        assert measured[name]["tilesBottom"] > 0.85 * height, (name, measured[name])
        assert measured[name]["ageLines"] == 1 and measured[name]["ageFits"], (name, measured[name])
    assert measured["4k"]["number"] >= 1.9 * measured["1080p"]["number"], measured
