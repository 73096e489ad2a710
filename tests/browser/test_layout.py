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


def test_stuck_rows_are_cards_on_a_phone_with_state_and_why_first(page, upstream, sign_in, settings):
    from pages_support import environment, fill_index, start_work
    from playwright.sync_api import expect

    settings.STUCK_HEARTBEAT_SECONDS = 0
    env, key = environment(upstream, "Pocket")
    item = start_work(upstream, env["id"], key, state="active", metadata={"ticket": "incident-" + "z" * 80})
    fill_index(upstream, env["id"], key)
    sign_in("operator")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/stuck/")
    row = page.locator(f'tr[data-work-id="{item.id}"]')
    expect(row).to_be_visible()

    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        "the page scrolls sideways"
    )
    wrap = page.locator("[data-stuck-items]").locator("xpath=..")
    assert wrap.evaluate("el => el.scrollWidth <= el.clientWidth"), "the stuck items scroll sideways"
    # The card reads top-down: the state and why it is stuck above the work id and the rest.
    state_top = row.locator("[data-state]").bounding_box()["y"]
    id_top = row.locator("td.id").bounding_box()["y"]
    assert state_top < id_top
    expect(row.locator("[data-action=stop]")).to_be_visible()


def test_a_work_item_on_a_phone_shows_its_actions_first(page, upstream, sign_in):
    from pages_support import environment, fill_index, start_work
    from playwright.sync_api import expect

    env, key = environment(upstream, "Pocket")
    item = start_work(upstream, env["id"], key, state="active")
    fill_index(upstream, env["id"], key)
    sign_in("operator")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/environments/{env['id']}/work/{item.id}/")
    actions = page.locator("#item-body .item-actions")
    expect(actions.locator("[data-action=stop]")).to_be_visible()
    fields_top = page.locator("#fields-heading").bounding_box()["y"]
    assert actions.bounding_box()["y"] < fields_top, "the actions come after the fields"
    # On a wide screen the page keeps its order: the fields first.
    page.set_viewport_size({"width": 1440, "height": 900})
    assert actions.bounding_box()["y"] > page.locator("#fields-heading").bounding_box()["y"]
