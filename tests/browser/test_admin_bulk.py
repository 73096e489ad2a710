"""As an admin: bulk force-stop every stuck item of an environment, with the count preview and the typed
confirmation, and watch the result item by item; select items with select-all and shift-click."""

from __future__ import annotations

import re

from pages_support import environment, fill_index, start_work, worker_client
from playwright.sync_api import expect


def test_admin_bulk_force_stops_the_stuck_items_of_an_environment(page, shoot, sign_in, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0
    env, key = environment(upstream, "west")
    stuck = [start_work(upstream, env["id"], key, state="active") for _ in range(3)]
    waiting = upstream.enqueue(env["id"])["id"]  # queued a moment ago: not stuck
    fill_index(upstream, env["id"], key)
    sign_in("admin")

    page.goto(f"/environments/{env['id']}/")
    expect(page.locator("#work-list tbody tr")).to_have_count(4)
    page.get_by_label("Stuck only").check()
    page.get_by_role("button", name="Apply").click()  # htmx swaps the list in and puts the filter in the URL
    expect(page).to_have_url(re.compile(r"[?&]stuck=1"))
    expect(page.locator("#work-list tbody tr")).to_have_count(3)
    expect(page.locator("tr.is-stuck")).to_have_count(3)
    shoot("stuck-filter")
    page.get_by_role("button", name="Every stuck item in this environment…").click()

    expect(page.locator("[data-count]")).to_have_attribute("data-count", "3")
    shoot("bulk-confirm")
    force = page.locator('form[data-bulk-mode="force_stop"]')
    force.locator("#bulk-force-reason").fill("runaway sessions after the 14:00 deploy")
    submit = force.locator("#bulk-force-submit")
    phrase = force.locator("label[for=bulk-force-confirm] code").inner_text()
    force.locator("#bulk-force-confirm").fill("not the phrase")
    expect(submit).to_be_disabled()
    force.locator("#bulk-force-confirm").fill(phrase)
    expect(submit).to_be_enabled()
    submit.click()

    progress = page.locator("#bulk-progress")
    expect(progress).to_have_attribute("data-bulk-status", "finished", timeout=20_000)
    for item in stuck:
        expect(progress.locator(f'tr[data-bulk-item="{item.id}"]')).to_have_attribute(
            "data-result", "stopped"
        )
    shoot("bulk-result")
    with worker_client(upstream) as c:
        assert {
            c.beta.environments.work.retrieve(item.id, environment_id=env["id"]).state for item in stuck
        } == {"stopped"}
        assert c.beta.environments.work.retrieve(waiting, environment_id=env["id"]).state == "queued"


def test_admin_selects_items_with_select_all_and_shift_click(page, shoot, sign_in, upstream):
    env, key = environment(upstream, "north")
    ids = [upstream.enqueue(env["id"])["id"] for _ in range(5)][::-1]  # as listed: newest first
    fill_index(upstream, env["id"], key)
    sign_in("admin")
    page.goto(f"/environments/{env['id']}/")
    boxes = page.locator('input[data-select-group="work"]')
    count = page.locator('[data-selected-count="work"]')
    selected_button = page.get_by_role("button", name="Stop or force-stop selected…")

    expect(selected_button).to_be_disabled()
    boxes.nth(0).click()
    boxes.nth(3).click(modifiers=["Shift"])
    expect(count).to_have_text("4")
    expect(page.locator("[data-select-all]")).to_have_js_property("indeterminate", True)
    page.locator("[data-select-all]").click()
    expect(count).to_have_text("5")
    boxes.nth(4).click()
    expect(count).to_have_text("4")
    shoot("selection")
    selected_button.click()

    expect(page.locator("[data-count]")).to_have_attribute("data-count", "4")
    for work_id in ids[:4]:
        expect(page.locator("tr[data-bulk-item]", has_text=work_id)).to_have_count(1)
    shoot("bulk-confirm-selected")
