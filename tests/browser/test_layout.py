"""Layout at the sizes operators use: the environment page's work list fits a 1440 px screen without sideways
scrolling, however long the metadata (shortened, the whole on hover)."""

from __future__ import annotations


def test_the_work_list_fits_1440_pixels_with_long_metadata(page, upstream, sign_in, settings):
    from pages_support import environment, fill_index, start_work
    from playwright.sync_api import expect

    settings.STUCK_HEARTBEAT_SECONDS = 0  # stuck, with its reason in the state column
    env, key = environment(upstream, "Wide")
    long_value = "incident-" + "x" * 120
    item = start_work(
        upstream,
        env["id"],
        key,
        state="active",
        metadata={
            "ticket": long_value,
            "owner": "dana@example.com",
            "pipeline": "nightly-reindex-" + "y" * 60,
        },
    )
    fill_index(upstream, env["id"], key)
    sign_in("operator")
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"/environments/{env['id']}/")
    row = page.locator(f'tr[data-work-id="{item.id}"]')
    expect(row).to_be_visible()

    wrap = page.locator("#work-list .table-wrap")
    overflow = wrap.evaluate("el => el.scrollWidth - el.clientWidth")
    assert overflow <= 0, f"the work list scrolls sideways by {overflow} px at 1440 px"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # Shortened on the page, whole on hover.
    ticket = row.locator(".metadata li", has_text="ticket")
    expect(ticket).to_have_attribute("title", f"ticket={long_value}")
