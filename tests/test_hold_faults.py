"""Upstream faults against every surface: each fault the emulator can inject (and a refused connection) against every
page, every action, the gateway and the live feed, over real HTTP.

Every surface must answer without a server error, with a banner naming the failure and the upstream request-id
(where the upstream sent one), without a stack trace or a credential; every attempted action leaves an audit entry;
the live feed marks its numbers stale (why, since when, the request-id) and recovers once the fault is cleared.
Prints "faults × surfaces tried: N, failures: M".
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.test import Client
from hold_support import FIGURES, AuditState, Findings, chain_breaks, free_port, hidden, hold_figures, leaks  # noqa: F401
from live_support import communicator, receive_matching, session_cookie
from pages_support import environment, make_user, start_work

from dashboard import actions
from dashboard import upstream as dashboard_upstream
from dashboard.gateway import tokens
from dashboard.live.models import DisplayLink
from dashboard.models import BulkOperation
from workqueue.errors import WorkAPIError

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_SECONDS = 0.2
TEN_MB = 10 * 1024 * 1024
# name: (fault for /_emulator/faults, or None for a refused connection; the failure kind the dashboard must name)
FAULTS: dict[str, tuple[dict[str, Any] | None, str]] = {
    "timeout": ({"latency_ms": 1000}, "timeout"),
    "refused": (None, "connection"),
    "500": ({"status": 500}, "server_error"),
    "502": ({"status": 502}, "server_error"),
    "503": ({"status": 503}, "unavailable"),
    "529": ({"status": 529}, "overloaded"),
    "429": ({"status": 429, "retry_after": 7}, "rate_limited"),
    "malformed json": (
        {"status": 200, "body": '{"data": [', "content_type": "application/json"},
        "malformed",
    ),
    "wrong content type": (
        {"status": 200, "body": "<html>maintenance</html>", "content_type": "text/html"},
        "malformed",
    ),
    "10 MB body": ({"body_size": TEN_MB}, "malformed"),
    "missing fields": (
        {"status": 200, "body": '{"type": "work"}', "content_type": "application/json"},
        "malformed",
    ),
}
REQUEST_ID_RE = re.compile(r"request-id <code>(req_\w+)</code>")


def title_of(kind: str) -> str:
    return str(dashboard_upstream.failure_banner(WorkAPIError("", kind=kind))["title"])


class Faulty:
    """One environment with an active item, an admin signed in, a gateway token; ``apply`` turns the fault on."""

    def __init__(self, emulator: Any, client: Client, settings: Any, name: str) -> None:
        self.emulator = emulator
        self.client = client
        self.settings = settings
        self.name = name
        self.fault, self.kind = FAULTS[name]
        self.title = title_of(self.kind)
        self.env, self.key = environment(emulator, "faulty")
        self.item = start_work(emulator, self.env["id"], self.key)
        self.admin = make_user("admin")
        client.force_login(self.admin)
        self.token = tokens.mint(self.admin, "hold", 7)[1]
        link = DisplayLink(name="ops room")
        self.display_token = link.issue_token()
        link.save()
        self.findings = Findings()
        self.secrets = (emulator.api_key, self.key, self.token)

    @property
    def gives_request_id(self) -> bool:
        return self.name not in ("timeout", "refused")

    def apply(self) -> None:
        if self.name == "timeout":
            # Short only here: a 10 MB answer takes longer than this to arrive, and must fail as too large.
            self.settings.UPSTREAM_TIMEOUT_SECONDS = TIMEOUT_SECONDS
        cache.clear()
        if self.fault is None:
            self.settings.ANTHROPIC_BASE_URL = f"http://127.0.0.1:{free_port()}"
        else:
            self.emulator.set_fault(route="*", **self.fault)

    def clear(self) -> None:
        self.emulator.clear_faults()
        self.settings.ANTHROPIC_BASE_URL = self.emulator.base_url

    @property
    def item_path(self) -> str:
        return f"/environments/{self.env['id']}/work/{self.item.id}/"

    def page(self, surface: str, response: Any, *, banner: bool = True) -> str:
        """Check one answer of a surface under the fault; returns its text."""
        found = self.findings
        found.case()
        text = response.content.decode(errors="replace")
        where = f"{self.name} × {surface}"
        if response.status_code >= 500 and response.status_code not in (502, 503, 504):
            found.wrong(f"{where}: HTTP {response.status_code}")
        for leak in leaks(text, *self.secrets):
            found.wrong(f"{where}: the page shows {leak}")
        if banner:
            if f'data-failure-kind="{self.kind}"' not in text or self.title not in text:
                kinds = re.findall(r'data-failure-kind="(\w+)"', text)
                found.wrong(f"{where}: no {self.kind} banner (HTTP {response.status_code}, banners {kinds})")
            if self.gives_request_id and not REQUEST_ID_RE.search(text):
                found.wrong(f"{where}: the upstream request-id is not shown")
        return text

    def audited(self, surface: str, action: str, page: str, since: AuditState, *, via: str = "") -> None:
        """The attempt is in the audit log as failed, naming the failure and the request-id shown on the page."""
        entries = [e for e in since.added() if e.action == action and e.work_id == self.item.id]
        if via:
            entries = [e for e in entries if e.via == via]
        where = f"{self.name} × {surface}"
        if len(entries) != 1:
            self.findings.wrong(f"{where}: {len(entries)} audit entries for {action}, not 1")
            return
        entry = entries[0]
        if entry.outcome != "failed" or not entry.error:
            self.findings.wrong(f"{where}: audited as {entry.outcome!r} with error {entry.error!r}")
        if self.gives_request_id:
            if not entry.request_id.startswith("req_"):
                self.findings.wrong(f"{where}: the audit entry has no upstream request-id")
            elif page and entry.request_id not in page:
                self.findings.wrong(
                    f"{where}: the page does not show the audited request-id {entry.request_id}"
                )


def pages(s: Faulty) -> None:
    c, env_id = s.client, s.env["id"]
    s.page("overview", c.get("/"))
    s.page("environment", c.get(f"/environments/{env_id}/"))
    s.page("work item", c.get(s.item_path))
    s.page("stuck", c.get("/stuck/"))
    cache.clear()
    s.page("search", c.get("/search", {"q": s.item.id}))
    before = s.emulator.requests()["total"] if s.fault is not None else 0
    log = s.page("audit log", c.get("/audit/"), banner=False)
    if s.fault is not None and s.emulator.requests()["total"] != before:
        s.findings.wrong(f"{s.name} × audit log: the audit log called the upstream")
    if "data-failure-kind" in log:
        s.findings.wrong(f"{s.name} × audit log: the local page shows an upstream failure")
    s.page("configuration", c.get("/configure/"))
    # The display pages read the environments list through the live layer's shared directory; without it they
    # still answer, with what they know.
    s.page("display links", c.get("/displays/"), banner=False)
    s.page("wall display", Client().get(f"/display/{s.display_token}/"), banner=False)


def metadata_patch(s: Faulty) -> None:
    url = s.item_path + "metadata/"
    s.page("metadata form", s.client.get(url))
    since = AuditState.now()
    response = s.client.post(
        url, {"step": "send", "loaded": "{}", "patch": '{"owner": "ops"}', "reason": "fault drill"}
    )
    s.audited("metadata patch", "patch_metadata", s.page("metadata patch", response), since)


def stops(s: Faulty) -> None:
    for force, action in ((False, "stop"), (True, "force_stop")):
        since = AuditState.now()
        data = {"reason": "fault drill"}
        path = s.item_path + ("force-stop/" if force else "stop/")
        page = s.page(action.replace("_", " "), s.client.post(path, data))
        if "fault drill</textarea>" not in page:
            s.findings.wrong(f"{s.name} × {action}: the reason is not kept for another try")
        s.audited(action.replace("_", " "), action, page, since)


def bulk(s: Faulty) -> None:
    env_id = s.env["id"]
    # Every stuck item is the work index's selection: it answers without the upstream and says how old it is.
    stuck = s.page(
        "bulk: every stuck item",
        s.client.get(f"/environments/{env_id}/bulk/", {"selection": "stuck"}),
        banner=False,
    )
    if "data-freshness" not in stuck:
        s.findings.wrong(f"{s.name} × bulk: every stuck item: the page does not say how old its rows are")
    confirm = s.client.post(f"/environments/{env_id}/bulk/", {"work_ids": [s.item.id]})
    s.findings.case()
    if confirm.status_code != 200:
        s.findings.wrong(f"{s.name} × bulk: the count preview answered {confirm.status_code}")
        return
    for leak in leaks(confirm.content.decode(), *s.secrets):
        s.findings.wrong(f"{s.name} × bulk preview: the page shows {leak}")
    since = AuditState.now()
    phrase = re.search(r'data-confirm-match="([^"]*)"', confirm.content.decode())
    started = s.client.post(
        f"/environments/{env_id}/bulk/start/",
        {
            "plan": hidden(confirm.content.decode(), "plan"),
            "mode": "force_stop",
            "confirm": phrase.group(1) if phrase else "FORCE",
            "reason": "fault drill",
        },
    )
    if started.status_code != 302:
        s.findings.wrong(f"{s.name} × bulk: starting answered {started.status_code}")
        return
    operation = BulkOperation.objects.get()
    assert actions.wait_for_bulk(operation.pk, timeout=30)
    progress = s.client.get(started["Location"]).content.decode()
    row = re.search(rf'<tr data-bulk-item="{s.item.id}" data-result="(\w+)">(.*?)</tr>', progress, re.S)
    if row is None or row.group(1) != "failed" or s.title not in row.group(2):
        s.findings.wrong(f"{s.name} × bulk: the item's result does not name the failure")
    elif s.gives_request_id and not re.search(r"<code>req_\w+</code>", row.group(2)):
        s.findings.wrong(f"{s.name} × bulk: the item's result has no request-id")
    for leak in leaks(progress, *s.secrets):
        s.findings.wrong(f"{s.name} × bulk progress: the page shows {leak}")
    s.audited("bulk", "force_stop", progress if row else "", since, via="bulk")
    if not [e for e in since.added() if e.action == "bulk_force_stop"]:
        s.findings.wrong(f"{s.name} × bulk: the bulk force-stop itself is not audited")


def gateway(s: Faulty) -> None:
    gw = Client(headers={"Authorization": f"Bearer {s.token}", "X-Reason": "fault drill"})
    path = f"/gateway/v1/environments/{s.env['id']}/work/{s.item.id}"
    for surface, call in (
        ("gateway read", lambda: gw.get(path)),
        ("gateway stop", lambda: gw.post(path + "/stop", '{"force": true}', content_type="application/json")),
    ):
        since = AuditState.now()
        response = call()
        s.findings.case()
        where = f"{s.name} × {surface}"
        text = response.content.decode(errors="replace")
        for leak in leaks(text[:100_000], *s.secrets):
            s.findings.wrong(f"{where}: the answer contains {leak}")
        status = s.fault.get("status") if s.fault else None
        if s.name == "timeout":
            expected = 504
        elif s.name in ("refused", "10 MB body"):
            expected = 502
        else:
            expected = status or 200  # the upstream's own answer, passed through as it came
        if response.status_code != expected:
            s.findings.wrong(f"{where}: HTTP {response.status_code}, not {expected}")
        if s.name == "429" and response.headers.get("retry-after") != "7":
            s.findings.wrong(f"{where}: the upstream's retry-after is not passed on")
        request_id = response.headers.get("request-id", "")
        if not request_id:
            s.findings.wrong(f"{where}: no request-id header")
        elif expected >= 400 and (
            request_id not in text or "application/json" not in response["Content-Type"]
        ):
            s.findings.wrong(f"{where}: the error is not in the upstream's envelope")
        if surface == "gateway stop":
            entries = [e for e in since.added() if e.via == "gateway" and e.action == "force_stop"]
            if len(entries) != 1:
                s.findings.wrong(f"{where}: {len(entries)} audit entries, not 1")
            elif expected >= 400 and (entries[0].outcome != "failed" or entries[0].request_id != request_id):
                s.findings.wrong(f"{where}: audited as {entries[0].outcome} with {entries[0].request_id!r}")


@pytest.mark.parametrize("name", list(FAULTS))
def test_every_page_action_and_the_gateway_survive_the_fault(name, client, upstream, settings):
    s = Faulty(upstream, client, settings, name)
    before = AuditState.now()
    s.apply()
    try:
        pages(s)
        metadata_patch(s)
        stops(s)
        bulk(s)
        gateway(s)
    finally:
        s.clear()
    # Nothing is lost or reordered in the audit log by failing calls.
    breaks = chain_breaks()
    if breaks:
        s.findings.wrong(f"{name}: the audit chain broke: {breaks[:3]}")
    if not before.added():
        s.findings.wrong(f"{name}: nothing was audited")
    FIGURES.faults(s.findings.tried, len(s.findings))
    assert not s.findings, "\n".join(s.findings)


async def test_the_live_feed_goes_stale_under_each_fault_and_recovers(live_runtime, upstream, settings):
    """One viewer on an environment's page while each fault comes and goes: a stale frame naming the failure (and the
    request-id), then a fresh one once the fault is cleared."""
    settings.FEED_INTERVAL_SECONDS = 0.25
    env, key = await sync_to_async(environment)(upstream, "watched")
    item = await sync_to_async(start_work)(upstream, env["id"], key)
    cookie = await session_cookie(await sync_to_async(make_user)("viewer"))
    viewer = communicator(f"/ws/live/{env['id']}/?work={item.id}", cookie=cookie)
    assert (await viewer.connect())[0]
    await receive_matching(viewer, r'data-figure="depth">')
    findings = Findings()
    secrets = (upstream.api_key, key)
    for name, (fault, kind) in FAULTS.items():
        findings.case()
        title = title_of(kind)
        # The feed keeps one client, made from settings: a refused connection (its base URL pointing at a closed
        # port) and a short timeout each need a client of their own while the fault lasts.
        working = live_runtime._client
        if fault is None:
            settings.ANTHROPIC_BASE_URL = f"http://127.0.0.1:{free_port()}"
            live_runtime._client = None
        else:
            if name == "timeout":
                settings.FEED_TIMEOUT_SECONDS = TIMEOUT_SECONDS
                live_runtime._client = None
            await sync_to_async(upstream.set_fault)(route="*", **fault)
        try:
            # A 429 or 529 adds until when the environment is left alone: "…: slowed down until 10:42:07".
            stale = await receive_matching(viewer, rf'data-stale-reason="{re.escape(title)}[^"]*"', timeout=6)
        except AssertionError:
            findings.wrong(f"{name} × live feed: no stale frame naming {title!r}")
            stale = ""
        if (
            stale
            and name not in ("timeout", "refused")
            and not re.search(r'data-stale-request-id="req_\w+"', stale)
        ):
            findings.wrong(f"{name} × live feed: the stale frame has no request-id")
        for leak in leaks(stale, *secrets):
            findings.wrong(f"{name} × live feed: a frame contains {leak}")
        await sync_to_async(upstream.clear_faults)()
        settings.ANTHROPIC_BASE_URL = upstream.base_url
        settings.FEED_TIMEOUT_SECONDS = 2.0
        if live_runtime._client is not working:
            special, live_runtime._client = live_runtime._client, working
            if special is not None:
                await special.aclose()
        try:
            # A retry-after is honoured: the feed reads the environment again only once it has passed.
            waited = float((fault or {}).get("retry_after", 0))
            await receive_matching(
                viewer, r'<section [^>]*id="queue-[^"]+"(?:(?!data-stale-since)[^>])*>', timeout=6 + waited
            )
        except AssertionError:
            findings.wrong(f"{name} × live feed: did not recover once the fault was cleared")
    await viewer.disconnect()
    FIGURES.faults(findings.tried, len(findings))
    assert not findings, "\n".join(findings)
