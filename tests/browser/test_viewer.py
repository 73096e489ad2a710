"""As a viewer: every page readable, no action buttons anywhere, and a forged POST refused with 403 and audited."""

from __future__ import annotations

from pages_support import environment, fill_index, start_work, worker_client
from playwright.sync_api import expect

from dashboard.models import AuditEntry


def test_viewer_sees_no_actions_and_a_forged_post_gets_403(
    page, shoot, sign_in, upstream, settings, live_server_url
):
    settings.STUCK_HEARTBEAT_SECONDS = 0
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, state="active")
    fill_index(upstream, env["id"], key)
    sign_in("viewer")
    tile = page.locator(f'[data-environment-id="{env["id"]}"]')
    expect(tile.locator('[data-figure="active"]')).to_have_text("1")
    page.get_by_role("link", name="Refresh").click()  # htmx fetches the tiles region again
    expect(tile.locator('[data-figure="stuck"]')).to_have_text("1")
    shoot("overview")

    page.goto(f"/environments/{env['id']}/")
    expect(page.locator(f'tr[data-work-id="{item.id}"]')).to_be_visible()
    expect(page.locator('input[data-select-group="work"]')).to_have_count(0)
    expect(page.locator("#bulk-form")).to_have_count(0)
    shoot("environment")
    page.goto("/stuck/")
    expect(page.locator("[data-stuck-total]")).to_have_text("1")
    expect(page.get_by_role("link", name="Stop them…")).to_have_count(0)
    shoot("stuck")
    page.goto(f"/environments/{env['id']}/work/{item.id}/")
    expect(page.locator("[data-no-actions]")).to_be_visible()
    expect(page.locator("[data-action]")).to_have_count(0)
    expect(page.get_by_role("link", name="Configure")).to_have_count(0)
    shoot("work-item")

    # A forged force-stop with the viewer's own session and a valid CSRF token.
    token = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']")
    upstream.reset_requests()
    response = page.request.post(
        f"/environments/{env['id']}/work/{item.id}/force-stop/",
        form={"csrfmiddlewaretoken": token, "reason": "forged"},
        headers={"X-CSRFToken": token, "Referer": f"{live_server_url}/"},
    )

    assert response.status == 403
    assert upstream.requests()["by_route"].get("stop", 0) == 0
    with worker_client(upstream) as c:
        assert c.beta.environments.work.retrieve(item.id, environment_id=env["id"]).state == "active"
    denied = AuditEntry.objects.get(username="viewer", outcome="denied")
    assert denied.action in ("stop", "force_stop")
    assert denied.work_id == item.id
    page.reload()
    expect(page.locator('tr[data-audit-entry][data-outcome="denied"]')).to_have_count(1)
    shoot("work-item-after-forged-post")
