"""As a viewer: the environment page's history charts, a window picked with a link (swapped in place), a bucket's
values on hover, and the time axis in local time when the person asks for it."""

from __future__ import annotations

import re
from datetime import timedelta

from django.utils import timezone
from pages_support import environment
from playwright.sync_api import expect

from dashboard.index import history
from dashboard.index.models import IndexSample


def test_the_history_charts_switch_window_in_place_and_follow_the_local_time_switch(
    page, shoot, sign_in, upstream
):
    env, _ = environment(upstream, "charted")
    last = history.minute_end(timezone.now())
    IndexSample.objects.bulk_create(
        IndexSample(
            environment_id=env["id"],
            at=last - n * timedelta(minutes=1),
            minute=int((last - n * timedelta(minutes=1)).timestamp() // 60),
            stuck=9 if n == 2 * 24 * 60 else 2,
            live=5,
            stopped_per_minute=1.0,
            ack_p50_seconds=3.0,
            ack_p95_seconds=20.0,
        )
        for n in range(0, 7 * 24 * 60, 10)
    )
    # The live feed writes the environment's real sample (no stuck item) for each minute that ends during the test,
    # so "latest" is 2 (the samples above) or 0 (the feed's, when the test crosses a minute).
    sign_in("viewer")
    page.goto(f"/environments/{env['id']}/")
    section = page.locator("#history")
    expect(section.locator("[data-chart-summary]").first).to_have_text(re.compile(r"at most 2, latest [02] "))

    page.evaluate("window.sameDocument = true")
    section.get_by_role("link", name="7 days").click()
    expect(page).to_have_url(re.compile(r"\?history=7d$"))
    expect(section.locator("[data-chart-summary]").first).to_have_text(re.compile(r"at most 9, latest [02] "))
    expect(section.get_by_role("link", name="7 days")).to_have_attribute("aria-current", "true")
    stuck_chart = section.locator("svg#history-stuck")
    expect(stuck_chart.locator("rect.chart-hit title", has_text="up to 9 stuck")).to_have_count(1)
    expect(stuck_chart.locator("[data-time-axis]")).to_have_text("Time (UTC)")
    assert page.evaluate("window.sameDocument") is True  # the section was swapped, the page not reloaded
    shoot("history-7d")

    page.locator("[data-time-mode-toggle]").click()
    expect(stuck_chart.locator("[data-time-axis]")).to_have_text("Time (local)")
