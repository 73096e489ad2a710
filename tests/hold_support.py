"""Shared by the hold suite (tests/test_hold_faults.py, tests/test_hold_concurrency.py, tests/test_hold_hostile.py):
the figures each file adds to and prints at the end of the run, what a response must never contain, the state of
the audit chain and of the upstream's mutating routes before and after an attack, and signed-in httpx sessions
against the real ASGI server (``live_server_url``, from the browser tests' fixtures).

The figures are printed by a terminal-summary plugin that the session fixture ``hold_figures`` registers the first
time a hold test runs, so they appear at the end of ``make test`` whatever else ran.
"""

from __future__ import annotations

import html as html_lib
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from browser.conftest import free_port, live_server_url  # noqa: F401
from pages_support import PASSWORD

from dashboard.audit import verify_chain
from dashboard.models import AuditEntry

# Upstream routes that change something: none of them may be reached by a refused input.
MUTATING_ROUTES = (
    "stop",
    "update",
    "ack",
    "poll",
    "heartbeat",
    "environments.create",
    "environments.update",
    "environments.archive",
    "environments.delete",
)
_TRACE_MARKERS = (
    "Traceback (most recent call last)",
    'File "/',
    "django.core.exceptions",
    "Exception Value:",
)
_CREDENTIAL_RE = re.compile(r"sk-ant-[A-Za-z0-9_\-]{20,}|wqd_pat_[A-Za-z0-9_\-]{20,}")


# --- Figures -----------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    faults_tried: int = 0
    faults_failed: int = 0
    inputs_tried: int = 0
    inputs_accepted_wrongly: int = 0
    concurrency: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ran: set[str] = field(default_factory=set)
    # One line per class of hostile input measured on its own (login guesses, audit growth, origins...).
    classes: dict[str, str] = field(default_factory=dict)

    def faults(self, tried: int, failed: int) -> None:
        self.ran.add("faults")
        self.faults_tried += tried
        self.faults_failed += failed

    def inputs(self, tried: int, wrong: int) -> None:
        self.ran.add("inputs")
        self.inputs_tried += tried
        self.inputs_accepted_wrongly += wrong

    def measured(self, label: str, figure: str) -> None:
        """``measured("nested JSON", "12 bodies, 0 errors")``: printed as ``nested JSON: 12 bodies, 0 errors``."""
        self.ran.add("inputs")
        self.classes[label] = figure

    def lines(self) -> list[str]:
        lines = []
        if "faults" in self.ran:
            lines.append(f"faults × surfaces tried: {self.faults_tried}, failures: {self.faults_failed}")
        lines.extend(self.concurrency)
        if "inputs" in self.ran:
            lines.append(
                f"inputs tried: {self.inputs_tried}, accepted wrongly: {self.inputs_accepted_wrongly}"
            )
            lines.extend(f"  {label}: {figure}" for label, figure in self.classes.items())
        return lines + self.notes


FIGURES = Figures()


