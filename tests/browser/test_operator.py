"""As an operator: find a stuck item, patch its metadata and see the diff first, then stop it; on the way, the
local-time switch and the copy button."""

from __future__ import annotations

import re

from pages_support import environment, fill_index, start_work, worker_client
from playwright.sync_api import expect


def test_operator_finds_a_stuck_item_patches_its_metadata_and_stops_it(
    page, shoot, sign_in, upstream, settings
):
    settings.STUCK_HEARTBEAT_SECONDS = 0  # an active item is stuck as soon as its heartbeat has any age
    env, key = environment(upstream, "east")
    stuck = start_work(
        upstream, env["id"], key, state="active", metadata={"owner": "dana", "ticket": "OPS-1"}
    )
    upstream.enqueue(env["id"])
    fill_index(upstream, env["id"], key)
    sign_in("operator")

    # The overview counts it; the stuck page lists it with the reason.
    expect(page.locator(f'[data-environment-id="{env["id"]}"] [data-figure="stuck"]')).to_have_text("1")
    shoot("overview")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Stuck").click()
    row = page.locator(f'tr[data-work-id="{stuck.id}"]')
    expect(row).to_contain_text("No heartbeat for")
    shoot("stuck")
    row.get_by_role("link", name=stuck.id).click()

    # The item page: every field, the lease is stuck, and an operator's actions.
    expect(page.locator("[data-lease-status]")).to_have_attribute("data-lease-status", "stuck")
    expect(page.locator("[data-action]")).to_have_count(2)
    shoot("work-item")

    # Patch: change owner, delete ticket, add incident; the diff shows before anything is sent.
    page.locator('[data-action="patch_metadata"]').click()
    page.locator('tr:has(input[value="owner"]) input[name="value"]').fill("lee")
    page.locator('tr:has(input[value="ticket"]) input[name="delete"]').check()
    new_row = page.locator('tr:has(input[placeholder="new key"])').first
    new_row.locator('input[name="key"]').fill("incident")
    new_row.locator('input[name="value"]').fill("INC-9")
    page.fill("#metadata-reason", "handing over to lee")
    page.get_by_role("button", name="Preview the change").click()
    diff = page.locator("table[data-diff]")
    expect(diff.locator('tr[data-change="changed"]')).to_contain_text("dana")
    expect(diff.locator('tr[data-change="changed"]')).to_contain_text("lee")
    expect(diff.locator('tr[data-change="removed"]')).to_contain_text("ticket")
    expect(diff.locator('tr[data-change="added"]')).to_contain_text("INC-9")
    shoot("metadata-diff")
    with worker_client(upstream) as c:
        assert c.beta.environments.work.retrieve(stuck.id, environment_id=env["id"]).metadata == {
            "owner": "dana",
            "ticket": "OPS-1",
        }
    page.locator("[data-send]").click()
    expect(page.locator("dl[data-metadata]")).to_contain_text("INC-9")
    shoot("metadata-patched")

    # Stop it, with a reason.
    page.locator('[data-action="stop"]').click()
    expect(page.locator("h1")).to_have_text("Stop this work item")
    expect(page.locator("#stop-reason")).to_be_focused()  # the reason is what to type first
    page.fill("#stop-reason", "worker crashed, lease abandoned")
    shoot("stop-confirm")
    page.locator("[data-confirm-stop]").click()
    expect(page.locator("[data-state]").first).to_have_text("stopping")
    expect(page.locator("tr[data-audit-entry]")).to_have_count(2)
    shoot("stopped")
    with worker_client(upstream) as c:
        item = c.beta.environments.work.retrieve(stuck.id, environment_id=env["id"])
    assert item.state == "stopping"
    assert item.metadata == {"owner": "lee", "incident": "INC-9"}


def test_times_switch_to_local_time_and_ids_copy(page, shoot, sign_in, upstream):
    env, key = environment(upstream, "east")
    item = upstream.enqueue(env["id"])
    fill_index(upstream, env["id"], key)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in("viewer")
    page.goto(f"/environments/{env['id']}/")

    created = page.locator(f'tr[data-work-id="{item["id"]}"] time').first
    expect(created).to_have_text(re.compile(r"just now|\d+ seconds? ago"))
    expect(created).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    switch = page.locator("[data-time-mode-toggle]")
    switch.click()
    expect(switch).to_have_attribute("aria-pressed", "true")
    expect(created).to_have_text(re.compile(r"\d{4}"))  # an absolute local time now
    page.wait_for_load_state("networkidle")
    page.reload()
    expect(page.locator("[data-time-mode-toggle]")).to_have_attribute("aria-pressed", "true")  # remembered
    shoot("local-time")

    copy = page.locator(f'tr[data-work-id="{item["id"]}"] button[data-copy]')
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == item["id"]
