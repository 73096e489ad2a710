"""One stop, three doors: the item page, a bulk operation and the gateway for scripts send a stop each their own
way, and read its answer in one place (``dashboard.stopping``). The same upstream answer — 200, 409 (already
stopped), 404, 503 — must give the same audit outcome, status and error through each, against the emulator over
real HTTP."""

from __future__ import annotations

import html as html_lib
import json
import re
from typing import Any

import pytest
from pages_support import environment, fill_index, make_user, start_work, worker_client

from dashboard import actions
from dashboard.gateway import tokens
from dashboard.index.models import IndexedWork
from dashboard.models import AuditEntry, BulkOperation

pytestmark = pytest.mark.django_db(transaction=True)

REASON = "INC-9 parity"
MISSING = "work_01NeverExistedAnywhere00"


def _hidden(page: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', page)
    assert match, f"no hidden {name}"
    return html_lib.unescape(match.group(1))


def through_the_page(client: Any, env_id: str, work_id: str) -> None:
    client.post(f"/environments/{env_id}/work/{work_id}/stop/", {"reason": REASON})


def through_a_bulk_operation(client: Any, env_id: str, work_id: str) -> None:
    confirm = client.post(f"/environments/{env_id}/bulk/", {"selection": "selected", "work_ids": [work_id]})
    assert confirm.status_code == 200, confirm.content.decode()[:500]
    started = client.post(
        f"/environments/{env_id}/bulk/start/",
        {"plan": _hidden(confirm.content.decode(), "plan"), "mode": "stop", "reason": REASON},
    )
    assert started.status_code == 302
    operation = BulkOperation.objects.latest("created_at")
    assert actions.wait_for_bulk(operation.pk, timeout=60)


def through_the_gateway(token: str, client: Any, env_id: str, work_id: str) -> None:
    client.post(
        f"/gateway/v1/environments/{env_id}/work/{work_id}/stop",
        data=json.dumps({}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}", "X-Reason": REASON},
    )


def audited(work_id: str) -> tuple[Any, ...]:
    entry = AuditEntry.objects.filter(work_id=work_id, action="stop").latest("sequence")
    return (entry.outcome, entry.upstream_status, entry.error, bool(entry.request_id))


@pytest.mark.parametrize("answer", ["200", "409", "404", "503"])
def test_the_same_answer_is_audited_the_same_through_every_door(client, upstream, answer):  # noqa: F811
    env, key = environment(upstream, f"parity {answer}")
    env_id = env["id"]
    user = make_user("operator", username="olivia")
    client.force_login(user)
    token = tokens.mint(user, "parity-script", 30)[1]
    doors = {
        "page": lambda w: through_the_page(client, env_id, w),
        "bulk": lambda w: through_a_bulk_operation(client, env_id, w),
        "gateway": lambda w: through_the_gateway(token, client, env_id, w),
    }
    results: dict[str, tuple[Any, ...]] = {}
    for door, send in doors.items():
        if answer == "404":
            work_id = MISSING  # the latest entry for it is this door's
        else:
            work_id = start_work(upstream, env_id, key, state="active").id
            if answer == "409":
                with worker_client(upstream) as c:
                    c.beta.environments.work.stop(work_id, environment_id=env_id, force=True)
            fill_index(upstream, env_id, key)
        if answer == "503":
            upstream.set_fault(route="stop", status=503, count=1)
        send(work_id)
        upstream.clear_faults()
        results[door] = audited(work_id)
        if answer == "200":
            # The stop took effect, and the work index has it at once, whichever door sent it.
            assert IndexedWork.objects.get(work_id=work_id).state == "stopping", door

    expected = {
        "200": ("succeeded", 200, "", True),
        "409": ("succeeded", 409, "already stopped", True),
        "404": (
            "failed",
            404,
            f"not_found: Work item {MISSING} was not found in environment {env_id}.",
            True,
        ),
        "503": ("failed", 503, None, True),
    }[answer]
    for door, result in results.items():
        if expected[2] is None:
            assert result[:2] == expected[:2] and result[2].startswith(
                "unavailable: The Work API is unavailable"
            )
        else:
            assert result == expected, door
    assert len(set(results.values())) == 1, results
