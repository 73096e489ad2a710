"""A tiny recording stand-in for the Work API, for the client's own tests (wire parity, error mapping, retries).

A real HTTP server on 127.0.0.1 in a thread: it records every request exactly as it arrived and answers either
canned JSON that satisfies both the official SDK (strict validation) and our client, or the responses a test
scripted. It is not the emulator (which has the upstream's semantics): it only lets a test see the bytes on the wire
and produce faults (statuses, retry headers, delays, huge or malformed bodies) the emulator does not need to offer.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TS = "2026-07-01T08:15:06.120394Z"

WORK_ITEM: dict[str, Any] = {
    "id": "work_01ABC",
    "type": "work",
    "environment_id": "env_01ABC",
    "state": "queued",
    "data": {"type": "session", "id": "session_01ABC"},
    "metadata": {"team": "infra"},
    "created_at": TS,
    "acknowledged_at": None,
    "started_at": None,
    "latest_heartbeat_at": None,
    "stop_requested_at": None,
    "stopped_at": None,
    "secret": None,
}
ENVIRONMENT: dict[str, Any] = {
    "id": "env_01ABC",
    "type": "environment",
    "name": "build-runners",
    "description": None,
    "config": {"type": "self_hosted"},
    "metadata": {},
    "created_at": TS,
    "updated_at": TS,
    "archived_at": None,
    "scope": "organization",
}
STATS: dict[str, Any] = {
    "type": "work_queue_stats",
    "depth": 3,
    "pending": 1,
    "oldest_queued_at": TS,
    "workers_polling": 2,
}
HEARTBEAT: dict[str, Any] = {
    "type": "work_heartbeat",
    "last_heartbeat": TS,
    "lease_extended": True,
    "state": "active",
    "ttl_seconds": 60,
}


def canned_answer(method: str, path: str) -> Any:
    """JSON for a successful answer to any Work API / Environments API path."""
    parts = (
        path.split("?")[0].strip("/").split("/")
    )  # v1 environments [env] [work [work_id|poll|stats] [action]]
    if parts[:2] != ["v1", "environments"]:
        return {"type": "error", "error": {"type": "not_found_error", "message": "no such route"}}
    if len(parts) == 2:
        return {"data": [ENVIRONMENT], "next_page": None}
    if len(parts) == 3:
        return ENVIRONMENT
    if len(parts) == 4:
        return {"data": [WORK_ITEM], "next_page": None}
    if parts[4] == "stats":
        return STATS
    if parts[4] == "poll":
        return {**WORK_ITEM, "secret": "eyJzZXNzaW9uc190b2tlbiI6InNrLWFudC1yZXEteCJ9"}
    if len(parts) == 6 and parts[5] == "heartbeat":
        return HEARTBEAT
    return WORK_ITEM


@dataclass
class Recorded:
    method: str
    path: str  # raw, as sent (percent-encoding kept), without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lowercased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    """A scripted answer. ``body`` may be bytes, or any JSON value (encoded); ``delay`` is slept first."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str | None = "application/json"

    def encoded(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


def error_reply(
    status: int, error_type: str, message: str = "", error_code: str | None = None, **extra: Any
) -> Reply:
    """An answer in the upstream's error envelope, with a request id in both places the client looks."""
    error: dict[str, Any] = {"type": error_type, "message": message or f"{error_type} happened"}
    if error_code is not None:
        error["details"] = {"error_code": error_code, **extra}
    return Reply(
        status=status,
        body={"type": "error", "error": error, "request_id": "req_body_01"},
        headers={"request-id": "req_header_01"},
    )


class RecordingUpstream:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Reply] = deque()
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One write per answer and no Nagle: otherwise delayed ACKs add ~40 ms to every request.
            wbufsize = -1
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # the test output stays readable
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                with upstream.lock:
                    upstream.requests.append(
                        Recorded(
                            method=self.command,
                            path=split.path,
                            query=parse_qs(split.query, keep_blank_values=True),
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                        )
                    )
                    reply = (
                        upstream.script.popleft()
                        if upstream.script
                        else Reply(body=canned_answer(self.command, self.path))
                    )
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.encoded()
                try:
                    self.send_response(reply.status)
                    if reply.content_type:
                        self.send_header("content-type", reply.content_type)
                    self.send_header("content-length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (timeout tests)

            do_GET = do_POST = do_DELETE = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        port = self.server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def reply(self, *replies: Reply) -> None:
        with self.lock:
            self.script.extend(replies)

    def __enter__(self) -> RecordingUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
