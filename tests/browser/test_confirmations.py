"""Destructive actions ask first and want a reason; a new secret is shown once, and a reload mints nothing."""

from __future__ import annotations

from pages_support import environment
from playwright.sync_api import expect

from dashboard.gateway.models import PersonalAccessToken
from dashboard.models import AuditEntry, EnvironmentKey


def test_a_reload_after_creating_a_token_mints_nothing_and_revoking_asks_for_a_reason(page, shoot, sign_in):
    sign_in("operator")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tokens").click()
    page.fill("#id_name", "nightly-report")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#token-secret")
    expect(secret).to_contain_text("wqd_pat_")
    shoot("token-shown-once")

    page.reload()
    expect(page.locator("#token-secret")).to_have_count(0)
    assert PersonalAccessToken.objects.count() == 1

    page.get_by_role("link", name="Revoke").click()
    expect(page.locator("#confirm-reason")).to_be_focused()
    page.locator("[data-confirm]").click()  # the browser refuses an empty reason: nothing happens
    assert PersonalAccessToken.objects.get().status == "active"
    page.fill("#confirm-reason", "report moved to the new pipeline")
    shoot("token-revoke-confirm")
    page.locator("[data-confirm]").click()
    expect(page.locator("#own-tokens .badge")).to_have_text("revoked")
    entry = AuditEntry.objects.get(action="token_revoke")
    assert entry.reason == "report moved to the new pipeline"


def test_removing_an_environment_key_asks_for_a_reason(page, shoot, sign_in, upstream):
    env, _ = environment(upstream, "east")
    sign_in("admin")
    page.goto("/configure/")
    page.locator(f'[data-key-row="{env["id"]}"]').get_by_role("link", name="Remove").click()
    expect(page.locator("h1")).to_contain_text("Remove the key")
    expect(page.locator("#confirm-reason")).to_be_focused()
    page.get_by_role("link", name="Cancel").click()
    expect(page.locator(f'[data-key-row="{env["id"]}"]')).to_be_visible()
    page.locator(f'[data-key-row="{env["id"]}"]').get_by_role("link", name="Remove").click()
    page.fill("#confirm-reason", "environment retired")
    page.locator("[data-confirm]").click()
    expect(page.locator(f'[data-key-row="{env["id"]}"]')).to_have_count(0)
    assert AuditEntry.objects.get(action="configure_key_remove").reason == "environment retired"


def test_a_reload_after_creating_a_display_link_creates_nothing(page, sign_in, upstream):
    environment(upstream, "east")
    sign_in("admin")
    page.goto("/displays/")
    page.fill("#display-name", "Ops room")
    page.get_by_role("button", name="Create display link").click()
    expect(page.locator("[data-display-url]")).to_contain_text("/display/")
    page.reload()
    expect(page.locator("[data-display-url]")).to_have_count(0)
    expect(page.locator("[data-display-link]")).to_have_count(1)


def test_a_wrong_environment_key_does_not_replace_a_working_one(page, shoot, sign_in, upstream):
    env, key = environment(upstream, "east")
    sign_in("admin")
    page.goto("/configure/")
    page.select_option("#key-environment", env["id"])
    page.fill("#key-value", "sk-ant-oat01-" + "w" * 40)
    page.get_by_role("button", name="Save the key").click()
    expect(page.locator("[data-problems]")).to_contain_text("Not saved")
    expect(page.get_by_text("The key in use is kept.")).to_be_visible()
    shoot("configure-wrong-key")
    assert EnvironmentKey.objects.get(environment_id=env["id"]).key() == key
    # The environment's work is still listed with the key that works.
    page.goto(f"/environments/{env['id']}/")
    expect(page.locator("[data-failure-kind=no_environment_key]")).to_have_count(0)
    # The refused form answered 400, as it should: the browser logs that, and only that.
    expected = [e for e in page.browser_errors if "status of 400" in e and e.endswith("/configure/)")]
    assert len(expected) == 1
    page.browser_errors.remove(expected[0])
