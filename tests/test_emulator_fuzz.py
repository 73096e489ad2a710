"""The emulator's surface, fuzzed from its own OpenAPI document (``GET /_emulator/openapi.json``) with schemathesis.

Every ``/v1/`` operation the document lists gets requests generated from its parameters and body schemas, valid ones
(positive) and ones that break the schema on purpose (negative), against the session's emulator subprocess over real
HTTP. An environment and work items in every state are seeded first, so paths name real objects most of the time
(in valid requests), besides the generated ids; each request carries the credential the operation names in
``x-credentials`` (the API key, the environment's key or the item's current sessions token), and now and then a
missing, unknown, foreign or wrong-kind one.

Checked on every answer: no 5xx; ``application/json`` always; a ``request-id`` header; a non-2xx in the upstream's
envelope whose ``request_id`` is the header's; the body and headers as the document says for that status (so a 2xx
body matches its documented schema); invalid data refused with a 4xx. Findings are collected rather than shrunk, so
the number of requests stays bounded (about 500, printed at the end of the run with what came back).
"""

from __future__ import annotations

import base64
import json
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from workqueue.emulator.control import EmulatorControl

POSITIVE_PER_OPERATION = 20
NEGATIVE_PER_OPERATION = 16
SLOW_SECONDS = 5.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Operations that would use up the seeded environment get a fresh one when they name a real environment.
CONSUMES_ENVIRONMENT = {"environments_delete", "environments_archive"}


class _Summary:
    lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.write_sep("=", "emulator surface: fuzzed from its OpenAPI document")
            for line in self.lines:
                terminalreporter.write_line(line)


@pytest.fixture
def fuzz_figures(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    manager = request.config.pluginmanager
    summary = manager.get_plugin("emulator-fuzz-figures")
    if summary is None:
        summary = _Summary()
        manager.register(summary, "emulator-fuzz-figures")
    yield summary.lines


# --- The seeded world --------------------------------------------------------------------------------------------


@dataclass
class World:
    """Real objects in the emulator, and the credentials that open them."""

    emulator: EmulatorControl
    http: httpx.Client
    env_id: str = ""
    keys: dict[str, str] = field(default_factory=dict)  # environment id -> environment key
    other_env_id: str = ""
    cloud_env_id: str = ""
    archived_env_id: str = ""
    work_ids: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # work id -> its current sessions token

    def v1(self, method: str, path: str, credential: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(
            method, path, headers={"Authorization": f"Bearer {credential}"}, timeout=10, **kwargs
        )
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response

    def self_hosted(self, name: str) -> str:
        env, key = self.emulator.create_environment(name)
        self.keys[env["id"]] = key
        return str(env["id"])

    def remember_delivery(self, body: Any) -> None:
        if isinstance(body, dict) and isinstance(body.get("secret"), str) and isinstance(body.get("id"), str):
            secret = body["secret"]
            decoded = json.loads(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4)))
            self.tokens[body["id"]] = decoded["sessions_token"]

    def poll(self, env_id: str) -> str | None:
        body = self.v1("GET", f"/v1/environments/{env_id}/work/poll", self.keys[env_id]).json()
        self.remember_delivery(body)
        return body["id"] if body else None

    def add_work(self, count: int, *, delivered: int = 0, acked: int = 0, active: int = 0) -> None:
        """``count`` new items in the seeded environment; the oldest taken as far as delivered/acked/active."""
        key = self.keys[self.env_id]
        for n in range(count):
            self.work_ids.append(self.emulator.enqueue(self.env_id, metadata={"seed": str(n)})["id"])
        for n in range(delivered):
            work_id = self.poll(self.env_id)
            if work_id is None:
                return
            base = f"/v1/environments/{self.env_id}/work/{work_id}"
            if n < acked:
                self.v1("POST", f"{base}/ack", key)
            if n < active:
                self.v1("POST", f"{base}/heartbeat", key, params={"expected_last_heartbeat": "NO_HEARTBEAT"})

    def seed(self) -> None:
        self.env_id = self.self_hosted("fuzz")
        self.other_env_id = self.self_hosted("fuzz-other")
        self.archived_env_id = self.self_hosted("fuzz-archived")
        self.v1("POST", f"/v1/environments/{self.archived_env_id}/archive", self.emulator.api_key)
        cloud = self.v1("POST", "/v1/environments", self.emulator.api_key, json={"name": "fuzz-cloud"}).json()
        self.cloud_env_id = cloud["id"]
        self.add_work(10, delivered=6, acked=5, active=4)
        # One stopping (graceful stop of an active item), one stopped.
        active = [w for w in self.work_ids if w in self.tokens][:4]
        base = f"/v1/environments/{self.env_id}/work"
        self.v1("POST", f"{base}/{active[0]}/stop", self.emulator.api_key, json={})
        self.v1("POST", f"{base}/{active[1]}/stop", self.emulator.api_key, json={"force": True})


