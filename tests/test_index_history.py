"""Each environment's history from the work index: one sample a minute, written by the feed that holds the
environment's lease from the index it keeps in step with the emulator (over real HTTP), with the stuck count,
the items stopped and the time to acknowledge (p50/p95) a person would compute from the items themselves; no
minute twice across a restart; pruned with the queue samples; charted on the environment page over 1 h / 24 h / 7 d
with axes and hover values."""

from __future__ import annotations

import math
import re
import statistics
from datetime import datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.utils import timezone
from live_support import reset_local_state, wait_until
from pages_support import environment, make_user

from dashboard.index import history
from dashboard.index.models import IndexSample
from dashboard.index.sync import EnvironmentSync
from dashboard.live import feed
from dashboard.live.feed import env_key

MINUTE = timedelta(minutes=1)
# Waits (seconds from creation to acknowledgement) of the items acknowledged in the first minute.
WAITS = [2, 3, 5, 8, 13, 21, 34]


def _ago(now: datetime, moment: datetime) -> float:
    return (now - moment).total_seconds()


def two_minutes_of_work(emulator, env_id: str, now: datetime) -> tuple[datetime, datetime]:
    """Items whose stops, acknowledgements and heartbeats fall in the two complete minutes before ``now``; returns
    the ends of those minutes."""
    second = history.minute_end(now)
    first = second - MINUTE
    groups = [
        # Minute one: three stopped (at first - 30 s and the two seconds after; acknowledged a second after they
        # were created, in that minute too), seven more acknowledged at first - 20 s.
        {
            "count": 3,
            "state": "stopped",
            "age_seconds": _ago(now, first - timedelta(seconds=50)),
            "spacing_seconds": 1,
            "ack_after_seconds": 1,
            "stopped_after_seconds": 20,
        },
        *(
            {
                "count": 1,
                "state": "active",
                "age_seconds": _ago(now, first - timedelta(seconds=20 + wait)),
                "ack_after_seconds": wait,
                "lease_expires_in_seconds": 86400,
            }
            for wait in WAITS
        ),
        # Minute two: one stopped (acknowledged before either minute); one item whose worker went quiet 150 s
        # before its end (stuck then, not before). Nothing acknowledged in it.
        {
            "count": 1,
            "state": "stopped",
            "age_seconds": _ago(now, second - timedelta(seconds=170)),
            "ack_after_seconds": 1,
            "stopped_after_seconds": 140,
        },
        {
            "count": 1,
            "state": "active",
            "age_seconds": _ago(now, second - timedelta(seconds=200)),
            "heartbeat_age_seconds": _ago(now, second - timedelta(seconds=150)),
            "lease_expires_in_seconds": 86400,
        },
        # Long abandoned (stuck in both minutes), long stopped (in neither), and one waiting in the queue.
        {
            "count": 2,
            "state": "active",
            "age_seconds": 4000,
            "heartbeat_age_seconds": 3500,
            "lease_expires_in_seconds": 86400,
        },
        {"count": 1, "state": "stopped", "age_seconds": 3000},
        {"count": 1, "state": "queued", "age_seconds": 1},
    ]
    emulator.bulk_create(env_id, *groups)
    return first, second


def stored(env_id: str) -> list[IndexSample]:
    return list(IndexSample.objects.filter(environment_id=env_id).order_by("at"))


