"""axe-core on every main page, as an admin against the emulator, light and dark, at a desktop and a phone size:
no violation of any impact (minor ones included). axe-core is the copy bundled with axe-playwright-python (no network);
a screenshot of each page in dark mode is kept under test-artifacts/screenshots/."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from live_support import reset_local_state
from pages_support import environment, fill_index, start_work

from dashboard.audit import record
from dashboard.live import feed
from dashboard.live.models import DisplayLink
from dashboard.models import BulkItem, BulkOperation

SIZES = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture
def live_feed(live_server_url: str, settings: Any) -> Iterator[None]:
    settings.FEED_INTERVAL_SECONDS = 0.5
    settings.FEED_DIRECTORY_INTERVAL_SECONDS = 1.0
    reset_local_state()
    yield
    runtime = feed.current_runtime()
    if runtime is not None and runtime.loop.is_running():
        asyncio.run_coroutine_threadsafe(feed.shutdown(), runtime.loop).result(timeout=10)
    reset_local_state()


def violations(page: Any, *, only: list[str] | None = None) -> list[str]:
    options: dict[str, Any] = {"resultTypes": ["violations"]}
    if only:
        options["runOnly"] = {"type": "rule", "values": only}
    results = Axe().run(page, options=options)
    found = []
    for violation in results.response["violations"]:
        targets = ", ".join(" ".join(node["target"]) for node in violation["nodes"][:5])
        found.append(f"{violation['id']} ({violation['impact']}): {violation['help']} at {targets}")
    return found


def main_pages(upstream: Any, settings: Any) -> tuple[dict[str, str], str]:
    settings.STUCK_HEARTBEAT_SECONDS = 0  # active work is stuck at once, so the stuck page has rows
    env, key = environment(upstream, "Payments")
    item = start_work(upstream, env["id"], key, state="active", metadata={"owner": "dana", "ticket": "OPS-1"})
    start_work(upstream, env["id"], key, state="stopping")  # a third state's colours
    upstream.enqueue(env["id"], metadata={"owner": "lee"})
    fill_index(upstream, env["id"], key)
    link = DisplayLink(name="Ops room", environments=[env["id"]])
    token = link.issue_token()
    link.save()
    record(
        user=None,
        username="dana",
        action="stop",
        outcome="succeeded",
        environment_id=env["id"],
        work_id=item.id,
        reason="worker crashed",
        sent={},
        upstream_status=200,
    )
    operation = BulkOperation.objects.create(reason="worker crashed", selection="stuck_page", username="dana")
    BulkItem.objects.create(
        operation=operation,
        position=0,
        environment_id=env["id"],
        work_id=item.id,
        status=BulkItem.Status.STOPPING,
    )
    base = f"/environments/{env['id']}"
    pages = {
        "overview": "/",
        "environment": f"{base}/",
        "stuck": "/stuck/",
        "work-item": f"{base}/work/{item.id}/",
        "stop-confirm": f"{base}/work/{item.id}/stop/",
        "search": "/search?q=owner%3Ddana",
        "audit-log": "/audit/",
        "bulk-history": "/bulk/",
        "bulk-operation": f"/bulk/{operation.pk}/",
        "configure": "/configure/",
        "displays": "/displays/",
        "tokens": "/tokens/",
        "wall-display": f"/display/{token}/",
    }
    return pages, env["id"]


def test_every_main_page_has_no_accessibility_violation(page, live_feed, sign_in, upstream, settings, shoot):
    """Every rule at a desktop and a phone size in the light scheme; colour contrast again in the dark one (the only
    rule a colour scheme can change)."""
    pages, _ = main_pages(upstream, settings)
    found: list[str] = []

    def check(name: str) -> None:
        for size, viewport in SIZES.items():
            page.set_viewport_size(viewport)
            page.emulate_media(color_scheme="light")
            found.extend(f"{name}, {size}, light: {v}" for v in violations(page))
        page.set_viewport_size(SIZES["desktop"])
        page.emulate_media(color_scheme="dark")
        found.extend(f"{name}, dark: {v}" for v in violations(page, only=["color-contrast"]))
        shoot(f"{name}-dark")

    page.goto("/accounts/login/")
    check("login")
    sign_in("admin")
    for name, url in pages.items():
        page.goto(url)
        check(name)
    assert not found, "axe found:\n" + "\n".join(found)


def test_a_person_s_colour_choice_overrides_the_system_s(page, sign_in, upstream, shoot):
    environment(upstream, "Payments")
    sign_in("viewer")
    background = "() => getComputedStyle(document.body).backgroundColor"

    page.emulate_media(color_scheme="light")
    page.goto("/")
    light = page.evaluate(background)
    page.select_option("#theme-choice", "dark")
    page.get_by_role("button", name="Set").click()
    page.wait_for_url("**/")
    assert page.evaluate(background) != light
    assert page.locator("html").get_attribute("data-theme") == "dark"
    assert violations(page, only=["color-contrast"]) == []
    shoot("chosen-dark")

    # Chosen light stays light on a dark system; "System colours" follows the system again.
    page.emulate_media(color_scheme="dark")
    page.select_option("#theme-choice", "light")
    page.get_by_role("button", name="Set").click()
    page.wait_for_url("**/")
    assert page.evaluate(background) == light
    page.select_option("#theme-choice", "auto")
    page.get_by_role("button", name="Set").click()
    page.wait_for_url("**/")
    assert page.locator("html").get_attribute("data-theme") is None
    assert page.evaluate(background) != light