# --- One request ---------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    real_objects: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)
    findings: dict[str, str] = field(default_factory=dict)  # first finding per (operation, kind)
    slowest: float = 0.0

    def finding(self, operation: str, kind: str, detail: str) -> None:
        self.findings.setdefault(f"{operation}: {kind}", detail[:1500])


def header(response: schemathesis.Response, name: str) -> str:
    """One header of an answer (schemathesis keeps them lowercased, each a list of values)."""
    values = response.headers.get(name.lower()) or [""]
    return ",".join(values)


def envelope_problems(response: schemathesis.Response) -> list[str]:
    """What is wrong with an answer by the upstream's rules (JSON, request-id, error envelope)."""
    problems = []
    status = response.status_code
    if status >= 500:
        problems.append(f"server error {status}")
    content_type = header(response, "content-type")
    if content_type.split(";")[0].strip() != "application/json":
        problems.append(f"content type {content_type!r}")
    request_id = header(response, "request-id")
    if not request_id.startswith("req_"):
        problems.append(f"request-id header {request_id!r}")
    try:
        body = json.loads(response.content)
    except ValueError:
        return [*problems, "a body that is not JSON"]
    if status >= 300:
        error = body.get("error") if isinstance(body, dict) else None
        if (
            not isinstance(body, dict)
            or body.get("type") != "error"
            or not isinstance(error, dict)
            or not isinstance(error.get("type"), str)
            or not isinstance(error.get("message"), str)
        ):
            problems.append(f"{status} outside the error envelope: {response.content[:200]!r}")
        elif body.get("request_id") != request_id:
            problems.append(
                f"envelope request_id {body.get('request_id')!r} is not the header's {request_id!r}"
            )
    return problems


