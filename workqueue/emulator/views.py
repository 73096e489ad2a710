"""HTTP views of the emulator: the upstream's ``/v1/`` routes and the private ``/_emulator/`` admin surface.

Views are thin: they read the request, check the credential against the route (``engine.authorize``), apply an
injected fault if one is set, and render what the engine returns. All database work runs on one dedicated engine
thread, so operations never interleave and the event loop stays free: a long poll waits here with ``asyncio`` (until
something can be delivered, or new work arrives) and does not hold up other requests. The routes workers call all
the time (poll, ack, heartbeat, stop) classify the credential and do their work in one trip to that thread. Every
response is JSON and carries a ``request-id`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from workqueue.emulator import engine
from workqueue.emulator.engine import EmulatorError
from workqueue.emulator.faults import Fault, counters, fault_from_json, faults

log = logging.getLogger(__name__)

JSON: Final = "application/json"
BETA: Final = "managed-agents-2026-04-01"

T = TypeVar("T")

# --- the engine thread -----------------------------------------------------------------------------------------

_engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emulator-engine")


def _guarded(func: Callable[..., T]) -> Callable[..., T]:
    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except DatabaseError:
            # The engine thread keeps its connection between calls; drop a broken one so the next call reconnects.
            connections[engine.DB].close()
            raise

    return call


async def run(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run an engine function on the engine thread (straight through the executor: the engine needs none of
    ``sync_to_async``'s context copying, and skipping it saves a good part of each call's cost)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_engine_thread, functools.partial(_guarded(func), *args, **kwargs))


class _Arrivals:
    """Wakes long polls when work may have become deliverable sooner than they computed (new work, a forced lease
    expiry, a clock move)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def current(self) -> asyncio.Event:
        """Take this before looking at the queue, then wait on it: a notice in between is not missed."""
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def notify(self) -> None:
        event, self._event = self.current(), asyncio.Event()
        event.set()

    @staticmethod
    async def wait(event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


arrivals = _Arrivals()

# --- responses -------------------------------------------------------------------------------------------------


def request_id_of(request: HttpRequest) -> str:
    rid = getattr(request, "request_id", None)
    if not rid:
        rid = engine.new_request_id()
        request.request_id = rid  # type: ignore[attr-defined]
    return rid


def json_response(request: HttpRequest, payload: Any, status: int = 200) -> HttpResponse:
    response = HttpResponse(json.dumps(payload), status=status, content_type=JSON)
    response["request-id"] = request_id_of(request)
    # As the API does: the credential's workspace on every answer, errors included (the SDK's err.workspace_id).
    workspace = getattr(request, "workspace_id", None)
    if workspace:
        response["anthropic-workspace-id"] = workspace
    return response


def error_response(request: HttpRequest, error: EmulatorError) -> HttpResponse:
    inner: dict[str, Any] = {"type": error.error_type, "message": error.message}
    if error.details is not None:
        inner["details"] = error.details
    response = json_response(
        request, {"type": "error", "error": inner, "request_id": request_id_of(request)}, error.status
    )
    for name, value in error.headers.items():
        response[name] = value
    return response


def _internal_error(request: HttpRequest) -> HttpResponse:
    log.exception("emulator: unexpected error serving %s %s", request.method, request.path)
    return error_response(request, EmulatorError(500, "internal error in the emulator"))


def _method_not_allowed(request: HttpRequest) -> HttpResponse:
    return error_response(request, EmulatorError(405, f"{request.method} is not allowed on {request.path}"))


# --- request parsing -------------------------------------------------------------------------------------------


def _json_object(request: HttpRequest) -> dict[str, Any]:
    """The JSON object body; an empty body counts as ``{}`` (the SDK sends JSON content type with no body). A body
    of only whitespace is not JSON: 400, as a JSON parser would answer."""
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise EmulatorError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise EmulatorError(400, "request body must be a JSON object")
    return body


def _int_param(request: HttpRequest, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise EmulatorError(400, f"{name} must be a whole number") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise EmulatorError(400, f"{name} must be {bounds}")
    return value


def _bool_param(request: HttpRequest, name: str) -> bool:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return False
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise EmulatorError(400, f"{name} must be true or false")


def _credential(request: HttpRequest) -> str | None:
    return engine.credential_from_headers(
        request.headers.get("x-api-key"), request.headers.get("authorization")
    )


def _requested_workspace(request: HttpRequest) -> str | None:
    return request.headers.get("anthropic-workspace-id")


def _note_workspace(request: HttpRequest, credential: engine.Credential) -> None:
    request.workspace_id = credential.workspace_id  # type: ignore[attr-defined]


def _base_url(request: HttpRequest) -> str:
    # The raw Host header: the secret's api_base_url points the worker back at whatever address it used.
    return f"{request.scheme}://{request.headers.get('host') or 'localhost'}"


# --- the /v1 pipeline ------------------------------------------------------------------------------------------


def _beta_missing(request: HttpRequest) -> bool:
    if not getattr(settings, "EMULATOR_REQUIRE_BETA", False):
        return False
    return BETA not in [b.strip() for b in request.headers.get("anthropic-beta", "").split(",")]


async def _admit(request: HttpRequest, fault: Fault | None) -> HttpResponse | None:
    """Apply an injected fault (its latency; its answer, returned, if it replaces the route's) and the beta check."""
    if fault is not None:
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.replaces_response:
            response = HttpResponse(
                fault.response_body(request_id_of(request)),
                status=fault.status or 200,
                content_type=fault.content_type or JSON,
            )
            response["request-id"] = request_id_of(request)
            for name, value in fault.response_headers().items():
                response[name] = value
            counters.count_status(response.status_code)
            return response
    if _beta_missing(request):
        raise EmulatorError(400, f"the anthropic-beta header must include {BETA}")
    return None


async def _serve(
    request: HttpRequest,
    route: str,
    work: Callable[[], Awaitable[tuple[Any, int]]],
    *,
    environment_id: str | None = None,
    work_id: str | None = None,
) -> HttpResponse:
    """Count, apply faults, authorize, then do ``work`` (which returns (payload, status))."""
    try:
        credential = await run(engine.classify_credential, _credential(request))
        _note_workspace(request, credential)
        counters.count(route, credential.kind, environment_id)
        faulted = await _admit(request, faults.take(route))
        if faulted is not None:
            return faulted
        engine.authorize(route, credential, environment_id, work_id)
        await run(engine.check_workspace, credential, _requested_workspace(request), environment_id)
        payload, status = await work()
        response = json_response(request, payload, status)
    except EmulatorError as error:
        response = error_response(request, error)
    except Exception:
        response = _internal_error(request)
    counters.count_status(response.status_code)
    return response


def _authorized_step(
    raw_credential: str | None,
    requested_workspace: str | None,
    route: str,
    environment_id: str,
    work_id: str | None,
    step: Callable[[], T],
) -> tuple[engine.Credential, T | None, Exception | None]:
    """On the engine thread: classify the credential, authorize, do ``step``. Returns the credential (for the
    counters and the workspace header) with the step's result or what it raised."""
    credential = engine.classify_credential(raw_credential)
    try:
        engine.authorize(route, credential, environment_id, work_id)
        engine.check_workspace(credential, requested_workspace, environment_id)
        return credential, step(), None
    except Exception as failure:
        if isinstance(failure, DatabaseError):
            connections[engine.DB].close()
        return credential, None, failure


async def _serve_step(
    request: HttpRequest,
    route: str,
    step: Callable[[], T],
    finish: Callable[[T], Awaitable[tuple[Any, int]]],
    *,
    environment_id: str,
    work_id: str | None = None,
) -> HttpResponse:
    """``_serve`` for the routes a worker calls all the time: ``step`` (synchronous: parse the request, call the
    engine, render) runs on the engine thread, then ``finish`` turns its result into (payload, status).

    Same order as ``_serve`` (count, fault, beta check, authorize, step), but when no fault applies and the beta
    check passes, classifying the credential, authorizing and the step share one trip to the engine thread.
    """
    try:
        fault = faults.take(route)
        if fault is None and not _beta_missing(request):
            credential, result, failure = await run(
                _authorized_step,
                _credential(request),
                _requested_workspace(request),
                route,
                environment_id,
                work_id,
                step,
            )
            _note_workspace(request, credential)
            counters.count(route, credential.kind, environment_id)
            if failure is not None:
                raise failure
        else:
            credential = await run(engine.classify_credential, _credential(request))
            _note_workspace(request, credential)
            counters.count(route, credential.kind, environment_id)
            faulted = await _admit(request, fault)
            if faulted is not None:
                return faulted
            engine.authorize(route, credential, environment_id, work_id)
            await run(engine.check_workspace, credential, _requested_workspace(request), environment_id)
            result = await run(step)
        payload, status = await finish(result)  # type: ignore[arg-type]
        response = json_response(request, payload, status)
    except EmulatorError as error:
        response = error_response(request, error)
    except Exception:
        response = _internal_error(request)
    counters.count_status(response.status_code)
    return response


async def _as_is(payload: Any) -> tuple[Any, int]:
    return payload, 200


def _call(
    func: Callable[..., Any], *args: Any, render: Callable[[Any], Any] = lambda x: x, **kwargs: Any
) -> Any:
    async def work() -> tuple[Any, int]:
        return render(await run(func, *args, **kwargs)), 200

    return work


# --- /v1 work routes -------------------------------------------------------------------------------------------


@csrf_exempt
async def work_poll(request: HttpRequest, environment_id: str) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed(request)
    block_ms: int | None = None
    args: dict[str, Any] = {}

    def first_poll() -> engine.Delivery | None:
        nonlocal block_ms
        block_ms = _int_param(request, "block_ms", minimum=1, maximum=999)
        args["reclaim_older_than_ms"] = _int_param(request, "reclaim_older_than_ms", minimum=0)
        worker_id = request.headers.get("anthropic-worker-id") or None
        if worker_id is not None and len(worker_id) > engine.MAX_WORKER_ID_LENGTH:
            # Longer ids would not fit the tables (a database error on PostgreSQL).
            raise EmulatorError(
                400, f"Anthropic-Worker-ID must be at most {engine.MAX_WORKER_ID_LENGTH} characters"
            )
        args["worker_id"] = worker_id
        args["api_base_url"] = _base_url(request)
        return engine.poll(environment_id, **args)

    async def wait(delivery: engine.Delivery | None) -> tuple[Any, int]:
        if delivery is None and block_ms:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + block_ms / 1000
            reclaim_ms = args["reclaim_older_than_ms"]
            # Sleep until something can be delivered (an unacked delivery's reclaim, a lease's expiry) or a
            # notice from `arrivals`, rather than re-reading the queue on a timer.
            while delivery is None and (remaining := deadline - loop.time()) > 0:
                notice = arrivals.current()
                wait_for = await run(
                    engine.next_deliverable_in, environment_id, reclaim_older_than_ms=reclaim_ms
                )
                if wait_for == 0:
                    delivery = await run(engine.poll, environment_id, record_poll=False, **args)
                else:
                    await arrivals.wait(notice, remaining if wait_for is None else min(remaining, wait_for))
        if delivery is None:
            return None, 200
        return engine.work_json(delivery.item, secret=delivery.secret), 200

    return await _serve_step(request, "poll", first_poll, wait, environment_id=environment_id)


@csrf_exempt
async def work_stats(request: HttpRequest, environment_id: str) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed(request)
    return await _serve(request, "stats", _call(engine.stats, environment_id), environment_id=environment_id)


@csrf_exempt
async def work_collection(request: HttpRequest, environment_id: str) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed(request)

    async def work() -> tuple[Any, int]:
        limit = engine.parse_limit(request.GET.get("limit"))
        items, next_page = await run(
            engine.list_work, environment_id, limit=limit, page=request.GET.get("page")
        )
        return {"data": [engine.work_json(item) for item in items], "next_page": next_page}, 200

    return await _serve(request, "list", work, environment_id=environment_id)


@csrf_exempt
async def work_detail(request: HttpRequest, environment_id: str, work_id: str) -> HttpResponse:
    ids = {"environment_id": environment_id, "work_id": work_id}
    if request.method == "GET":
        return await _serve(
            request,
            "retrieve",
            _call(engine.retrieve, environment_id, work_id, render=engine.work_json),
            **ids,
        )
    if request.method == "POST":

        async def work() -> tuple[Any, int]:
            body = _json_object(request)
            item = await run(engine.update_metadata, environment_id, work_id, body)
            return engine.work_json(item), 200

        return await _serve(request, "update", work, **ids)
    return _method_not_allowed(request)


@csrf_exempt
async def work_ack(request: HttpRequest, environment_id: str, work_id: str) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed(request)

    def ack() -> dict[str, Any]:
        # No body is read: the SDK sends JSON content type with an empty body.
        return engine.work_json(engine.ack(environment_id, work_id))

    return await _serve_step(request, "ack", ack, _as_is, environment_id=environment_id, work_id=work_id)


@csrf_exempt
async def work_heartbeat(request: HttpRequest, environment_id: str, work_id: str) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed(request)

    def heartbeat() -> dict[str, Any]:
        ttl = engine.parse_ttl(request.GET.get("desired_ttl_seconds"))
        expected = request.GET.get("expected_last_heartbeat")
        return engine.heartbeat(
            environment_id, work_id, expected_last_heartbeat=expected, desired_ttl_seconds=ttl
        )

    return await _serve_step(
        request, "heartbeat", heartbeat, _as_is, environment_id=environment_id, work_id=work_id
    )


@csrf_exempt
async def work_stop(request: HttpRequest, environment_id: str, work_id: str) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed(request)

    def stop() -> dict[str, Any]:
        force = _json_object(request).get("force", False)
        if force is None:
            force = False
        if not isinstance(force, bool):
            raise EmulatorError(400, "force must be true or false")
        return engine.work_json(engine.stop(environment_id, work_id, force=force))

    return await _serve_step(request, "stop", stop, _as_is, environment_id=environment_id, work_id=work_id)


# --- /v1 environment routes ------------------------------------------------------------------------------------


@csrf_exempt
async def environments_collection(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":

        async def listing() -> tuple[Any, int]:
            include_archived = _bool_param(request, "include_archived")
            limit = engine.parse_limit(request.GET.get("limit"))
            envs, next_page = await run(
                engine.list_environments,
                include_archived=include_archived,
                limit=limit,
                page=request.GET.get("page"),
                workspace_id=getattr(request, "workspace_id", None),
            )
            return {"data": [engine.environment_json(env) for env in envs], "next_page": next_page}, 200

        return await _serve(request, "environments.list", listing)
    if request.method == "POST":

        async def create() -> tuple[Any, int]:
            env = await run(
                engine.create_environment,
                _json_object(request),
                workspace_id=getattr(request, "workspace_id", None) or "",
            )
            return engine.environment_json(env), 200

        return await _serve(request, "environments.create", create)
    return _method_not_allowed(request)


@csrf_exempt
async def environment_detail(request: HttpRequest, environment_id: str) -> HttpResponse:
    render = engine.environment_json
    if request.method == "GET":
        work = _call(engine.retrieve_environment, environment_id, render=render)
        return await _serve(request, "environments.retrieve", work, environment_id=environment_id)
    if request.method == "POST":

        async def update() -> tuple[Any, int]:
            env = await run(engine.update_environment, environment_id, _json_object(request))
            return render(env), 200

        return await _serve(request, "environments.update", update, environment_id=environment_id)
    if request.method == "DELETE":
        work = _call(engine.delete_environment, environment_id)
        return await _serve(request, "environments.delete", work, environment_id=environment_id)
    return _method_not_allowed(request)


@csrf_exempt
async def environment_archive(request: HttpRequest, environment_id: str) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed(request)
    work = _call(engine.archive_environment, environment_id, render=engine.environment_json)
    return await _serve(request, "environments.archive", work, environment_id=environment_id)


@csrf_exempt
async def route_not_found(request: HttpRequest) -> HttpResponse:
    return error_response(request, EmulatorError(404, f"no route for {request.method} {request.path[:200]}"))


# --- the /_emulator admin surface ------------------------------------------------------------------------------


async def _admin(
    request: HttpRequest, methods: dict[str, Callable[[], Awaitable[tuple[Any, int]]]]
) -> HttpResponse:
    """Authenticate with the emulator's API key, dispatch on method, render errors in the envelope."""
    try:
        credential = await run(engine.classify_credential, _credential(request))
        if credential.kind in ("none", "unknown"):
            raise EmulatorError(401, "the admin surface takes the emulator's API key")
        if credential.kind != "api_key":
            raise EmulatorError(403, "the admin surface takes the emulator's API key only")
        handler = methods.get(request.method or "")
        if handler is None:
            return _method_not_allowed(request)
        payload, status = await handler()
        return json_response(request, payload, status)
    except EmulatorError as error:
        return error_response(request, error)
    except Exception:
        return _internal_error(request)


def _admin_entry(env: Any) -> dict[str, Any]:
    return {"environment": engine.environment_json(env), "environment_key": env.environment_key}


async def admin_health(request: HttpRequest) -> HttpResponse:
    return json_response(request, {"ok": True})


@csrf_exempt
async def admin_reset(request: HttpRequest) -> HttpResponse:
    async def reset() -> tuple[Any, int]:
        await run(engine.reset)
        faults.clear()
        counters.clear()
        return {"ok": True}, 200

    return await _admin(request, {"POST": reset})


@csrf_exempt
async def admin_environments(request: HttpRequest) -> HttpResponse:
    async def listing() -> tuple[Any, int]:
        envs = await run(engine.all_environments)
        return {"data": [_admin_entry(env) for env in envs]}, 200

    async def create() -> tuple[Any, int]:
        body = _json_object(request)
        workspace = body.get("workspace_id") or ""
        if not isinstance(workspace, str) or len(workspace) > 120:
            raise EmulatorError(400, "workspace_id must be a string of at most 120 characters")
        env = await run(engine.create_environment, body, default_config="self_hosted", workspace_id=workspace)
        return _admin_entry(env), 201

    return await _admin(request, {"GET": listing, "POST": create})


@csrf_exempt
async def admin_enqueue(request: HttpRequest, environment_id: str) -> HttpResponse:
    async def enqueue() -> tuple[Any, int]:
        body = _json_object(request)
        item = await run(
            engine.enqueue,
            environment_id,
            work_type=body.get("type", "session"),
            metadata=body.get("metadata"),
            data_id=body.get("data_id"),
        )
        arrivals.notify()
        return engine.work_json(item), 201

    return await _admin(request, {"POST": enqueue})


@csrf_exempt
async def admin_bulk_create(request: HttpRequest, environment_id: str) -> HttpResponse:
    """``POST {"groups": [{"count": 2500, "state": "stopped", ...}, ...]}`` (or one group's fields at the top
    level): creates every item in one transaction; answers the count, and the ids when there are at most 1,000."""

    async def create() -> tuple[Any, int]:
        body = _json_object(request)
        groups = body.get("groups", [body])
        items = await run(engine.bulk_create, environment_id, groups)
        arrivals.notify()
        answer: dict[str, Any] = {"count": len(items)}
        if len(items) <= 1000:
            answer["ids"] = [item.id for item in items]
        if items:
            answer["oldest_created_at"] = engine.format_ts(min(item.created_at for item in items))
            answer["newest_created_at"] = engine.format_ts(max(item.created_at for item in items))
        return answer, 201

    return await _admin(request, {"POST": create})


@csrf_exempt
async def admin_server_stop(request: HttpRequest, environment_id: str, work_id: str) -> HttpResponse:
    async def server_stop() -> tuple[Any, int]:
        return engine.work_json(await run(engine.server_stop, environment_id, work_id)), 200

    return await _admin(request, {"POST": server_stop})


@csrf_exempt
async def admin_expire_lease(request: HttpRequest, environment_id: str, work_id: str) -> HttpResponse:
    async def expire() -> tuple[Any, int]:
        item = await run(engine.expire_lease, environment_id, work_id)
        arrivals.notify()
        return engine.work_json(item), 200

    return await _admin(request, {"POST": expire})


@csrf_exempt
async def admin_faults(request: HttpRequest) -> HttpResponse:
    async def listing() -> tuple[Any, int]:
        return {"data": [fault.as_json() for fault in faults.faults]}, 200

    async def add() -> tuple[Any, int]:
        fault = fault_from_json(_json_object(request))
        faults.add(fault)
        return fault.as_json(), 201

    async def clear() -> tuple[Any, int]:
        faults.clear()
        return {"ok": True}, 200

    return await _admin(request, {"GET": listing, "POST": add, "DELETE": clear})


@csrf_exempt
async def admin_requests(request: HttpRequest) -> HttpResponse:
    async def listing() -> tuple[Any, int]:
        return counters.as_json(), 200

    async def clear() -> tuple[Any, int]:
        counters.clear()
        return {"ok": True}, 200

    return await _admin(request, {"GET": listing, "DELETE": clear})


@csrf_exempt
async def admin_clock(request: HttpRequest) -> HttpResponse:
    async def show() -> tuple[Any, int]:
        now, offset = await run(lambda: (engine.current_time(), engine.clock_offset()))
        return {"now": engine.format_ts(now), "offset_seconds": offset}, 200

    async def advance() -> tuple[Any, int]:
        await run(engine.advance_clock, _json_object(request).get("advance_seconds"))
        arrivals.notify()
        return await show()

    return await _admin(request, {"GET": show, "POST": advance})


async def admin_openapi(request: HttpRequest) -> HttpResponse:
    from workqueue.emulator.openapi import openapi_document

    return json_response(request, openapi_document(_base_url(request)))
