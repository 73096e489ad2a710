"""Retries, side by side with the official SDK: both clients read queue stats from the same scripted server.

The server answers each request with the next answer of a script (status and headers), then keeps repeating the
last one. For each script the test prints how many requests each client made and how long it took, and asserts
the policy the README states: a read is tried at most three times (two retries, as the SDK), honours
``retry-after-ms`` / ``retry-after`` and ``x-should-retry`` both ways, and gives up at once, saying how long the
server asked to wait, when that wait does not fit in the retry budget (where the SDK sleeps it out).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import pytest

from workqueue.client import WorkAPIClient
from workqueue.errors import WorkAPIError

ENV_ID = "env_01RetryScript"
STATS = {"type": "work_queue_stats", "depth": 3, "pending": 1, "oldest_queued_at": None, "workers_polling": 2}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...] = ()


class ScriptedServer:
    """A loopback HTTP server answering by a script; ``hits`` counts the requests of the current script."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.hits = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    answer = server.script[min(server.hits, len(server.script) - 1)]
                    server.hits += 1
                body = (
                    STATS
                    if answer.status == 200
                    else {
                        "type": "error",
                        "error": {"type": "scripted_error", "message": f"scripted {answer.status}"},
                    }
                )
                data = json.dumps(body).encode()
                self.send_response(answer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_scripted_{server.hits}")
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def play(self, *answers: Answer) -> None:
        with self.lock:
            self.script = list(answers)
            self.hits = 0

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@dataclass
class Outcome:
    attempts: int
    seconds: float
    ok: bool
    message: str


def ours(server: ScriptedServer, *answers: Answer, retry_total: float = 8.0) -> Outcome:
    async def read() -> Outcome:
        server.play(*answers)
        started = time.monotonic()
        async with WorkAPIClient(
            api_key="sk-scripted", base_url=server.base_url, retry_total=retry_total
        ) as c:
            try:
                await c.work_stats(ENV_ID)
            except WorkAPIError as exc:
                return Outcome(server.hits, time.monotonic() - started, False, str(exc))
        return Outcome(server.hits, time.monotonic() - started, True, "")

    return asyncio.run(read())


def sdk(server: ScriptedServer, *answers: Answer) -> Outcome:
    server.play(*answers)
    started = time.monotonic()
    with anthropic.Anthropic(api_key="sk-scripted", base_url=server.base_url) as client:
        try:
            client.beta.environments.work.stats(ENV_ID)
        except anthropic.APIStatusError as exc:
            return Outcome(server.hits, time.monotonic() - started, False, str(exc))
    return Outcome(server.hits, time.monotonic() - started, True, "")


FAST = (("retry-after-ms", "10"),)
SCRIPTS: dict[str, tuple[tuple[Answer, ...], int, int]] = {
    # name: (script, attempts of ours, attempts of the SDK)
    "429 retry-after-ms 10, always": ((Answer(429, FAST),), 3, 3),
    "503 retry-after-ms 10, always": ((Answer(503, FAST),), 3, 3),
    "529 retry-after-ms 10, always": ((Answer(529, FAST),), 3, 3),
    "408 retry-after-ms 10, always": ((Answer(408, FAST),), 3, 3),
    "409 retry-after-ms 10, always": ((Answer(409, FAST),), 3, 3),
    "503 then 200": ((Answer(503, FAST), Answer(200)), 2, 2),
    "429 x-should-retry false": ((Answer(429, (*FAST, ("x-should-retry", "false"))),), 1, 1),
    "400 x-should-retry true, then 200": (
        (Answer(400, (*FAST, ("x-should-retry", "true"))), Answer(200)),
        2,
        2,
    ),
    "400": ((Answer(400),), 1, 1),
}


def test_reads_retry_as_often_as_the_sdk_and_no_more(scripted: ScriptedServer) -> None:
    rows = []
    for name, (script, want_ours, want_sdk) in SCRIPTS.items():
        a, b = ours(scripted, *script), sdk(scripted, *script)
        rows.append((name, a, b))
        assert (a.attempts, b.attempts) == (want_ours, want_sdk), name
        assert a.ok == b.ok, name
    print("\nretries side by side (requests made, seconds)")
    print(f"  {'script':<36} {'dashboard':>16} {'anthropic SDK':>16}")
    for name, a, b in rows:
        print(f"  {name:<36} {a.attempts:>5} in {a.seconds:5.2f} s {b.attempts:>5} in {b.seconds:5.2f} s")


def test_backoff_without_retry_after_grows_like_the_sdk(scripted: ScriptedServer) -> None:
    # No retry-after: 0.5 s then 1 s (less jitter of at most a quarter) before the second and third attempts.
    a = ours(scripted, Answer(503))
    b = sdk(scripted, Answer(503))
    print(
        f"\n503 without retry-after: dashboard {a.attempts} in {a.seconds:.2f} s, SDK {b.attempts} in {b.seconds:.2f} s"
    )
    assert a.attempts == b.attempts == 3
    assert a.seconds >= 1.1


def test_a_wait_longer_than_the_budget_gives_up_at_once_and_says_how_long(scripted: ScriptedServer) -> None:
    outcome = ours(scripted, Answer(429, (("retry-after", "30"),)), retry_total=8.0)
    assert outcome.attempts == 1
    assert not outcome.ok
    assert "rate limiting" in outcome.message and "Try again in 30 s." in outcome.message
    # Within the budget, the asked-for wait is honoured before the next attempt.
    honoured = ours(scripted, Answer(429, (("retry-after-ms", "400"),)), Answer(200), retry_total=8.0)
    assert honoured.ok and honoured.attempts == 2 and honoured.seconds >= 0.4


def test_writes_are_never_retried(scripted: ScriptedServer) -> None:
    async def stop() -> str:
        scripted.play(Answer(503, FAST))
        async with WorkAPIClient(api_key="sk-scripted", base_url=scripted.base_url) as c:
            with pytest.raises(WorkAPIError) as caught:
                await c.stop_work(ENV_ID, "work_01Scripted")
        return str(caught.value)

    message = asyncio.run(stop())
    assert scripted.hits == 1
    assert "unavailable (503)" in message