class Fuzzer:
    def __init__(self, world: World, tally: Tally, base_url: str) -> None:
        self.world = world
        self.tally = tally
        self.base_url = base_url
        self.session = requests.Session()
        self.throwaways = 0

    def _environment(self, operation_id: str, choice: str, generated: str) -> tuple[str, bool]:
        world = self.world
        if choice == "seeded" and operation_id in CONSUMES_ENVIRONMENT:
            self.throwaways += 1
            return world.self_hosted(f"fuzz-throwaway-{self.throwaways}"), True
        chosen = {
            "seeded": world.env_id,
            "other": world.other_env_id,
            "cloud": world.cloud_env_id,
            "archived": world.archived_env_id,
        }.get(choice)
        return (chosen, True) if chosen else (generated, False)

    def _credential(
        self, credentials: list[str], choice: str, env_id: str, work_id: str | None
    ) -> str | None:
        world = self.world
        api_key = world.emulator.api_key
        own_key = world.keys.get(env_id, world.keys[world.env_id])
        token = world.tokens.get(work_id or "")
        if choice == "none":
            return None
        if choice == "unknown":
            return "sk-ant-oat01-" + "x" * 40
        if choice == "foreign":
            return (
                world.keys[world.other_env_id] if env_id != world.other_env_id else world.keys[world.env_id]
            )
        by_kind = {"api_key": api_key, "environment_key": own_key, "sessions_token": token}
        if choice == "wrong_kind":
            others = [kind for kind in ("api_key", "environment_key") if kind not in credentials]
            return by_kind[others[0]] if others else api_key
        wanted = choice if choice in credentials else credentials[0]
        return by_kind.get(wanted) or api_key

    def prepare(self, case: Case, data: st.DataObject) -> None:
        """Point the case at real objects (sometimes), set its credential, keep long polls short."""
        definition = case.operation.definition.raw
        operation_id = definition["operationId"]
        credentials: list[str] = definition["x-credentials"]
        path = dict(case.path_parameters or {})
        negative_path = case.meta is not None and case.meta.is_negative_at(ParameterLocation.PATH)
        real = False
        if "environment_id" in path and not negative_path:
            choice = data.draw(
                st.sampled_from(["seeded"] * 6 + ["other", "cloud", "archived", "generated", "generated"])
            )
            path["environment_id"], real = self._environment(
                operation_id, choice, str(path["environment_id"])
            )
            if "work_id" in path:
                # Drawn whatever the pool holds (it grows), so the same draws always mean the same choice.
                pick = data.draw(st.integers(min_value=0, max_value=2**16))
                if path["environment_id"] == self.world.env_id:
                    pool = [*self.world.work_ids, str(path["work_id"])]
                    path["work_id"] = pool[pick % len(pool)]
            case.path_parameters = path
        self.tally.real_objects += real
        # Mostly a credential the operation takes; a third of the time none, an unknown, a foreign or a wrong one.
        choice = data.draw(st.sampled_from(["right"] * 8 + ["none", "unknown", "foreign", "wrong_kind"]))
        if choice == "right":
            choice = data.draw(st.sampled_from(credentials))
        credential = self._credential(
            credentials, choice, str(path.get("environment_id", "")), path.get("work_id")
        )
        headers = case.headers if case.headers is not None else CaseInsensitiveDict()
        for name in ("Authorization", "x-api-key"):
            headers.pop(name, None)
        if credential is not None:
            if data.draw(st.booleans()):
                headers["Authorization"] = f"Bearer {credential}"
            else:
                headers["x-api-key"] = credential
        case.headers = headers
        query = case.query or {}
        block_ms = query.get("block_ms")
        if isinstance(block_ms, int) and 20 < block_ms <= 999:  # a valid wait, only shorter
            query["block_ms"] = 20

    def run(self, case: Case, data: st.DataObject) -> None:
        label = case.operation.definition.raw["operationId"]
        self.prepare(case, data)
        started = time.monotonic()
        try:
            response = case.call(base_url=self.base_url, session=self.session, timeout=15)
        except requests.RequestException as exc:
            self.tally.finding(label, "no answer", repr(exc))
            return
        elapsed = time.monotonic() - started
        self.tally.requests += 1
        self.tally.by_operation[label] += 1
        self.tally.statuses[response.status_code] += 1
        self.tally.slowest = max(self.tally.slowest, elapsed)
        if elapsed > SLOW_SECONDS:
            self.tally.finding(label, "slow", f"{elapsed:.1f} s: {case.as_curl_command()}")
        for problem in envelope_problems(response):
            self.tally.finding(label, problem.split(":")[0], f"{problem}\n{case.as_curl_command()}")
        checks = CHECKS
        # A list or object as a query value goes out as repeated keys or not at all (the server reads the last
        # value of a repeated key): whether the request as sent breaks the schema cannot be told.
        if (
            case.meta is not None
            and case.meta.is_negative_at(ParameterLocation.QUERY)
            and any(isinstance(value, list | dict) for value in (case.query or {}).values())
        ):
            checks = [check for check in CHECKS if check is not negative_data_rejection]
        try:
            case.validate_response(response, checks=checks)
        except BaseExceptionGroup as group:  # schemathesis' FailureGroup: one exception per failed check
            for failure in group.exceptions:
                self.tally.finding(label, type(failure).__name__, str(group))
        if response.status_code == 200 and label == "work_poll":
            self.world.remember_delivery(response.json())
        if self.tally.requests % 40 == 0:
            # Keep items in the early states coming: stops and acks use them up.
            self.world.add_work(2, delivered=1, acked=1)


