"""Our client puts on the wire what the official SDK 2.10.0 puts there, for every operation.

For each call, the SDK (``anthropic.AsyncAnthropic``, strict response validation on) and our client
(``WorkAPIClient``) each send it to a recording server on 127.0.0.1; the two recorded requests must agree on method, path, parsed query, parsed body, ``authorization`` / ``x-api-key``, every
``anthropic-*`` header and ``content-type``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import anthropic
import pytest
from anthropic._utils import path_template
from test_client_upstream import TS, Recorded, RecordingUpstream

from workqueue.client import NO_HEARTBEAT, WorkAPIClient
from workqueue.client import _segment as our_path_segment

ENV = "env_01ABC"
WORK = "work_01ABC"
API_KEY = "sk-ant-api03-wire-parity-key"
ENV_KEY = "sk-ant-oat01-wire-parity-key"
SESSIONS_TOKEN = "sk-ant-req-wire-parity-token"
WORKSPACE = "wrkspc_011CZkZaBF1tNoB5wlCeusgy"
BETAS = ["files-api-2025-04-14", "custom-beta-2026-01-01"]


@dataclass
class Case:
    id: str
    sdk_method: str  # under client.beta.environments, e.g. "work.retrieve"
    sdk_args: tuple[Any, ...]
    sdk_kwargs: dict[str, Any]
    ours: str
    our_args: tuple[Any, ...]
    our_kwargs: dict[str, Any] = field(default_factory=dict)
    sdk_credential: str = API_KEY  # what the SDK client is built with (api_key or auth_token)
    takes_workspace: bool = True  # whether the SDK method has a workspace_id parameter


CASES = [
    Case("env-list", "list", (), {}, "list_environments", ()),
    Case(
        "env-list-all-params",
        "list",
        (),
        {"include_archived": True, "limit": 5, "page": "page_2+/=:x"},
        "list_environments",
        (),
        {"include_archived": True, "limit": 5, "page": "page_2+/=:x"},
    ),
    Case(
        "env-list-archived-false",
        "list",
        (),
        {"include_archived": False},
        "list_environments",
        (),
        {"include_archived": False},
    ),
    Case("env-retrieve", "retrieve", (ENV,), {}, "retrieve_environment", (ENV,)),
    Case("work-retrieve", "work.retrieve", (WORK,), {"environment_id": ENV}, "retrieve_work", (ENV, WORK)),
    Case(
        "work-update",
        "work.update",
        (WORK,),
        {"environment_id": ENV, "metadata": {"team": "infra", "ticket": None, "note": ""}},
        "update_work_metadata",
        (ENV, WORK, {"team": "infra", "ticket": None, "note": ""}),
    ),
    Case(
        "work-update-empty",
        "work.update",
        (WORK,),
        {"environment_id": ENV, "metadata": {}},
        "update_work_metadata",
        (ENV, WORK, {}),
    ),
    Case(
        "work-list",
        "work.list",
        (ENV,),
        {},
        "list_work",
        (ENV,),
        {"environment_key": ENV_KEY},
        sdk_credential=ENV_KEY,
        takes_workspace=False,
    ),
    Case(
        "work-list-page",
        "work.list",
        (ENV,),
        {"limit": 2, "page": "cur:2026-07-01T08:15:06Z/work_9"},
        "list_work",
        (ENV,),
        {"environment_key": ENV_KEY, "limit": 2, "page": "cur:2026-07-01T08:15:06Z/work_9"},
        sdk_credential=ENV_KEY,
        takes_workspace=False,
    ),
    Case(
        "work-poll",
        "work.poll",
        (ENV,),
        {},
        "poll_work",
        (ENV,),
        {"environment_key": ENV_KEY},
        sdk_credential=ENV_KEY,
        takes_workspace=False,
    ),
    Case(
        "work-poll-all-params",
        "work.poll",
        (ENV,),
        {"block_ms": 500, "reclaim_older_than_ms": 2000, "anthropic_worker_id": "runner-7-1a2b3c4d5e6f"},
        "poll_work",
        (ENV,),
        {
            "environment_key": ENV_KEY,
            "block_ms": 500,
            "reclaim_older_than_ms": 2000,
            "worker_id": "runner-7-1a2b3c4d5e6f",
        },
        sdk_credential=ENV_KEY,
        takes_workspace=False,
    ),
    Case(
        "work-poll-reclaim-zero",
        "work.poll",
        (ENV,),
        {"reclaim_older_than_ms": 0},
        "poll_work",
        (ENV,),
        {"environment_key": ENV_KEY, "reclaim_older_than_ms": 0},
        sdk_credential=ENV_KEY,
        takes_workspace=False,
    ),
    Case(
        "work-ack-environment-key",
        "work.ack",
        (WORK,),
        {"environment_id": ENV},
        "ack_work",
        (ENV, WORK),
        {"credential": ENV_KEY},
        sdk_credential=ENV_KEY,
        takes_workspace=False,
    ),
    Case(
        "work-ack-sessions-token",
        "work.ack",
        (WORK,),
        {"environment_id": ENV},
        "ack_work",
        (ENV, WORK),
        {"credential": SESSIONS_TOKEN},
        sdk_credential=SESSIONS_TOKEN,
        takes_workspace=False,
    ),
    Case(
        "work-heartbeat-bare",
        "work.heartbeat",
        (WORK,),
        {"environment_id": ENV},
        "heartbeat_work",
        (ENV, WORK),
        {"credential": SESSIONS_TOKEN},
        sdk_credential=SESSIONS_TOKEN,
        takes_workspace=False,
    ),
    Case(
        "work-heartbeat-no-heartbeat",
        "work.heartbeat",
        (WORK,),
        {"environment_id": ENV, "expected_last_heartbeat": "NO_HEARTBEAT"},
        "heartbeat_work",
        (ENV, WORK),
        {"credential": SESSIONS_TOKEN, "expected_last_heartbeat": NO_HEARTBEAT},
        sdk_credential=SESSIONS_TOKEN,
        takes_workspace=False,
    ),
    Case(
        "work-heartbeat-echoed",
        "work.heartbeat",
        (WORK,),
        {"environment_id": ENV, "expected_last_heartbeat": TS},
        "heartbeat_work",
        (ENV, WORK),
        {"credential": ENV_KEY, "expected_last_heartbeat": TS},
        sdk_credential=ENV_KEY,
        takes_workspace=False,
    ),
    Case(
        "work-heartbeat-ttl",
        "work.heartbeat",
        (WORK,),
        {
            "environment_id": ENV,
            "expected_last_heartbeat": "2026-07-01T08:15:06+01:00",
            "desired_ttl_seconds": 120,
        },
        "heartbeat_work",
        (ENV, WORK),
        {
            "credential": SESSIONS_TOKEN,
            "expected_last_heartbeat": "2026-07-01T08:15:06+01:00",
            "desired_ttl_seconds": 120,
        },
        sdk_credential=SESSIONS_TOKEN,
        takes_workspace=False,
    ),
    Case("work-stats", "work.stats", (ENV,), {}, "work_stats", (ENV,)),
    Case("work-stop", "work.stop", (WORK,), {"environment_id": ENV}, "stop_work", (ENV, WORK)),
    Case(
        "work-stop-force",
        "work.stop",
        (WORK,),
        {"environment_id": ENV, "force": True},
        "stop_work",
        (ENV, WORK),
        {"force": True},
    ),
    Case(
        "work-stop-graceful-explicit",
        "work.stop",
        (WORK,),
        {"environment_id": ENV, "force": False},
        "stop_work",
        (ENV, WORK),
        {"force": False},
    ),
    Case(
        "work-stop-environment-key",
        "work.stop",
        (WORK,),
        {"environment_id": ENV, "force": True},
        "stop_work",
        (ENV, WORK),
        {"force": True, "credential": ENV_KEY},
        sdk_credential=ENV_KEY,
    ),
]

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"betas": None, "workspace_id": None},
    "betas-and-workspace": {"betas": BETAS, "workspace_id": WORKSPACE},
}


@pytest.fixture(scope="module")
def recorder():
    with RecordingUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def no_ambient_anthropic_config(monkeypatch):
    # The SDK reads these; the comparison must not depend on the machine it runs on.
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_CUSTOM_HEADERS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_PROFILE", "")


def on_the_wire(request: Recorded) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "body": request.json(),
        "raw body is empty": request.body == b"",
        "authorization": request.headers.get("authorization"),
        "x-api-key": request.headers.get("x-api-key"),
        "content-type": request.headers.get("content-type"),
        "anthropic headers": {k: v for k, v in request.headers.items() if k.startswith("anthropic-")},
    }


def sdk_client(flavor: str, base_url: str, credential: str) -> anthropic.Anthropic | anthropic.AsyncAnthropic:
    cls = anthropic.Anthropic if flavor == "sync" else anthropic.AsyncAnthropic
    # The API key goes in as api_key, environment keys and sessions tokens as auth_token (as the SDK's workers do).
    auth: dict[str, Any] = {"api_key": credential} if credential == API_KEY else {"auth_token": credential}
    return cls(base_url=base_url, max_retries=0, _strict_response_validation=True, **auth)


async def record_sdk(
    flavor: str, recorder: RecordingUpstream, case: Case, variant: dict[str, Any]
) -> Recorded:
    recorder.requests.clear()
    client = sdk_client(flavor, recorder.base_url, case.sdk_credential)
    target: Any = client.beta.environments
    for name in case.sdk_method.split("."):
        target = getattr(target, name)
    kwargs = dict(case.sdk_kwargs)
    if variant["betas"]:
        kwargs["betas"] = variant["betas"]
    if variant["workspace_id"] and case.takes_workspace:
        kwargs["workspace_id"] = variant["workspace_id"]
    result = target(*case.sdk_args, **kwargs)
    if inspect.isawaitable(result):
        await result
    closed = client.close()
    if inspect.isawaitable(closed):
        await closed
    assert len(recorder.requests) == 1
    return recorder.requests[0]


async def record_ours(recorder: RecordingUpstream, case: Case, variant: dict[str, Any]) -> Recorded:
    recorder.requests.clear()
    options = {
        "api_key": API_KEY,
        "base_url": recorder.base_url,
        "betas": tuple(variant["betas"] or ()),
        "workspace_id": variant["workspace_id"],
    }
    async with WorkAPIClient(**options) as client:
        await getattr(client, case.ours)(*case.our_args, **case.our_kwargs)
    assert len(recorder.requests) == 1
    return recorder.requests[0]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_it_sends_what_the_sdk_sends(recorder, case, variant):
    sdk = on_the_wire(await record_sdk("async", recorder, case, VARIANTS[variant]))
    ours = on_the_wire(await record_ours(recorder, case, VARIANTS[variant]))

    assert ours == sdk


def test_every_client_operation_is_covered():
    operations = {
        name
        for name in dir(WorkAPIClient)
        # read_stop_answer reads an answer another door received: it sends nothing of its own.
        if not name.startswith("_")
        and name not in {"aclose", "base_url", "read_stop_answer"}
        and not name.startswith("iter_")
    }
    assert operations == {case.ours for case in CASES}


async def test_the_recorded_requests_are_what_the_spec_says(recorder):
    # Guards the comparison itself: if both sides drifted the same way, these would catch it.
    variant = VARIANTS["betas-and-workspace"]
    by_id = {case.id: case for case in CASES}

    stop = on_the_wire(await record_sdk("sync", recorder, by_id["work-stop"], variant))
    assert stop["method"] == "POST"
    assert stop["path"] == f"/v1/environments/{ENV}/work/{WORK}/stop"
    assert stop["body"] == {}
    assert stop["query"] == {}
    assert stop["authorization"] == f"Bearer {API_KEY}"
    assert stop["content-type"] == "application/json"
    assert stop["anthropic headers"] == {
        "anthropic-version": "2026-10-21",
        "anthropic-beta": "files-api-2025-04-14,custom-beta-2026-01-01,managed-agents-2026-04-01",
        "anthropic-workspace-id": WORKSPACE,
    }

    heartbeat = on_the_wire(await record_ours(recorder, by_id["work-heartbeat-echoed"], variant))
    assert heartbeat["query"] == {"expected_last_heartbeat": [TS]}
    assert heartbeat["raw body is empty"]
    assert heartbeat["content-type"] == "application/json"
    assert "anthropic-workspace-id" not in heartbeat["anthropic headers"]

    poll = on_the_wire(await record_ours(recorder, by_id["work-poll-all-params"], VARIANTS["plain"]))
    assert poll["method"] == "GET"
    assert poll["content-type"] is None
    assert poll["query"] == {"block_ms": ["500"], "reclaim_older_than_ms": ["2000"]}
    assert poll["anthropic headers"]["anthropic-worker-id"] == "runner-7-1a2b3c4d5e6f"
    assert poll["authorization"] == f"Bearer {ENV_KEY}"

    listing = on_the_wire(await record_ours(recorder, by_id["env-list-archived-false"], VARIANTS["plain"]))
    assert listing["query"] == {"include_archived": ["false"]}
    assert "beta" not in listing["query"]


@pytest.mark.parametrize(
    "value",
    ["env_plain", "a/b", "a b", "..x", "ümlaut", "semi;colon", "q?x#y", "at@colon:", "pct%2F", "tab\tx"],
)
def test_path_segments_are_quoted_like_the_sdk(value):
    assert our_path_segment(value) == path_template("{v}", v=value)