@pytest.mark.django_db(transaction=True)
async def test_each_minute_gets_one_sample_with_the_figures_a_person_would_compute(upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 120
    env, key = await database_sync_to_async(environment)(upstream, "history")
    env_id = env["id"]
    now = timezone.now()
    first, second = await sync_to_async(two_minutes_of_work)(upstream, env_id, now)

    # The index, kept in step by the sync as the feed drives it.
    sync = EnvironmentSync(env_id, interval=0.5, budget_per_minute=6000)
    async with feed.feed_client() as client:
        for _ in range(3):
            await sync.round(client, key, ())
    assert sync.filled and sync.confirmed_as_of is not None and sync.confirmed_as_of > second

    # The feed runs every few seconds from the first minute's end on: each minute is written once.
    minutes = history.MinuteSamples(env_id, started_at=first + timedelta(seconds=1))
    moments = [first + timedelta(seconds=s) for s in range(1, 61, 3)] + [second, now]
    for moment in moments:
        await database_sync_to_async(minutes.write_due)(moment, sync.confirmed_as_of, filled=sync.filled)
    samples = await database_sync_to_async(stored)(env_id)
    assert [s.at for s in samples] == [first, second]
    one, two = samples

    assert (one.stuck, two.stuck) == (2, 3)
    assert (one.stopped_per_minute, two.stopped_per_minute) == (3, 1)
    assert one.live == two.live == 7 + 1 + 2 + 1
    waits = [1, 1, 1, *WAITS]  # the three stopped ones were acknowledged in minute one too
    expected = statistics.quantiles(waits, n=100, method="inclusive")
    assert one.ack_p50_seconds == pytest.approx(statistics.median(waits), abs=0.05)
    assert one.ack_p95_seconds == pytest.approx(expected[94], abs=0.05)
    assert two.ack_p50_seconds is None and two.ack_p95_seconds is None

    # A restart (a new feed, or another instance taking the lease) owes the minute just ended: it is there already.
    restarted = history.MinuteSamples(env_id, started_at=now)
    assert await database_sync_to_async(restarted.write_due)(now, sync.confirmed_as_of, filled=True) == []
    assert not await database_sync_to_async(history.write_sample)(env_id, second)
    assert [s.pk for s in await database_sync_to_async(stored)(env_id)] == [one.pk, two.pk]


@pytest.mark.django_db(transaction=True)
async def test_a_minute_waits_for_the_index_to_have_read_past_it(upstream):
    env, _ = await database_sync_to_async(environment)(upstream, "waiting")
    env_id = env["id"]
    now = timezone.now()
    end = history.minute_end(now)
    minutes = history.MinuteSamples(env_id, started_at=end)
    # The index last confirmed everything before the minute ended: its stops may not all be known yet.
    behind = end - timedelta(seconds=2)
    assert (
        await database_sync_to_async(minutes.write_due)(end + timedelta(seconds=3), behind, filled=True) == []
    )
    # While the index is still filling, no history at all.
    assert (
        await database_sync_to_async(minutes.write_due)(end + timedelta(seconds=6), now, filled=False) == []
    )
    assert await database_sync_to_async(stored)(env_id) == []
    # Confirmed past the minute's end (or too long waited): written.
    later = history.MinuteSamples(env_id, started_at=end)
    assert await database_sync_to_async(later.write_due)(
        end + timedelta(seconds=9), end + MINUTE, filled=True
    ) == [end]
    late = history.MinuteSamples(env_id, started_at=end + MINUTE)
    written = await database_sync_to_async(late.write_due)(
        end + MINUTE + history.MAX_WAIT, behind, filled=True
    )
    assert written == [end + MINUTE]


@pytest.mark.django_db(transaction=True)
async def test_the_feed_holding_the_lease_writes_the_minute_and_a_restart_does_not_write_it_again(
    live_runtime, upstream
):
    env, _ = await database_sync_to_async(environment)(upstream, "followed")
    env_id = env["id"]
    await sync_to_async(upstream.bulk_create)(env_id, {"count": 3, "state": "queued", "age_seconds": 30})
    started = timezone.now()
    live_runtime.watch([env_key(env_id)])
    rows = await wait_until(lambda: database_sync_to_async(stored)(env_id), timeout=15)
    # The minute that had just ended when the feed started (the next one, if a minute ended as it started).
    assert history.minute_end(started) <= rows[0].at <= history.minute_end(timezone.now())
    assert rows[0].live == 3

    # Restarted: the new runtime's feed owes the same minute (or the next, if one ended meanwhile).
    await feed.shutdown()
    reset_local_state()
    runtime = feed.runtime()
    runtime.ensure_started()
    runtime.watch([env_key(env_id)])
    await wait_until(lambda: env_id in runtime.feeds and runtime.feeds[env_id].polls >= 4, timeout=10)
    after = await database_sync_to_async(stored)(env_id)
    minutes = [s.minute for s in after]
    assert len(minutes) == len(set(minutes)), minutes
    assert after[0].pk == rows[0].pk
    runtime.unwatch([env_key(env_id)])


@pytest.mark.django_db(transaction=True)
async def test_samples_older_than_the_retention_are_pruned(live_runtime, upstream, settings):
    settings.HISTORY_RETENTION_HOURS = 168
    now = timezone.now()
    old = await database_sync_to_async(make_sample)(
        "env_pruned", history.minute_end(now - timedelta(hours=170))
    )
    kept = await database_sync_to_async(make_sample)(
        "env_pruned", history.minute_end(now - timedelta(hours=160))
    )
    live_runtime._pruned_at = -math.inf
    await live_runtime._prune_history()
    remaining = [s.pk for s in await database_sync_to_async(stored)("env_pruned")]
    assert remaining == [kept.pk] and old.pk not in remaining


# --- the environment page ----------------------------------------------------------------------------------------


def make_sample(env_id: str, end: datetime, **values: float | None) -> IndexSample:
    fields: dict[str, float | None] = {
        "stuck": 0,
        "live": 5,
        "stopped_per_minute": 0.0,
        "ack_p50_seconds": None,
        "ack_p95_seconds": None,
    }
    fields.update(values)
    return IndexSample.objects.create(
        environment_id=env_id, at=end, minute=int(end.timestamp() // 60), **fields
    )


@pytest.fixture
def viewer(client):
    client.force_login(make_user("viewer"))
    return client


def hit_titles(html: str, chart: str) -> list[str]:
    svg = re.search(rf'<svg class="chart" id="history-{chart}".*?</svg>', html, re.S)
    assert svg, f"no {chart} chart"
    return re.findall(r'<rect class="chart-hit"[^>]*><title [^>]*>([^<]*)</title></rect>', svg.group(0))


def chart_texts(html: str, chart: str) -> list[str]:
    svg = re.search(rf'<svg class="chart" id="history-{chart}".*?</svg>', html, re.S)
    assert svg
    return re.findall(r"<text [^>]*>([^<]*)</text>", svg.group(0))


@pytest.mark.django_db
def test_the_environment_page_charts_the_last_hour_with_axes_and_hover_values(viewer, upstream):
    env, _ = environment(upstream, "charted")
    env_id = env["id"]
    last = history.minute_end(timezone.now())
    for n in range(30):
        make_sample(
            env_id,
            last - n * MINUTE,
            stuck=12 if n == 10 else 3,
            stopped_per_minute=2.0 if n < 5 else 0.0,
            ack_p50_seconds=4.0,
            ack_p95_seconds=45.0 if n == 0 else 9.0,
        )

    html = viewer.get(f"/environments/{env_id}/").content.decode()

    assert '<h2 id="history-heading">History</h2>' in html
    assert re.search(r'<a href="[^"]*\?history=1h#history"[^>]*aria-current="true">1 hour</a>', html)
    for chart in ("stuck", "stopped", "ack"):
        titles = hit_titles(html, chart)
        assert len(titles) == 60  # one bucket a minute
    # Axes: the time ticks (UTC, every 10 minutes) and the values with their units.
    stuck_texts = chart_texts(html, "stuck")
    assert "Time (UTC)" in stuck_texts and "Stuck items" in stuck_texts
    assert [t for t in stuck_texts if t.isdigit()] == ["0", "5", "10", "15"]
    assert len([t for t in stuck_texts if re.fullmatch(r"\d\d:[0-5]0", t)]) >= 5
    assert {"0 s", "15 s", "30 s", "45 s"} <= set(chart_texts(html, "ack"))
    # Hover: each minute's values, with its time.
    peak = last - 10 * MINUTE
    assert f"{peak - MINUTE:%H:%M}–{peak:%H:%M} UTC: 12 stuck" in hit_titles(html, "stuck")
    assert f"{last - MINUTE:%H:%M}–{last:%H:%M} UTC: p50 4 s, p95 45 s" in hit_titles(html, "ack")
    assert hit_titles(html, "stuck")[0].endswith(": no sample")
    # Said in words too.
    assert f"Stuck items over the last 1 hour: at most 12, latest 3 (at {last:%H:%M} UTC)." in html
    assert "Items stopped over the last 1 hour: 10; busiest minute: 2; latest minute: 2." in html
    assert "Time to acknowledge over the last 1 hour: p50 at most 4 s, p95 at most 45 s" in html


@pytest.mark.django_db
def test_seven_days_are_drawn_from_at_most_120_buckets_labelled_by_day(viewer, upstream):
    env, _ = environment(upstream, "weekly")
    env_id = env["id"]
    last = history.minute_end(timezone.now())
    IndexSample.objects.bulk_create(
        IndexSample(
            environment_id=env_id,
            at=last - n * MINUTE,
            minute=int((last - n * MINUTE).timestamp() // 60),
            stuck=7 if n == 7 * 600 else 1,
            live=4,
            stopped_per_minute=1.0,
        )
        for n in range(0, 7 * 24 * 60, 7)  # one minute in seven, over the week
    )

    html = viewer.get(f"/environments/{env_id}/?history=7d").content.decode()

    titles = hit_titles(html, "stuck")
    assert 110 <= len(titles) <= 120
    assert any(t.endswith(": up to 7 stuck") for t in titles)
    days = re.findall(r'data-tick="date">(\w{3} \d{1,2})</text>', html)
    assert len(days) >= 6
    assert "Stuck items over the last 7 days: at most 7, latest 1" in html
    assert "No item was acknowledged in the last 7 days." in html
    assert re.search(r'aria-current="true">7 days</a>', html)
    # The window survives the list's own links and filters.
    assert '<input type="hidden" name="history" value="7d">' in html

    hour = viewer.get(f"/environments/{env_id}/?history=24h").content.decode()
    assert 110 <= len(hit_titles(hour, "stopped")) <= 120
    assert "12-minute" in hour


@pytest.mark.django_db
def test_an_environment_without_history_says_so(viewer, upstream):
    env, _ = environment(upstream, "new")
    make_sample(env["id"], history.minute_end(timezone.now() - timedelta(hours=3)), stuck=2)

    html = viewer.get(f"/environments/{env['id']}/").content.decode()

    assert '<svg class="chart"' not in html
    assert "No history for the last 1 hour yet." in html
    week = viewer.get(f"/environments/{env['id']}/?history=24h").content.decode()
    assert '<svg class="chart"' in week and "No history" not in week


@pytest.mark.django_db
def test_an_unknown_history_window_is_refused_with_the_choices(viewer, upstream):
    env, _ = environment(upstream, "picky")

    response = viewer.get(f"/environments/{env['id']}/?history=2w")

    assert response.status_code == 400
    assert "The history window must be one of 1h, 24h, 7d; got &#x27;2w&#x27;." in response.content.decode()


@pytest.mark.django_db
def test_the_history_section_refreshes_alone(viewer, upstream):
    env, _ = environment(upstream, "refreshing")
    make_sample(env["id"], history.minute_end(timezone.now()), stuck=4)
    upstream.reset_requests()

    response = viewer.get(
        f"/environments/{env['id']}/?history=24h", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="history"
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section class="panel history" id="history"')
    assert 'hx-trigger="every 60s"' in html and "<html" not in html
    assert "Stuck items over the last 24 hours: at most 4" in html
    assert upstream.environment_requests(env["id"]) == 0  # the index only