class _Summary:
    """Prints the hold figures at the end of the run."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = FIGURES.lines()
        if lines:
            terminalreporter.write_sep("=", "hold: faults, concurrency, hostile input")
            for line in lines:
                terminalreporter.write_line(line)


@pytest.fixture(scope="session", autouse=True)
def hold_figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    manager = request.config.pluginmanager
    if manager.get_plugin("hold-figures") is None:
        manager.register(_Summary(), "hold-figures")
    yield FIGURES


class Findings(list[str]):
    """What went wrong in one test, one sentence each; ``tried`` counts the cases looked at."""

    def __init__(self) -> None:
        super().__init__()
        self.tried = 0

    def case(self) -> None:
        self.tried += 1

    def wrong(self, what: str) -> None:
        self.append(what)


# --- What a response must never contain ---------------------------------------------------------------------------


def leaks(text: str, *secrets: str) -> list[str]:
    """A stack trace, one of ``secrets`` or anything shaped like a credential in ``text``."""
    found = [f"a stack trace ({marker!r})" for marker in _TRACE_MARKERS if marker in text]
    found += ["a secret" for secret in secrets if secret and secret in text]
    found += [f"a credential ({match[:12]}…)" for match in _CREDENTIAL_RE.findall(text)]
    return found


def hidden(page: str, name: str) -> str:
    """The value of the hidden input ``name`` in a page (unescaped)."""
    match = re.search(rf'<input type="hidden" name="{re.escape(name)}" value="([^"]*)">', page)
    assert match, f"no hidden input {name}"
    return html_lib.unescape(match.group(1))


# --- Audit chain and upstream state -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditState:
    count: int
    last_sequence: int

    @classmethod
    def now(cls) -> AuditState:
        last = AuditEntry.objects.order_by("-sequence").first()
        return cls(AuditEntry.objects.count(), last.sequence if last else 0)

    def added(self) -> list[AuditEntry]:
        return list(AuditEntry.objects.filter(sequence__gt=self.last_sequence).order_by("sequence"))


def chain_breaks() -> list[str]:
    return [f"entry {b.sequence}: {b.problem}" for b in verify_chain()]


def mutations(emulator: Any) -> dict[str, int]:
    """How many times each mutating route of the emulator was called since its counters were last zeroed."""
    by_route = emulator.requests()["by_route"]
    return {route: count for route, count in by_route.items() if route in MUTATING_ROUTES and count}


# --- Sessions against the real server -----------------------------------------------------------------------------


async def signed_in(base_url: str, username: str, **client_options: Any) -> httpx.AsyncClient:
    """An httpx session signed in through the login form, as a browser would (CSRF cookie and token included)."""
    session = httpx.AsyncClient(base_url=base_url, timeout=60, **client_options)
    form = await session.get("/accounts/login/")
    assert form.status_code == 200, form.status_code
    response = await session.post(
        "/accounts/login/",
        data={
            "username": username,
            "password": PASSWORD,
            "csrfmiddlewaretoken": hidden(form.text, "csrfmiddlewaretoken"),
        },
    )
    assert response.status_code == 302, f"{username} could not sign in ({response.status_code})"
    assert "sessionid" in session.cookies
    return session


def csrf_of(session: httpx.AsyncClient) -> str:
    token = session.cookies.get("csrftoken")
    assert token, "no CSRF cookie"
    return str(token)


def clone(session: httpx.AsyncClient, **client_options: Any) -> httpx.AsyncClient:
    """Another connection in the same signed-in session (its cookies), with a cookie jar of its own."""
    copy = httpx.AsyncClient(base_url=session.base_url, timeout=60, **client_options)
    for name in ("sessionid", "csrftoken"):
        copy.cookies.set(name, str(session.cookies.get(name)))
    return copy


@dataclass
class RawResponse:
    status_code: int
    headers: dict[str, str]
    content: bytes


def raw_request(
    base_url: str,
    method: str,
    raw_path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> RawResponse:
    """One HTTP/1.1 request with ``raw_path`` sent byte for byte: no client normalizes its ``..`` or encoding."""
    url = httpx.URL(base_url)
    headers = {"Host": f"{url.host}:{url.port}", "Connection": "close", **(headers or {})}
    lines = [f"{method} {raw_path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        received = b""
        # Read to the end of the answer; an accepted websocket upgrade stays open, so stop at its head.
        while (chunk := sock.recv(65536)) and not received.startswith(b"HTTP/1.1 101"):
            received += chunk
    head, _, content = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed.setdefault(name.strip().lower(), value.strip())
    if parsed.get("transfer-encoding") == "chunked":
        content = _unchunk(content)
    return RawResponse(int(status_line.split()[1]), parsed, content)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


__all__ = [
    "RawResponse",
    "raw_request",
    "FIGURES",
    "MUTATING_ROUTES",
    "AuditState",
    "Figures",
    "Findings",
    "chain_breaks",
    "clone",
    "csrf_of",
    "free_port",
    "hidden",
    "hold_figures",
    "leaks",
    "live_server_url",
    "mutations",
    "signed_in",
]
