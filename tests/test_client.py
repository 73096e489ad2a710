"""The Work API client against a recording server on 127.0.0.1: error mapping, retries, timeouts, malformed
answers, id checks before any request, the secret decoder, pagination."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC

import httpx
import pytest
from test_client_upstream import (
    ENVIRONMENT,
    STATS,
    TS,
    WORK_ITEM,
    RecordingUpstream,
    Reply,
    closed_port_url,
    error_reply,
)

from workqueue.client import (
    NO_HEARTBEAT,
    AlreadyStopped,
    AuthenticationFailed,
    BadRequest,
    Conflict,
    ConnectionFailed,
    InvalidID,
    InvalidMetadata,
    InvalidSecret,
    LeaseState,
    MalformedResponse,
    NotFound,
    Overloaded,
    PermissionDenied,
    PreconditionFailed,
    RateLimited,
    ServerError,
    Unavailable,
    UpstreamTimeout,
    WorkAPIClient,
    WorkAPIError,
    WorkItem,
    decode_secret,
    validate_metadata,
)

ENV = "env_01ABC"
WORK = "work_01ABC"
API_KEY = "sk-ant-api03-client-test-key"
ENV_KEY = "sk-ant-oat01-client-test-key"


@pytest.fixture
def upstream():
    with RecordingUpstream() as server:
        yield server


@pytest.fixture
async def client(upstream):
    async with WorkAPIClient(api_key=API_KEY, base_url=upstream.base_url, timeout=2.0, retry_total=3.0) as c:
        yield c


def assert_no_secret_in(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), exc.args[0] if exc.args else ""):
        assert API_KEY not in text
        assert ENV_KEY not in text
        assert "sk-ant-" not in text


# --- error mapping ---------------------------------------------------------------------------------------------

ERROR_CASES = [
    # (status, error type, error_code, expected class, kind, retryable)
    (400, "invalid_request_error", None, BadRequest, "bad_request", False),
    (400, "invalid_request_error", "invalid_metadata", InvalidMetadata, "invalid_metadata", False),
    (401, "authentication_error", None, AuthenticationFailed, "authentication", False),
    (403, "permission_error", None, PermissionDenied, "permission", False),
    (403, "permission_error", "api_key_scope_missing", PermissionDenied, "permission", False),
    (404, "not_found_error", None, NotFound, "not_found", False),
    (405, "invalid_request_error", None, BadRequest, "bad_request", False),
    (408, "timeout_error", None, UpstreamTimeout, "timeout", True),
    (409, "conflict_error", None, Conflict, "conflict", False),
    (412, "invalid_request_error", None, PreconditionFailed, "precondition_failed", False),
    (429, "rate_limit_error", None, RateLimited, "rate_limited", True),
    (500, "api_error", None, ServerError, "server_error", True),
    (502, "api_error", None, ServerError, "server_error", True),
    (503, "api_error", None, Unavailable, "unavailable", True),
    (529, "overloaded_error", None, Overloaded, "overloaded", True),
]


@pytest.mark.parametrize(
    ("status", "error_type", "error_code", "cls", "kind", "retryable"),
    ERROR_CASES,
    ids=[f"{c[0]}-{c[2] or 'plain'}" for c in ERROR_CASES],
)
async def test_it_maps_each_status_and_error_code(
    upstream, client, status, error_type, error_code, cls, kind, retryable
):
    upstream.reply(error_reply(status, error_type, "upstream says no", error_code))

    # update is a mutation: never retried, so exactly one answer is consumed whatever the status.
    with pytest.raises(WorkAPIError) as caught:
        await client.update_work_metadata(ENV, WORK, {"team": "infra"})

    exc = caught.value
    assert type(exc) is cls
    assert exc.kind == kind
    assert exc.status == status
    assert exc.error_type == error_type
    assert exc.error_code == error_code
    assert exc.request_id == "req_header_01"
    assert exc.retryable is retryable
    assert exc.occurred_at.tzinfo is UTC
    assert exc.message == str(exc) and exc.message
    assert len(upstream.requests) == 1
    assert_no_secret_in(exc)


async def test_the_messages_say_what_happened(upstream, client):
    upstream.reply(
        error_reply(529, "overloaded_error"),
        error_reply(404, "not_found_error"),
        error_reply(404, "not_found_error"),
        error_reply(400, "invalid_request_error", "metadata key 'x' is too long", "invalid_metadata"),
        error_reply(401, "authentication_error"),
    )
    messages = []
    for call in (
        client.stop_work(ENV, WORK),
        client.stop_work(ENV, WORK, force=True),
        client.ack_work(ENV, WORK, credential=ENV_KEY),
        client.update_work_metadata(ENV, WORK, {"x": "y"}),
        client.ack_work(ENV, WORK, credential=ENV_KEY),
    ):
        with pytest.raises(WorkAPIError) as caught:
            await call
        messages.append(caught.value.message)

    assert messages == [
        "The Work API is overloaded (529). Try again shortly.",
        f"Work item {WORK} was not found in environment {ENV}.",
        f"Work item {WORK} was not found in environment {ENV}.",
        "The Work API refused the metadata (400): metadata key 'x' is too long",
        f"The Work API did not accept the credential while trying to acknowledge work item {WORK} in environment "
        f"{ENV} (401). Check that the credential is the right one and has not been revoked.",
    ]


async def test_not_found_names_the_environment(upstream, client):
    upstream.reply(*[error_reply(404, "not_found_error")] * 2)

    with pytest.raises(NotFound, match=f"^Environment {ENV} was not found.$"):
        await client.retrieve_environment(ENV)
    with pytest.raises(NotFound, match=f"^Environment {ENV} was not found.$"):
        await client.work_stats(ENV)


async def test_the_request_id_comes_from_the_body_when_the_header_is_missing(upstream, client):
    reply = error_reply(404, "not_found_error")
    reply.headers = {}
    upstream.reply(reply)

    with pytest.raises(NotFound) as caught:
        await client.retrieve_work(ENV, WORK)

    assert caught.value.request_id == "req_body_01"


async def test_an_error_without_an_envelope_is_still_mapped(upstream, client):
    upstream.reply(Reply(status=403, body=b"<html>forbidden</html>", content_type="text/html"))

    with pytest.raises(PermissionDenied) as caught:
        await client.stop_work(ENV, WORK)

    assert caught.value.request_id is None
    assert caught.value.error_code is None
    assert (
        caught.value.message
        == f"The API key is not allowed to stop work item {WORK} in environment {ENV} (403)."
    )


async def test_upstream_text_that_quotes_a_credential_is_redacted(upstream, client):
    upstream.reply(error_reply(403, "permission_error", f"key {API_KEY} may not do this; Bearer {ENV_KEY}"))

    with pytest.raises(PermissionDenied) as caught:
        await client.stop_work(ENV, WORK)

    assert "[redacted]" in caught.value.message
    assert_no_secret_in(caught.value)


async def test_a_stop_conflict_is_already_stopped_at_once(upstream, client):
    # Even a server that says "retry" does not get a second stop.
    reply = error_reply(409, "conflict_error", "work is stopped")
    reply.headers["x-should-retry"] = "true"
    upstream.reply(reply, Reply(body=WORK_ITEM))
    started = time.monotonic()

    with pytest.raises(AlreadyStopped) as caught:
        await client.stop_work(ENV, WORK, force=True)

    assert time.monotonic() - started < 0.5
    assert isinstance(caught.value, Conflict)
    assert caught.value.kind == "already_stopped"
    assert "already stopped" in caught.value.message
    assert caught.value.message == f"Work item {WORK} is already stopped in environment {ENV}."
    assert caught.value.request_id == "req_header_01"
    assert len(upstream.requests) == 1


async def test_a_heartbeat_precondition_failure_carries_the_lease_state(upstream, client):
    current_state = {"last_heartbeat": TS, "lease_extended": False, "state": "active", "ttl_seconds": 60}
    upstream.reply(
        error_reply(
            412,
            "invalid_request_error",
            "mismatch",
            "heartbeat_precondition_failed",
            current_state=current_state,
        )
    )

    with pytest.raises(PreconditionFailed) as caught:
        await client.heartbeat_work(ENV, WORK, credential=ENV_KEY, expected_last_heartbeat="stale")

    exc = caught.value
    assert exc.error_code == "heartbeat_precondition_failed"
    assert isinstance(exc.lease_state, LeaseState)
    assert (exc.lease_state.last_heartbeat, exc.lease_state.state, exc.lease_state.ttl_seconds) == (
        TS,
        "active",
        60,
    )
    assert exc.lease_state.lease_extended is False
    assert "The item is now active." in exc.message


async def test_a_precondition_failure_without_details_has_no_lease_state(upstream, client):
    upstream.reply(error_reply(412, "invalid_request_error"))

    with pytest.raises(PreconditionFailed) as caught:
        await client.heartbeat_work(ENV, WORK, credential=ENV_KEY, expected_last_heartbeat=NO_HEARTBEAT)

    assert caught.value.lease_state is None


async def test_a_rate_limit_says_when_to_come_back(upstream, client):
    reply = error_reply(429, "rate_limit_error")
    reply.headers["retry-after"] = "30"
    upstream.reply(reply)

    with pytest.raises(RateLimited) as caught:
        await client.stop_work(ENV, WORK)

    assert caught.value.retry_after == 30.0
    assert caught.value.message == "The Work API is rate limiting requests (429). Try again in 30 s."


# --- retries ---------------------------------------------------------------------------------------------------


def unavailable(**headers: str) -> Reply:
    reply = error_reply(503, "api_error")
    reply.headers.update(headers)
    return reply


async def test_reads_retry_honouring_retry_after_ms(upstream, client):
    upstream.reply(
        unavailable(**{"retry-after-ms": "150"}), unavailable(**{"retry-after-ms": "150"}), Reply(body=STATS)
    )
    started = time.monotonic()

    stats = await client.work_stats(ENV)

    assert stats.depth == 3
    assert len(upstream.requests) == 3
    assert 0.3 <= time.monotonic() - started < 2.0


async def test_reads_retry_honouring_retry_after_seconds(upstream, client):
    upstream.reply(unavailable(**{"retry-after": "0.2"}), Reply(body=WORK_ITEM))
    started = time.monotonic()

    item = await client.retrieve_work(ENV, WORK)

    assert item.id == WORK
    assert time.monotonic() - started >= 0.2
    assert len(upstream.requests) == 2


@pytest.mark.parametrize("status", [408, 429, 500, 502, 529])
async def test_reads_retry_each_transient_status(upstream, client, status):
    first = error_reply(status, "api_error")
    first.headers["retry-after-ms"] = "10"
    upstream.reply(first, Reply(body=ENVIRONMENT))

    environment = await client.retrieve_environment(ENV)

    assert environment.id == ENV
    assert len(upstream.requests) == 2


async def test_retries_stop_at_the_total_cap(upstream):
    upstream.reply(*[unavailable(**{"retry-after-ms": "200"})] * 50)
    async with WorkAPIClient(api_key=API_KEY, base_url=upstream.base_url, retry_total=0.9) as capped:
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            await capped.work_stats(ENV)
        elapsed = time.monotonic() - started

    assert elapsed < 1.5
    assert 3 <= len(upstream.requests) <= 5
    assert caught.value.retry_after == 0.2


async def test_a_retry_after_beyond_the_budget_is_reported_at_once(upstream, client):
    upstream.reply(unavailable(**{"retry-after": "30"}), Reply(body=STATS))
    started = time.monotonic()

    with pytest.raises(Unavailable) as caught:
        await client.work_stats(ENV)

    assert time.monotonic() - started < 0.5
    assert caught.value.retry_after == 30.0
    assert caught.value.message == "The Work API is unavailable (503). Try again in 30 s."
    assert len(upstream.requests) == 1


async def test_reads_obey_x_should_retry_false(upstream, client):
    upstream.reply(unavailable(**{"x-should-retry": "false"}), Reply(body=STATS))

    with pytest.raises(Unavailable) as caught:
        await client.work_stats(ENV)

    assert caught.value.retryable is False
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    "mutation",
    [
        lambda c: c.update_work_metadata(ENV, WORK, {"a": "b"}),
        lambda c: c.stop_work(ENV, WORK),
        lambda c: c.poll_work(ENV, environment_key=ENV_KEY),
        lambda c: c.ack_work(ENV, WORK, credential=ENV_KEY),
        lambda c: c.heartbeat_work(ENV, WORK, credential=ENV_KEY, expected_last_heartbeat=NO_HEARTBEAT),
    ],
    ids=["update", "stop", "poll", "ack", "heartbeat"],
)
async def test_calls_that_change_something_are_never_retried(upstream, client, mutation):
    upstream.reply(unavailable(**{"retry-after-ms": "10"}), Reply(body=WORK_ITEM))

    with pytest.raises(Unavailable):
        await mutation(client)

    assert len(upstream.requests) == 1


async def test_client_errors_on_reads_are_not_retried(upstream, client):
    upstream.reply(error_reply(404, "not_found_error"), Reply(body=WORK_ITEM))

    with pytest.raises(NotFound):
        await client.retrieve_work(ENV, WORK)

    assert len(upstream.requests) == 1


# --- transport failures and timeouts ---------------------------------------------------------------------------


async def test_connection_refused_is_connection_failed():
    async with WorkAPIClient(api_key=API_KEY, base_url=closed_port_url(), retry_total=0.0) as unreachable:
        with pytest.raises(ConnectionFailed) as caught:
            await unreachable.stop_work(ENV, WORK)

    assert caught.value.kind == "connection"
    assert caught.value.retryable is True
    assert caught.value.status is None
    assert caught.value.message.startswith("Could not reach the Work API at http://127.0.0.1:")
    assert_no_secret_in(caught.value)


async def test_reads_retry_a_refused_connection_within_the_cap():
    async with WorkAPIClient(api_key=API_KEY, base_url=closed_port_url(), retry_total=1.0) as unreachable:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed):
            await unreachable.list_environments()

    # 0.5 s (x jitter) fits the budget, the following 1 s does not.
    assert 0.35 <= time.monotonic() - started < 1.5


async def test_a_slow_answer_is_an_upstream_timeout(upstream):
    upstream.reply(Reply(body=WORK_ITEM, delay=1.0))
    async with WorkAPIClient(
        api_key=API_KEY, base_url=upstream.base_url, timeout=0.2, retry_total=0.0
    ) as impatient:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as caught:
            await impatient.retrieve_work(ENV, WORK)

    assert time.monotonic() - started < 0.8
    assert caught.value.kind == "timeout"
    assert caught.value.message == (
        f"The Work API did not answer within 0.2 s while trying to retrieve work item {WORK} in environment {ENV}. "
        "Try again shortly."
    )


async def test_a_long_poll_gets_block_ms_on_top_of_the_timeout(upstream):
    upstream.reply(Reply(body=None, delay=0.5))
    async with WorkAPIClient(api_key=API_KEY, base_url=upstream.base_url, timeout=0.3) as poller:
        assert await poller.poll_work(ENV, environment_key=ENV_KEY, block_ms=900) is None


# --- malformed answers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (Reply(body=b"{not json"), "the body is not valid JSON"),
        (
            Reply(body=b"<html>hi</html>", content_type="text/html; charset=utf-8"),
            "its content type is 'text/html', not JSON",
        ),
        (Reply(body=WORK_ITEM, content_type=None), "its content type is 'none', not JSON"),
        (
            Reply(body={k: v for k, v in WORK_ITEM.items() if k != "created_at"}),
            "work item.created_at is missing",
        ),
        (Reply(body={**WORK_ITEM, "state": "paused"}), "work item.state is 'paused', not one of"),
        (
            Reply(body={**WORK_ITEM, "created_at": "2026-07-01T08:15:06"}),
            "work item.created_at is not an RFC 3339 timestamp",
        ),
        (
            Reply(body={**WORK_ITEM, "metadata": {"a": 1}}),
            "work item.metadata should be an object of strings",
        ),
        (Reply(body=[WORK_ITEM]), "work item should be an object but is an array"),
        (Reply(body=None), "work item should be an object but is null"),
        (Reply(status=302, body=b"", headers={"location": "/elsewhere"}), "unexpected status 302"),
    ],
    ids=[
        "bad-json",
        "html",
        "no-content-type",
        "missing-field",
        "unknown-state",
        "naive-time",
        "bad-metadata",
        "array",
        "null",
        "redirect",
    ],
)
async def test_an_answer_that_cannot_be_understood_is_malformed(upstream, client, reply, detail):
    reply.headers.setdefault("request-id", "req_bad_01")
    upstream.reply(reply, Reply(body=WORK_ITEM))

    with pytest.raises(MalformedResponse) as caught:
        await client.retrieve_work(ENV, WORK)

    assert detail in caught.value.detail
    assert detail in caught.value.message
    assert caught.value.kind == "malformed"
    assert caught.value.request_id == "req_bad_01"
    assert len(upstream.requests) == 1  # not retried


async def test_stats_with_a_string_count_is_malformed(upstream, client):
    upstream.reply(Reply(body={**STATS, "depth": "3"}))

    with pytest.raises(MalformedResponse, match=r"queue stats.depth should be an integer but is a string"):
        await client.work_stats(ENV)


async def test_a_huge_body_is_refused_without_reading_it_all(upstream, client):
    upstream.reply(Reply(body=b'{"data": "' + b"x" * (6 * 1024 * 1024) + b'"}'))

    with pytest.raises(MalformedResponse, match="larger than 5 MB"):
        await client.retrieve_work(ENV, WORK)


async def test_a_body_over_the_limit_without_a_length_is_cut_off(upstream):
    # The server's Content-Length is hidden by a transport that streams the body in chunks.
    class Chunked(httpx.AsyncByteStream):
        async def __aiter__(self):
            for _ in range(100):
                yield b"x" * 1000

    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": "application/json"}, stream=Chunked())
    )
    async with WorkAPIClient(
        api_key=API_KEY, base_url="http://upstream.test", transport=transport, max_body_bytes=10_000
    ) as c:
        with pytest.raises(MalformedResponse, match="larger than"):
            await c.retrieve_work(ENV, WORK)


# --- ids, credentials and metadata are checked before any request ---------------------------------------------

BAD_ENVIRONMENT_IDS = [
    "",
    "env_",
    "env_a/b",
    "env_..",
    "env_a b",
    "env_a\n",
    "env_a%2F",
    "../env_a",
    "work_a",
    "ENV_a",
    "env_" + "a" * 101,
    42,
    None,
]
BAD_WORK_IDS = ["", "work_", "work_a/../b", "work_a\tb", "work_ä", "session_a", "work_a?x=1", 7]


def every_call_with(env: object, work: object):
    return [
        lambda c: c.retrieve_environment(env),
        lambda c: c.retrieve_work(env, work),
        lambda c: c.update_work_metadata(env, work, {"a": "b"}),
        lambda c: c.stop_work(env, work),
        lambda c: c.work_stats(env),
        lambda c: c.list_work(env, environment_key=ENV_KEY),
        lambda c: c.poll_work(env, environment_key=ENV_KEY),
        lambda c: c.ack_work(env, work, credential=ENV_KEY),
        lambda c: c.heartbeat_work(env, work, credential=ENV_KEY),
    ]


@pytest.mark.parametrize("bad", BAD_ENVIRONMENT_IDS, ids=repr)
async def test_a_bad_environment_id_is_refused_before_any_request(upstream, client, bad):
    for call in every_call_with(bad, WORK):
        with pytest.raises(InvalidID) as caught:
            await call(client)
        assert caught.value.kind == "invalid_id"
        assert caught.value.status is None

    assert upstream.requests == []


@pytest.mark.parametrize("bad", BAD_WORK_IDS, ids=repr)
async def test_a_bad_work_id_is_refused_before_any_request(upstream, client, bad):
    for call in every_call_with(ENV, bad)[1:4] + every_call_with(ENV, bad)[7:]:
        with pytest.raises(InvalidID, match="work id"):
            await call(client)

    assert upstream.requests == []


async def test_an_invalid_id_message_shows_the_value_but_never_a_credential(client):
    with pytest.raises(InvalidID) as caught:
        await client.retrieve_environment("env_a/b")
    assert caught.value.message == (
        "'env_a/b' is not a valid environment id: it should look like env_011CZkZ9X2dpNyB7HsEFoRfW "
        "(the prefix, then 1 to 100 letters, digits, '_' or '-')."
    )

    with pytest.raises(InvalidID) as caught:
        await client.retrieve_environment(API_KEY)
    assert_no_secret_in(caught.value)


async def test_a_missing_or_unsendable_credential_is_refused_before_any_request(upstream):
    async with WorkAPIClient(api_key=None, base_url=upstream.base_url) as keyless:
        with pytest.raises(AuthenticationFailed, match="No API key is configured"):
            await keyless.work_stats(ENV)
        with pytest.raises(AuthenticationFailed, match="No environment key"):
            await keyless.list_work(ENV, environment_key="")
        with pytest.raises(AuthenticationFailed) as caught:
            await keyless.ack_work(ENV, WORK, credential=ENV_KEY + "\n")
        assert_no_secret_in(caught.value)
        with pytest.raises(InvalidID, match="worker id"):
            await keyless.poll_work(ENV, environment_key=ENV_KEY, worker_id="bad\r\nInjected: 1")

    assert upstream.requests == []


async def test_metadata_no_merge_could_accept_is_refused_before_any_request(upstream, client):
    with pytest.raises(InvalidMetadata, match="Too many metadata keys: 17"):
        await client.update_work_metadata(ENV, WORK, {f"k{i}": "v" for i in range(17)})
    with pytest.raises(InvalidMetadata, match="is 65 characters long"):
        await client.update_work_metadata(ENV, WORK, {"k" * 65: None})
    with pytest.raises(InvalidMetadata, match="is 513 characters long"):
        await client.update_work_metadata(ENV, WORK, {"k": "v" * 513})
    with pytest.raises(InvalidMetadata, match="must be a string or None"):
        await client.update_work_metadata(ENV, WORK, {"k": 5})

    assert upstream.requests == []


def test_validate_metadata_names_each_problem():
    assert validate_metadata({}) == []
    assert validate_metadata({f"k{i}": "v" * 512 for i in range(16)}) == []
    assert validate_metadata({"k" * 64: ""}) == []
    problems = validate_metadata({**{f"k{i}": "v" for i in range(16)}, "x" * 65: "y" * 513, "n": None})
    assert problems == [
        "Too many metadata keys: 18 (at most 16).",
        f"Metadata key {('x' * 37 + '...')!r} is 65 characters long (at most 64).",
        f"The value of metadata key {('x' * 37 + '...')!r} is 513 characters long (at most 512).",
        "The value of metadata key 'n' is not a string.",
    ]


# --- successful calls, pagination ------------------------------------------------------------------------------


async def test_records_are_parsed(upstream, client):
    upstream.reply(Reply(body={**WORK_ITEM, "state": "active", "acknowledged_at": TS}))

    item = await client.retrieve_work(ENV, WORK)

    assert isinstance(item, WorkItem)
    assert (item.id, item.environment_id, item.state, item.data.type, item.data.id) == (
        WORK,
        ENV,
        "active",
        "session",
        "session_01ABC",
    )
    assert item.created_at.tzinfo is not None and item.created_at.microsecond == 120394
    assert item.acknowledged_at == item.created_at
    assert item.raw["metadata"] == {"team": "infra"}


async def test_an_empty_poll_is_none_and_a_delivery_carries_its_secret(upstream, client):
    upstream.reply(Reply(body=None))
    assert await client.poll_work(ENV, environment_key=ENV_KEY) is None

    item = await client.poll_work(ENV, environment_key=ENV_KEY)  # the canned answer: a delivery
    assert item is not None
    assert decode_secret(item.secret or "").sessions_token == "sk-ant-req-x"
    assert "secret" not in repr(item)


async def test_iter_work_follows_cursors_to_the_last_page(upstream, client):
    items = [{**WORK_ITEM, "id": f"work_{n}"} for n in range(5)]
    upstream.reply(
        Reply(body={"data": items[:2], "next_page": "cursor_a"}),
        Reply(body={"data": items[2:4], "next_page": "cursor_b"}),
        Reply(body={"data": items[4:], "next_page": None}),
    )

    seen = [item.id async for item in client.iter_work(ENV, environment_key=ENV_KEY, limit=2)]

    assert seen == [f"work_{n}" for n in range(5)]
    assert [r.query for r in upstream.requests] == [
        {"limit": ["2"]},
        {"limit": ["2"], "page": ["cursor_a"]},
        {"limit": ["2"], "page": ["cursor_b"]},
    ]
    assert all(r.headers["authorization"] == f"Bearer {ENV_KEY}" for r in upstream.requests)


async def test_a_cursor_that_repeats_stops_paging(upstream, client):
    upstream.reply(
        Reply(body={"data": [ENVIRONMENT], "next_page": "same"}),
        Reply(body={"data": [ENVIRONMENT], "next_page": "same"}),
    )

    with pytest.raises(MalformedResponse, match="same page cursor twice"):
        async for _ in client.iter_environments():
            pass
    assert len(upstream.requests) == 2


# --- the secret ------------------------------------------------------------------------------------------------


def encode(payload: object, *, padded: bool) -> str:
    text = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
    return text if padded else text.rstrip("=")


@pytest.mark.parametrize("padded", [True, False])
def test_a_secret_decodes_with_or_without_padding(padded):
    payload = {
        "sessions_token": "sk-ant-req-abc",
        "api_base_url": "https://api.example.test",
        "ingress": "t?",
    }
    value = encode(payload, padded=padded)
    assert value.endswith("=") is padded  # the payload is chosen so that padding exists

    secret = decode_secret(value)

    assert secret.sessions_token == "sk-ant-req-abc"
    assert secret.api_base_url == "https://api.example.test"
    assert secret.extra == {"ingress": "t?"}
    assert "sk-ant-req-abc" not in repr(secret)


def test_a_secret_without_a_base_url_decodes():
    secret = decode_secret(encode({"sessions_token": "sk-ant-req-abc"}, padded=False))
    assert secret.api_base_url is None
    assert secret.extra == {}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty"),
        ("eyJzZXNz+W9uc190b2tlbiI6InNrLWFudC1yZXEteCJ9", "not base64url"),
        ("eyJzZXNzaW9uc190b2tlbiI6InNrLWFudC1yZXEteCJ9a", "length is impossible"),
        (base64.urlsafe_b64encode(b"sk-ant-req-secret not json").decode(), "does not decode to JSON"),
        (encode(["sk-ant-req-x"], padded=False), "not decode to a JSON object"),
        (encode({"token": "sk-ant-req-x"}, padded=False), "no sessions_token"),
        (
            encode({"sessions_token": "sk-ant-req-x", "api_base_url": 5}, padded=False),
            "api_base_url is not a string",
        ),
    ],
)
def test_an_invalid_secret_is_a_clear_value_error_that_never_quotes_it(value, problem):
    with pytest.raises(InvalidSecret, match=problem) as caught:
        decode_secret(value)

    assert isinstance(caught.value, ValueError)
    assert not isinstance(caught.value, WorkAPIError)
    assert value == "" or value not in str(caught.value)
    assert "sk-ant" not in str(caught.value)
