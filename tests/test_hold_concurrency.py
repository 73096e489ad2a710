"""Concurrency against the real ASGI server (uvicorn) and the emulator over real HTTP, on whichever database the run
uses (SQLite by default, PostgreSQL with DATABASE_URL).

- 50 force-stops of one work item at once, from several signed-in admin sessions (httpx, CSRF tokens and all): the
  upstream stops it once (one 200, the rest 409), everyone else is told "already stopped", 50 audit entries, none
  lost, and the hash chain holds.
- Metadata patches of different keys at once, from several operators: every key lands, each patch is sent exactly
  once, and whoever is warned that the metadata changed meanwhile confirms again, as a person would.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from hold_support import (  # noqa: F401
    FIGURES,
    AuditState,
    chain_breaks,
    clone,
    csrf_of,
    hidden,
    hold_figures,
    live_server_url,
    mutations,
    signed_in,
)
from pages_support import PASSWORD, environment, make_user, start_work, worker_client

from dashboard.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)

FORCE_STOPS = 50
ADMIN_SESSIONS = 5
PATCHED_KEYS = 12
OPERATOR_SESSIONS = 4
# A person confirms again after a "changed meanwhile" warning; nobody would need more rounds than there are people.
MAX_CONFIRMATIONS = PATCHED_KEYS + 2


def database() -> str:
    return connection.vendor


async def sessions(base_url: str, role: str, count: int) -> list[httpx.AsyncClient]:
    names = [f"{role}{n}" for n in range(count)]
    for name in names:
        await sync_to_async(make_user)(role, username=name, password=PASSWORD)
    return list(await asyncio.gather(*(signed_in(base_url, name) for name in names)))


def work_item_entries(work_id: str, action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(work_id=work_id, action=action).order_by("sequence"))


async def test_fifty_concurrent_force_stops_stop_the_item_once(live_server_url, upstream, settings):
    # Nobody watches the environment, and the index's own sync stays out of the counts (the drill is about stops).
    settings.INDEX_ALL_ENVIRONMENTS = False
    env, key = await sync_to_async(environment)(upstream, "contested")
    item = await sync_to_async(start_work)(upstream, env["id"], key)
    admins = await sessions(live_server_url, "admin", ADMIN_SESSIONS)
    stop_url = f"/environments/{env['id']}/work/{item.id}/force-stop/"
    item_url = f"/environments/{env['id']}/work/{item.id}/"
    before = await sync_to_async(AuditState.now)()
    await sync_to_async(upstream.reset_requests)()
    # Each request its own connection and cookie jar (the "messages" cookie of its answer), in one of five sessions.
    clients = [clone(admins[n % ADMIN_SESSIONS]) for n in range(FORCE_STOPS)]

    async def force_stop(n: int) -> httpx.Response:
        session = clients[n]
        return await session.post(
            stop_url,
            data={"reason": f"drill {n}", "csrfmiddlewaretoken": csrf_of(session)},
        )

    answers = await asyncio.gather(*(force_stop(n) for n in range(FORCE_STOPS)))
    upstream_seen = await sync_to_async(upstream.requests)()

    assert [a.status_code for a in answers] == [302] * FORCE_STOPS, Counter(a.status_code for a in answers)
    assert all(a.headers["location"] == item_url for a in answers)
    # Each reads the item fresh first, then stops it: one 200 stop, the rest 409 (already stopped).
    assert upstream_seen["by_route"] == {"retrieve": FORCE_STOPS, "stop": FORCE_STOPS}
    assert upstream_seen["by_status"] == {"200": FORCE_STOPS + 1, "409": FORCE_STOPS - 1}, upstream_seen[
        "by_status"
    ]

    # What each person read on the page the stop led to.
    pages = await asyncio.gather(*(session.get(item_url) for session in clients))
    told = Counter()
    for page in pages:
        assert page.status_code == 200
        if f"Force-stopped {item.id}: it is now stopped." in page.text:
            told["stopped"] += 1
        elif f"{item.id} had already stopped: nothing to do." in page.text:
            told["already stopped"] += 1
        else:
            told["nothing"] += 1
    assert told == {"stopped": 1, "already stopped": FORCE_STOPS - 1}, told
    for session in [*clients, *admins]:
        await session.aclose()

    entries = await sync_to_async(work_item_entries)(item.id, "force_stop")
    added = await sync_to_async(before.added)()
    assert len(added) == FORCE_STOPS and len(entries) == FORCE_STOPS
    assert sorted(e.reason for e in entries) == sorted(f"drill {n}" for n in range(FORCE_STOPS)), "none lost"
    assert Counter(e.upstream_status for e in entries) == {200: 1, 409: FORCE_STOPS - 1}
    assert {e.outcome for e in entries} == {"succeeded"}
    assert Counter(e.error for e in entries) == {"": 1, "already stopped": FORCE_STOPS - 1}
    assert {e.username for e in entries} == {f"admin{n}" for n in range(ADMIN_SESSIONS)}
    assert len({e.request_id for e in entries}) == FORCE_STOPS, (
        "each entry carries its own upstream request-id"
    )
    assert [e.sequence for e in added] == list(range(before.last_sequence + 1, before.last_sequence + 51))
    assert await sync_to_async(chain_breaks)() == []
    with worker_client(upstream) as c:
        assert (
            await sync_to_async(c.beta.environments.work.retrieve)(item.id, environment_id=env["id"])
        ).state == "stopped"
    vendor = await sync_to_async(database)()
    FIGURES.concurrency.append(
        f"concurrency ({vendor}): {FORCE_STOPS} force-stops from {ADMIN_SESSIONS} sessions → upstream 200: "
        f"{upstream_seen['by_status'].get('200', 0)}, 409: {upstream_seen['by_status'].get('409', 0)}; told "
        f"stopped {told['stopped']}, already stopped {told['already stopped']}; audit entries {len(entries)}, "
        "chain intact"
    )


async def test_concurrent_metadata_patches_of_different_keys_all_land(live_server_url, upstream):
    env, key = await sync_to_async(environment)(upstream, "shared")
    item = await sync_to_async(start_work)(upstream, env["id"], key, metadata={"team": "ops"})
    operators = await sessions(live_server_url, "operator", OPERATOR_SESSIONS)
    url = f"/environments/{env['id']}/work/{item.id}/metadata/"
    wanted = {f"key{n:02d}": f"value {n}" for n in range(PATCHED_KEYS)}
    before = await sync_to_async(AuditState.now)()
    await sync_to_async(upstream.reset_requests)()
    confirmations = Counter()

    async def patch(n: int) -> int:
        """One person: open the form, add a key, preview, send; confirm again while warned. Returns the rounds."""
        async with clone(operators[n % OPERATOR_SESSIONS]) as session:
            token = csrf_of(session)
            form = await session.get(url)
            assert form.status_code == 200
            preview = await session.post(
                url,
                data={
                    "csrfmiddlewaretoken": token,
                    "step": "preview",
                    "loaded": hidden(form.text, "loaded"),
                    "key": [f"key{n:02d}", "", "", ""],
                    "value": [f"value {n}", "", "", ""],
                    "reason": f"patch {n}",
                },
            )
            assert preview.status_code == 200, preview.text[:2000]
            page = preview.text
            for rounds in range(1, MAX_CONFIRMATIONS + 1):
                answer = await session.post(
                    url,
                    data={
                        "csrfmiddlewaretoken": token,
                        "step": "send",
                        "loaded": hidden(page, "loaded"),
                        "patch": hidden(page, "patch"),
                        "reason": hidden(page, "reason"),
                    },
                )
                if answer.status_code == 302:
                    return rounds
                assert answer.status_code == 409 and "data-changed-upstream" in answer.text, (
                    answer.status_code
                )
                confirmations["warned"] += 1
                page = answer.text
            raise AssertionError(f"patch {n} never landed")

    rounds = await asyncio.gather(*(patch(n) for n in range(PATCHED_KEYS)))
    for session in operators:
        await session.aclose()

    with worker_client(upstream) as c:
        final = (
            await sync_to_async(c.beta.environments.work.retrieve)(item.id, environment_id=env["id"])
        ).metadata
    assert final == {"team": "ops", **wanted}
    assert await sync_to_async(mutations)(upstream) == {"update": PATCHED_KEYS}, (
        "each patch is sent exactly once"
    )
    added = await sync_to_async(before.added)()
    assert [(e.action, e.outcome) for e in added] == [("patch_metadata", "succeeded")] * PATCHED_KEYS
    assert sorted(tuple(e.sent["metadata"].items()) for e in added) == sorted(
        ((k, v),) for k, v in wanted.items()
    )
    assert await sync_to_async(chain_breaks)() == []
    vendor = await sync_to_async(database)()
    FIGURES.concurrency.append(
        f"concurrency ({vendor}): {PATCHED_KEYS} metadata patches of different keys at once → {len(final) - 1} "
        f"landed, {confirmations['warned']} 'changed meanwhile' warnings confirmed again (at most "
        f"{max(rounds)} rounds)"
    )