def fuzz_operation(fuzzer: Fuzzer, strategy: Any, examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        # Findings are collected, not raised: nothing to shrink, and the number of requests stays bounded.
        phases=(Phase.explicit, Phase.generate),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        fuzzer.run(data.draw(strategy), data)

    run()


def strategies(schema: Any) -> Iterator[tuple[str, GenerationMode, Any, int]]:
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in (
            (GenerationMode.POSITIVE, POSITIVE_PER_OPERATION),
            (GenerationMode.NEGATIVE, NEGATIVE_PER_OPERATION),
        ):
            yield operation.label, mode, operation.as_strategy(generation_mode=mode), examples


def test_the_v1_surface_answers_every_generated_request_in_the_envelope(
    emulator: EmulatorControl, fuzz_figures: list[str]
) -> None:
    started = time.monotonic()
    with httpx.Client(base_url=emulator.base_url) as http:
        document = http.get("/_emulator/openapi.json").json()
        world = World(emulator, http)
        world.seed()
        schema = schemathesis.openapi.from_dict(document)
        tally = Tally()
        fuzzer = Fuzzer(world, tally, emulator.base_url)
        operations = 0
        for label, mode, strategy, examples in strategies(schema):
            operations += mode == GenerationMode.POSITIVE
            try:
                fuzz_operation(fuzzer, strategy, examples)
            except Exception:  # a strategy that cannot be built, or a request the test could not make
                tally.finding(label, f"{mode.value} run", traceback.format_exc())
    seconds = time.monotonic() - started
    by_class = Counter(f"{status // 100}xx" for status in tally.statuses.elements())
    fuzz_figures.extend(
        [
            f"{tally.requests} requests over {operations} operations in {seconds:.1f} s "
            f"({tally.real_objects} naming seeded objects); slowest answer {tally.slowest * 1000:.0f} ms",
            "answers: "
            + ", ".join(f"{cls} {n}" for cls, n in sorted(by_class.items()))
            + " ("
            + ", ".join(f"{status}: {n}" for status, n in sorted(tally.statuses.items()))
            + ")",
            f"findings: {len(tally.findings)}",
        ]
    )
    assert set(tally.by_operation) == {
        op["operationId"] for p in document["paths"].values() for op in p.values()
    }
    assert not tally.findings, "\n\n".join(f"{k}\n{v}" for k, v in tally.findings.items())


def test_what_the_fuzzing_found_stays_fixed(emulator: EmulatorControl) -> None:
    """A reclaim window too long for a date (it was a 500), a worker id too long for the tables (stored as is)."""
    env, key = emulator.create_environment("fuzz-found")
    emulator.enqueue(env["id"])
    poll = f"/v1/environments/{env['id']}/work/poll"
    with httpx.Client(base_url=emulator.base_url, headers={"Authorization": f"Bearer {key}"}) as http:
        for block_ms in ("", "1"):
            response = http.get(poll, params={"reclaim_older_than_ms": str(10**18), "block_ms": block_ms})
            assert response.status_code == 200, response.text
        assert response.json() is None  # the one item went to the first poll and is not reclaimed
        response = http.get(poll, headers={"Anthropic-Worker-ID": "w" * 513})
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert "Anthropic-Worker-ID" in response.json()["error"]["message"]
        assert http.get(poll, headers={"Anthropic-Worker-ID": "w" * 512}).status_code == 200
        stats = http.get(f"/v1/environments/{env['id']}/work/stats").json()
        assert stats["workers_polling"] == 1
