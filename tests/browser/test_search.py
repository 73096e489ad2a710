"""The header's search box, as a person uses it: a session id and a key=value pair find work in every environment
(from the work index), and a work id goes straight to its page."""

from __future__ import annotations


def test_the_header_search_finds_work_by_session_and_by_key_value_across_environments(
    page, upstream, sign_in
):
    from pages_support import environment, fill_index, start_work
    from playwright.sync_api import expect

    east, east_key = environment(upstream, "East")
    west, west_key = environment(upstream, "West")
    tagged_east = upstream.enqueue(east["id"], metadata={"ticket": "OPS-7"})["id"]
    session_work = start_work(upstream, west["id"], west_key, state="active", metadata={"ticket": "OPS-8"})
    tagged_west = upstream.enqueue(west["id"], metadata={"ticket": "OPS-7"})["id"]
    fill_index(upstream, east["id"], east_key)
    fill_index(upstream, west["id"], west_key)
    sign_in("viewer")
    page.goto("/")

    box = page.locator("#site-search-q")
    box.fill(session_work.data.id)
    box.press("Enter")
    expect(page.locator("[data-match-count]")).to_have_text("1")
    expect(page.locator(f'tr[data-work-id="{session_work.id}"]')).to_be_visible()

    box = page.locator("#site-search-q")
    box.fill("ticket=OPS-7")
    box.press("Enter")
    expect(page.locator("[data-match-count]")).to_have_text("2")
    expect(page.locator(f'tr[data-work-id="{tagged_east}"]')).to_be_visible()
    expect(page.locator(f'tr[data-work-id="{tagged_west}"]')).to_be_visible()
    expect(page.locator(f'tr[data-work-id="{session_work.id}"]')).to_have_count(0)

    box = page.locator("#site-search-q")
    box.fill(tagged_west)
    box.press("Enter")
    page.wait_for_url(f"**/environments/{west['id']}/work/{tagged_west}/")
    expect(page.locator("h1")).to_contain_text(tagged_west)
