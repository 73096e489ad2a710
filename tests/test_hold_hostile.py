"""Hostile input against the running system: traversal and control characters in ids (URLs sent byte for byte to the
real ASGI server, forms, search, gateway and websocket paths); oversized and malformed metadata patches; script
payloads in metadata and environment names coming back from the upstream; missing and forged CSRF tokens; foreign
websocket origins; forged, re-keyed, deleted and revoked display links; forged POSTs of viewers and operators;
absurd query parameters.

Each must get a clear 4xx and change nothing: no call to a mutating upstream route (``/_emulator/requests``), no
audit entry but the denial of a refused action, the chain intact, no stack trace or credential in the answer.
Script payloads must come out inert: escaped in pages and in websocket frames. Prints "inputs tried: N, accepted
wrongly: M".
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core import signing
from django.test import Client
from django.utils import timezone
from hold_support import (  # noqa: F401
    FIGURES,
    AuditState,
    Findings,
    chain_breaks,
    hidden,
    hold_figures,
    leaks,
    live_server_url,
    mutations,
    raw_request,
)
from live_support import communicator, receive_matching, session_cookie, wait_until
from pages_support import PASSWORD, environment, fill_index, make_user, start_work, worker_client

from dashboard.gateway import tokens
from dashboard.gateway.models import PersonalAccessToken
from dashboard.live.consumers import MAX_ENVIRONMENTS
from dashboard.live.models import DisplayLink
from dashboard.models import AuditEntry, EnvironmentKey

REFUSED = (400, 403, 404, 405, 413)
ENV_NAME = '<script>alert("env")</script>" onmouseover="alert(1)'
META_KEY = '"><img src=x onerror=alert(2)>'
META_VALUE = "<script>alert('value')</script></textarea><svg onload=alert(3)>"
# What must never appear raw in HTML: a tag or an attribute an attacker opened.
ACTIVE_MARKUP = ("<script>alert", "<img src=x", "<svg onload", '" onmouseover="alert', "</textarea><svg")
LEAKED = "sk-ant-api03-" + "Q" * 32
# An upstream error whose message carries markup and a credential (a proxy or a buggy upstream might send one).
HOSTILE_ERROR = {
    "status": 403,
    "content_type": "application/json",
    "body": json.dumps(
        {
            "type": "error",
            "error": {"type": "permission_error", "message": f"<script>alert('upstream')</script> {LEAKED}"},
            "request_id": "req_hostile",
        }
    ),
}


class Probe:
    """Sends one hostile input and checks the answer, the upstream's mutating routes and the audit log."""

    def __init__(self, emulator: Any, *secrets: str) -> None:
        self.emulator = emulator
        self.secrets = secrets
        self.found = Findings()

    def __call__(
        self,
        label: str,
        send: Callable[[], Any],
        *,
        expect: tuple[int, ...] = REFUSED,
        denied: str | None = None,
        outcome: str = "denied",
        upstream_reads: bool = False,
    ) -> Any:
        """``denied``: the action of the one entry (``outcome``, "denied" unless the gateway says "failed") the
        refusal must leave; otherwise no entry at all. ``upstream_reads``: the refusal may read the upstream."""
        before = AuditState.now()
        self.emulator.reset_requests()
        response = send()
        self.found.case()
        text = response.content.decode(errors="replace")
        if response.status_code not in expect:
            self.found.wrong(f"{label}: HTTP {response.status_code}, not one of {expect}")
        for leak in leaks(text, *self.secrets):
            self.found.wrong(f"{label}: the answer contains {leak}")
        for marker in ACTIVE_MARKUP:
            if marker in text:
                self.found.wrong(f"{label}: {marker!r} comes back raw")
        seen = self.emulator.requests()
        if mutations(self.emulator):
            self.found.wrong(f"{label}: the upstream was changed: {seen['by_route']}")
        elif seen["total"] and not upstream_reads:
            self.found.wrong(f"{label}: the upstream was called: {seen['by_route']}")
        added = before.added()
        if denied is None and added:
            self.found.wrong(f"{label}: audited {[(e.action, e.outcome) for e in added]}")
        if denied is not None and [(e.action, e.outcome) for e in added] != [(denied, outcome)]:
            self.found.wrong(
                f"{label}: audited {[(e.action, e.outcome) for e in added]}, not ({denied}, {outcome})"
            )
        return response

    def done(self) -> None:
        breaks = chain_breaks()
        if breaks:
            self.found.wrong(f"the audit chain broke: {breaks[:3]}")
        FIGURES.inputs(self.found.tried, len(self.found))
        assert not self.found, "\n".join(self.found)


def inert(found: Findings, label: str, text: str, *, shows: tuple[str, ...] = ()) -> None:
    """No active markup from a payload in ``text``; each of ``shows`` (raw payloads) present, escaped."""
    found.case()
    for marker in ACTIVE_MARKUP:
        if marker in text:
            found.wrong(f"{label}: {marker!r} is rendered raw")
    for payload in shows:
        escaped = payload.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        escaped_quotes = escaped.replace('"', "&quot;").replace("'", "&#x27;")
        if escaped not in text and escaped_quotes not in text:
            found.wrong(f"{label}: {payload[:20]!r}… is not shown (escaped)")


def csrf(client: Client) -> str:
    """The CSRF token of a client's session (the cookie a page set)."""
    if "csrftoken" not in client.cookies:
        client.get("/")
    return str(client.cookies["csrftoken"].value)


# --- Ids ----------------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_traversal_and_control_characters_in_ids_are_refused(live_server_url, upstream):
    env, key = environment(upstream, "target")
    other, _ = environment(upstream, "other")
    item = start_work(upstream, env["id"], key)
    make_user("admin", password=PASSWORD)
    browser = Client()
    assert browser.login(username="admin", password=PASSWORD)
    token = csrf(browser)
    cookie = f"sessionid={browser.cookies['sessionid'].value}; csrftoken={token}"
    gateway_token = tokens.mint(make_user("admin", username="scripted"), "hold", 7)[1]
    probe = Probe(upstream, upstream.api_key, key, gateway_token)
    e, w = env["id"], item.id

    def raw(method: str, path: str, form: dict[str, Any] | None = None, **headers: str) -> Callable[[], Any]:
        body = b""
        sent = {"Cookie": cookie, **headers}
        if form is not None:
            body = "&".join(
                f"{quote(k)}={quote(v)}"
                for k, vs in form.items()
                for v in (vs if isinstance(vs, list) else [vs])
            ).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
            sent["X-CSRFToken"] = token
        return lambda: raw_request(live_server_url, method, path, headers=sent, body=body)

    reasons = {"reason": "hostile", "force": "1"}
    page_paths = [
        f"/environments/{e}%00/",
        "/environments/..%2F..%2Fetc%2Fpasswd/",
        f"/environments/{e}/../../admin/",
        f"/environments/{e}/work/{w}%0d%0aSet-Cookie:%20evil=1/",
        f"/environments/{e}/work/..%2F..%2F_emulator%2Freset/",
        f"/environments/{e}/work/{w}%20/",
        f"/environments/{e}/work/work_%E2%80%AEabc/",
        f"/environments/{e}/work/{w}%2F..%2F..%2F{other['id']}/",
        f"/environments/env_{'a' * 101}/",
    ]
    for path in page_paths:
        response = probe(f"GET {path}", raw("GET", path))
        if "evil" in response.headers.get("set-cookie", ""):
            probe.found.wrong(f"GET {path}: a header was injected")
    for path, form in [
        (f"/environments/{e}/work/work_..%2F..%2Fx/stop/", reasons),
        (f"/environments/{e}/work/{w}%00/stop/", reasons),
        (f"/environments/env_%0d%0a/work/{w}/stop/", reasons),
        (f"/environments/{e}/work/%2e%2e/stop/", reasons),
        (f"/environments/{e}%00/work/{w}/metadata/", {"step": "send", "loaded": "{}", "patch": '{"a":"b"}'}),
        (f"/environments/{e}%2F..%2F{other['id']}/bulk/", {"work_ids": [w]}),
        (
            f"/environments/{e}/bulk/",
            {
                "work_ids": [
                    "../work_x",
                    "work_a\x00",
                    f"{w}/../{w}",
                    "work_" + "a" * 101,
                    "work_a\r\nb",
                    " " + w,
                ]
            },
        ),
    ]:
        probe(f"POST {path}", raw("POST", path, form))
    for q in (
        "work_..%2F..%2Fx",
        "work_a%00",
        f"env_%0d%0a{e}",
        "%2e%2e%2f%2e%2e%2f",
        f"{w}%00",
        "work_%3Cscript%3E",
    ):
        probe(f"search {q}", raw("GET", f"/search?q={q}"))
    gateway = {"Authorization": f"Bearer {gateway_token}", "X-Reason": "hostile"}
    json_body = {"Content-Type": "application/json"}
    for method, path in [
        ("GET", "/gateway/v1/environments/..%2F..%2F_emulator%2Freset"),
        ("GET", "/gateway/v1/../../_emulator/requests"),
        ("GET", "/gateway/%2e%2e/%2e%2e/_emulator/environments"),
        ("GET", "/gateway/v1/environments/env_a%00/work"),
        ("GET", f"/gateway/v1/environments/{e}/work/%2e%2e"),
        ("GET", f"/gateway/v1/environments/{e}/work/{w}%0d%0aX-Injected:%201"),
        ("POST", f"/gateway/v1/environments/{e}/work/..%2F..%2F..%2F_emulator%2Freset/stop"),
        ("POST", f"/gateway/v1/environments/{e}/work/{w}%2F..%2F{w}/stop"),
        ("POST", f"/gateway/v1/environments/{e}/../{other['id']}/work/{w}/stop"),
        ("POST", f"/gateway/v1/environments/{e}/work/{w}/stop/../../{w}/stop"),
    ]:
        response = probe(
            f"gateway {method} {path}",
            lambda method=method, path=path: raw_request(
                live_server_url, method, path, headers={**gateway, **json_body}, body=b'{"force": true}'
            ),
        )
        if "x-injected" in response.headers:
            probe.found.wrong(f"gateway {path}: a header was injected")
    upgrade = {
        "Cookie": cookie,
        "Origin": live_server_url,
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    for path in [
        f"/ws/live/{e}%2F..%2Fx/",
        f"/ws/live/{e}/../../x/",
        f"/ws/live/{e}/{w}/../../../",
        "/ws/nowhere/",
        f"/ws/display/..%2F..%2F/?env={e}",
    ]:
        probe(
            f"websocket {path}",
            lambda path=path: raw_request(live_server_url, "GET", path, headers=upgrade),
            expect=(403, 404),
        )
    for host in ("evil.example", "127.0.0.1.evil.example", "127.0.0.1:80@evil.example"):
        probe(
            f"a Host header of {host}",
            lambda host=host: raw_request(
                live_server_url, "GET", "/", headers={"Host": host, "Cookie": cookie}
            ),
            expect=(400,),
        )
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example/", "https:evil.example"):
        response = probe(
            f"login redirect to {target}",
            lambda target=target: raw_request(
                live_server_url,
                "POST",
                f"/accounts/login/?next={quote(target, safe='')}",
                headers={"Cookie": f"csrftoken={token}", "Content-Type": "application/x-www-form-urlencoded"},
                body=f"username=admin&password={quote(PASSWORD)}&csrfmiddlewaretoken={token}".encode(),
            ),
            expect=(302,),
        )
        if "evil.example" in response.headers.get("location", ""):
            probe.found.wrong(f"login redirect to {target}: followed to {response.headers['location']}")
    # The emulator's state is untouched: nothing reset it through a traversal.
    assert {e["environment"]["id"] for e in upstream.environments()} == {env["id"], other["id"]}
    with worker_client(upstream) as c:
        assert c.beta.environments.work.retrieve(w, environment_id=e).state == "active"
    probe.done()


# --- Metadata patches ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_oversized_and_malformed_metadata_patches_are_refused_before_the_upstream(client, upstream):
    env, key = environment(upstream, "patched")
    item = start_work(upstream, env["id"], key, metadata={"team": "ops"})
    operator = make_user("operator")
    client.force_login(operator)
    gateway_token = tokens.mint(operator, "hold", 7)[1]
    probe = Probe(upstream, upstream.api_key, key, gateway_token)
    url = f"/environments/{env['id']}/work/{item.id}/metadata/"
    loaded = '{"team":"ops"}'

    def preview(keys: list[str], values: list[str], **more: Any) -> Callable[[], Any]:
        return lambda: client.post(
            url, {"step": "preview", "loaded": loaded, "key": keys, "value": values, **more}
        )

    def send(patch: str, loaded_json: str = loaded) -> Callable[[], Any]:
        return lambda: client.post(
            url, {"step": "send", "loaded": loaded_json, "patch": patch, "reason": "hostile"}
        )

    seventeen = [f"k{n}" for n in range(17)]
    probe("preview: 17 keys", preview(seventeen, ["v"] * 17))
    probe("preview: a 65-character key", preview(["k" * 65], ["v"]))
    probe("preview: a 513-character value", preview(["k"], ["v" * 513]))
    probe("preview: 100 kB value", preview(["k"], ["v" * 100_000]))
    probe("preview: 201 rows", preview([f"k{n}" for n in range(201)], ["v"] * 201))
    probe("preview: keys and values of different counts", preview(["a", "b"], ["1"]))
    probe("preview: a value without a key", preview(["", "  "], ["orphan", "x"]))
    probe("preview: the same key twice", preview(["dup", "dup"], ["1", "2"]))
    probe("preview: nothing changes", preview(["team"], ["ops"]))
    probe("preview: a garbled loaded form", preview(["k"], ["v"], loaded="{not json"))
    probe("send: not JSON", send("{not json"))
    probe("send: a list", send('["a", "b"]'))
    probe("send: an empty patch", send("{}"))
    probe("send: a nested value", send('{"a": {"b": "c"}}'))
    probe("send: a number", send('{"a": 1}'))
    probe("send: 300 kB", send(json.dumps({"k": "v" * 300_000})))
    probe("send: a garbled loaded form", send('{"a": "b"}', loaded_json="[1, 2]"))
    probe("send: a 10 MB field", send(json.dumps({"k": "v" * 10_000_000})))
    # Well formed, but over the limits once merged with what is there: refused after reading the item, never sent.
    probe(
        "send: 17 keys once merged", send(json.dumps({f"k{n}": "v" for n in range(16)})), upstream_reads=True
    )
    probe("send: a 65-character key", send(json.dumps({"k" * 65: "v"})), upstream_reads=True)
    probe("send: a 513-character value", send(json.dumps({"k": "v" * 513})), upstream_reads=True)

    gateway = Client(headers={"Authorization": f"Bearer {gateway_token}", "X-Reason": "hostile"})
    path = f"/gateway/v1/environments/{env['id']}/work/{item.id}"
    for label, body, status in [
        ("70 kB body", json.dumps({"metadata": {"k": "v" * 70_000}}), (413,)),
        ("not JSON", "{not json", (400,)),
        ("a JSON list", "[1, 2]", (400,)),
    ]:
        probe(
            f"gateway update: {label}",
            lambda body=body: gateway.post(path, body, content_type="application/json"),
            expect=status,
            denied="patch_metadata",
            outcome="failed",
        )
    with worker_client(upstream) as c:
        assert c.beta.environments.work.retrieve(item.id, environment_id=env["id"]).metadata == {
            "team": "ops"
        }
    probe.done()


# --- Script payloads from the upstream ----------------------------------------------------------------------------


def hostile_upstream(emulator: Any, settings: Any) -> tuple[dict[str, Any], str, Any]:
    """An environment named with a script, and a stuck item whose metadata key and value are scripts too."""
    settings.STUCK_HEARTBEAT_SECONDS = 0
    env, key = environment(emulator, ENV_NAME)
    item = start_work(emulator, env["id"], key, metadata={META_KEY: META_VALUE})
    return env, key, item


@pytest.mark.django_db
def test_script_payloads_from_the_upstream_are_rendered_inert_in_pages(client, upstream, settings):
    env, key, item = hostile_upstream(upstream, settings)
    fill_index(upstream, env["id"], key)
    client.force_login(make_user("admin"))
    found = Findings()
    e, w = env["id"], item.id
    item_url = f"/environments/{e}/work/{w}/"

    def page(label: str, response: Any, *, shows: tuple[str, ...] = (), status: int = 200) -> str:
        text = response.content.decode()
        if response.status_code != status:
            found.wrong(f"{label}: HTTP {response.status_code}")
        inert(found, label, text, shows=shows)
        for leak in leaks(text, upstream.api_key, key):
            found.wrong(f"{label}: shows {leak}")
        return text

    page("overview", client.get("/"), shows=(ENV_NAME,))
    page("environment", client.get(f"/environments/{e}/"), shows=(ENV_NAME, META_KEY, META_VALUE))
    page("work item", client.get(item_url), shows=(META_KEY, META_VALUE))
    page("stuck work", client.get("/stuck/"), shows=(ENV_NAME,))
    form = page("metadata form", client.get(item_url + "metadata/"), shows=(META_KEY, META_VALUE))
    preview = page(
        "metadata preview",
        client.post(
            item_url + "metadata/",
            {
                "step": "preview",
                "loaded": hidden(form, "loaded"),
                "key": [META_KEY, "<b>new</b>"],
                "value": [META_VALUE + "!", "<iframe src=javascript:alert(4)>"],
                "reason": "<script>alert('reason')</script>",
            },
        ),
        shows=(META_KEY, META_VALUE),
    )
    if "<iframe" in preview or "<b>new</b>" in preview:
        found.wrong("metadata preview: a typed key or value is rendered raw")
    sent = client.post(
        item_url + "metadata/",
        {
            "step": "send",
            "loaded": hidden(preview, "loaded"),
            "patch": hidden(preview, "patch"),
            "reason": "xss",
        },
    )
    if sent.status_code != 302:
        found.wrong(f"metadata send: HTTP {sent.status_code}")
    page("work item after the patch", client.get(item_url), shows=(META_KEY,))
    page("stop confirmation", client.get(item_url + "force-stop/"), shows=())
    confirm = page(
        "bulk confirmation", client.post(f"/environments/{e}/bulk/", {"work_ids": [w]}), shows=(ENV_NAME,)
    )
    if 'data-confirm-match="<script>' in confirm:
        found.wrong("bulk confirmation: the environment name breaks out of its attribute")
    page("audit log", client.get("/audit/"), shows=("<iframe src=javascript:alert(4)>",))
    page("display links", client.get("/displays/"), shows=(ENV_NAME,))
    posted = client.post("/displays/", {"name": "<script>alert('wall')</script>", "time_zone": "UTC"})
    created = client.get(posted["Location"])
    wall_url = re.search(
        r"<code data-display-url>http://testserver(/display/[^<]+/)</code>", created.content.decode()
    )
    inert(found, "display link created", created.content.decode(), shows=("<script>alert('wall')</script>",))
    assert wall_url, "the display link is shown"
    client.logout()
    page("wall display", client.get(wall_url.group(1)), shows=(ENV_NAME,))
    client.force_login(make_user("viewer"))
    # An item the work index does not hold yet is retrieved from the Work API, whose error page is hostile.
    unindexed = start_work(upstream, e, key)
    upstream.set_fault(route="retrieve", **HOSTILE_ERROR)
    failed = page(
        "an upstream error with markup and a credential",
        client.get(f"/environments/{e}/work/{unindexed.id}/"),
        status=502,
    )
    upstream.clear_faults()
    if 'data-failure-kind="permission"' not in failed or LEAKED in failed:
        found.wrong("an upstream error with markup and a credential: not shown as a scrubbed banner")
    for export, content_type in (
        ("/audit/export.json", "application/json"),
        ("/audit/export.csv", "text/csv"),
    ):
        found.case()
        response = client.get(export)
        if (
            not response["Content-Type"].startswith(content_type)
            or response.get("X-Content-Type-Options") != "nosniff"
        ):
            found.wrong(f"{export}: served as {response['Content-Type']} without nosniff")
    FIGURES.inputs(found.tried, len(found))
    assert not found, "\n".join(found)


@pytest.mark.django_db(transaction=True)
async def test_script_payloads_from_the_upstream_are_inert_in_websocket_frames(
    live_runtime, upstream, settings
):
    env, key, item = await sync_to_async(hostile_upstream)(upstream, settings)
    e, w = env["id"], item.id
    cookie = await session_cookie(await sync_to_async(make_user)("viewer"))
    link = DisplayLink(name="<script>alert('wall')</script>", environments=[])
    wall_token = link.issue_token()
    await link.asave()
    found = Findings()
    for label, path, cookie_ in (
        ("overview socket", f"/ws/live/?env={e}", cookie),
        ("environment socket", f"/ws/live/{e}/?work={w}", cookie),
        ("work item socket", f"/ws/live/{e}/{w}/", cookie),
        ("wall display socket", f"/ws/display/{wall_token}/?env={e}", None),
    ):
        socket = communicator(path, cookie=cookie_)
        connected, _ = await socket.connect()
        assert connected, label
        frame = await receive_matching(socket, r"data-live-at=\"\d", timeout=10)
        inert(found, label, frame, shows=(ENV_NAME,) if "wall" in label else ())
        for leak in leaks(frame, upstream.api_key, key):
            found.wrong(f"{label}: a frame contains {leak}")
        if label == "environment socket":
            # The upstream's error message reaches the stale badge's title: escaped, credential scrubbed.
            await sync_to_async(upstream.set_fault)(route="stats", **HOSTILE_ERROR)
            stale = await receive_matching(socket, r"data-stale-since", timeout=10)
            await sync_to_async(upstream.clear_faults)()
            inert(found, "a stale frame quoting a hostile upstream error", stale)
            for leak in leaks(stale, upstream.api_key, key, LEAKED):
                found.wrong(f"a stale frame quoting a hostile upstream error contains {leak}")
        await socket.disconnect()
    FIGURES.inputs(found.tried, len(found))
    assert not found, "\n".join(found)


# --- CSRF ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_missing_and_forged_csrf_tokens_are_refused(upstream):
    env, key = environment(upstream, "guarded")
    item = start_work(upstream, env["id"], key)
    admin = make_user("admin")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin)
    token = csrf(browser)
    probe = Probe(upstream, upstream.api_key, key)
    item_url = f"/environments/{env['id']}/work/{item.id}/"
    stop = {"reason": "csrf"}
    forged = "A" * 64
    posts = [
        ("stop", item_url + "stop/", stop),
        ("force stop", item_url + "force-stop/", stop),
        ("metadata", item_url + "metadata/", {"step": "send", "loaded": "{}", "patch": '{"a":"b"}'}),
        ("bulk", f"/environments/{env['id']}/bulk/", {"work_ids": [item.id]}),
        ("bulk start", f"/environments/{env['id']}/bulk/start/", {"plan": "x", "mode": "force_stop"}),
        (
            "configure",
            "/configure/",
            {"environment_id": env["id"], "key": "sk-ant-oat01-" + "x" * 40, "name": "k"},
        ),
        ("display link", "/displays/", {"name": "lobby", "time_zone": "UTC"}),
        ("token", "/tokens/new/", {"name": "script", "expires_in_days": "7"}),
        ("time preference", "/preferences/time", {"local_time": "1"}),
        ("logout", "/accounts/logout/", {}),
    ]
    for label, path, data in posts:
        probe(f"{label}: no token", lambda path=path, data=data: browser.post(path, data), expect=(403,))
        probe(
            f"{label}: forged token",
            lambda path=path, data=data: browser.post(path, {**data, "csrfmiddlewaretoken": forged}),
            expect=(403,),
        )
        probe(
            f"{label}: forged htmx header",
            lambda path=path, data=data: browser.post(
                path, data, headers={"HX-Request": "true", "X-CSRFToken": forged}
            ),
            expect=(403,),
        )
        probe(
            f"{label}: a foreign origin",
            lambda path=path, data=data: browser.post(
                path, {**data, "csrfmiddlewaretoken": token}, headers={"Origin": "https://evil.example"}
            ),
            expect=(403,),
        )
    # The gateway reads no cookie: a signed-in browser's session is not a credential there.
    probe(
        "gateway: a session cookie instead of a token",
        lambda: browser.post(
            f"/gateway/v1/environments/{env['id']}/work/{item.id}/stop",
            '{"force": true}',
            content_type="application/json",
            headers={"X-Reason": "csrf", "Origin": "https://evil.example"},
        ),
        expect=(401,),
    )
    # Nothing was changed by any of them, and the session is still signed in.
    assert EnvironmentKey.objects.count() == 1 and not DisplayLink.objects.exists()
    assert not PersonalAccessToken.objects.exists()
    assert browser.get("/").status_code == 200
    # With the right token the same session may post: the refusals above were the CSRF check's.
    assert (
        browser.post("/preferences/time", {"local_time": "1", "csrfmiddlewaretoken": token}).status_code
        == 204
    )
    probe.done()


# --- Websockets and display links --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_foreign_origins_and_bad_display_links_are_refused_on_sockets(live_runtime, upstream, settings):
    env, key = await sync_to_async(environment)(upstream, "walled")
    admin_cookie = await session_cookie(await sync_to_async(make_user)("admin"))
    nobody_cookie = await session_cookie(await sync_to_async(make_user)("none", username="nobody"))
    live = DisplayLink(name="lobby")
    live_token = live.issue_token()
    await live.asave()
    revoked = DisplayLink(name="old", revoked_at=timezone.now())
    revoked_token = revoked.issue_token()
    await revoked.asave()
    deleted = DisplayLink(name="gone")
    deleted_token = deleted.issue_token()
    await deleted.asave()
    await deleted.adelete()
    with settings_secret(settings, "another-secret-key-" + "x" * 40):
        rekeyed_token = DisplayLink(name="rekeyed").issue_token()
    e = env["id"]
    found = Findings()
    refused = [
        ("a foreign origin", f"/ws/live/?env={e}", admin_cookie, b"http://evil.example"),
        ("a look-alike origin", f"/ws/live/?env={e}", admin_cookie, b"http://127.0.0.1.evil.example"),
        ("a null origin", f"/ws/live/{e}/", admin_cookie, b"null"),
        ("no origin", f"/ws/live/{e}/", admin_cookie, None),
        ("no session", f"/ws/live/{e}/", None, b"http://127.0.0.1"),
        ("a user without a role", f"/ws/live/{e}/", nobody_cookie, b"http://127.0.0.1"),
        (
            "a display link from a foreign origin",
            f"/ws/display/{live_token}/?env={e}",
            None,
            b"http://evil.example",
        ),
        ("a forged display link", f"/ws/display/{live_token[:-4]}AAAA/?env={e}", None, b"http://127.0.0.1"),
        ("a revoked display link", f"/ws/display/{revoked_token}/?env={e}", None, b"http://127.0.0.1"),
        ("a deleted display link", f"/ws/display/{deleted_token}/?env={e}", None, b"http://127.0.0.1"),
        (
            "a display link signed with another key",
            f"/ws/display/{rekeyed_token}/",
            None,
            b"http://127.0.0.1",
        ),
        (
            "traversal in an environment id",
            f"/ws/live/{quote(e + '/../x', safe='')}/",
            admin_cookie,
            b"http://127.0.0.1",
        ),
        ("a control character in an environment id", f"/ws/live/{e}%00/", admin_cookie, b"http://127.0.0.1"),
        ("traversal in a work id", f"/ws/live/{e}/work_..%2F..%2Fx/", admin_cookie, b"http://127.0.0.1"),
        ("a garbage work id", f"/ws/live/{e}/<script>/", admin_cookie, b"http://127.0.0.1"),
    ]
    before = await sync_to_async(AuditState.now)()
    for label, path, cookie, origin in refused:
        found.case()
        socket = communicator(path, cookie=cookie, origin=origin)
        connected, _ = await socket.connect()
        if connected:
            found.wrong(f"socket with {label}: accepted")
            await socket.disconnect()
    # Absurd query parameters on a good socket: bounded, and only known environments are watched.
    found.case()
    flood = "&".join([f"env={e}", *(f"env=env_{n:06d}" for n in range(5000)), "interval=0", "refresh=0.001"])
    socket = communicator(f"/ws/live/?{flood}", cookie=admin_cookie)
    connected, _ = await socket.connect()
    if not connected:
        found.wrong("a socket with absurd query parameters was refused instead of bounded")
    else:
        # One socket names at most MAX_ENVIRONMENTS ids, and only those the upstream lists get a feed (a poller).
        if len(live_runtime.local_watch) > MAX_ENVIRONMENTS:
            found.wrong(f"absurd query parameters: one socket watches {len(live_runtime.local_watch)} keys")
        try:
            await wait_until(lambda: e in live_runtime.feeds and live_runtime.feeds[e].polls > 0)
        except AssertionError:
            found.wrong("absurd query parameters: the known environment got no feed")
        if set(live_runtime.feeds) != {e}:
            found.wrong(f"absurd query parameters: {len(live_runtime.feeds)} environments are polled")
        await socket.disconnect()
    added = await sync_to_async(before.added)()
    if added:
        found.wrong(f"refused sockets were audited: {[(a.action, a.outcome) for a in added]}")
    FIGURES.inputs(found.tried, len(found))
    assert not found, "\n".join(found)


class settings_secret:
    """Sign with another SECRET_KEY for a moment (a token from another deployment, or from before a key rotation)."""

    def __init__(self, settings: Any, secret: str) -> None:
        self.settings = settings
        self.secret = secret

    def __enter__(self) -> None:
        self.previous = self.settings.SECRET_KEY
        self.settings.SECRET_KEY = self.secret

    def __exit__(self, *exc: object) -> None:
        self.settings.SECRET_KEY = self.previous


@pytest.mark.django_db
def test_forged_rekeyed_deleted_and_revoked_display_links_are_refused(client, upstream, settings):
    environment(upstream, "walled")
    probe = Probe(upstream, upstream.api_key)
    live = DisplayLink(name="lobby")
    token = live.issue_token()
    live.save()
    revoked = DisplayLink(name="old", revoked_at=timezone.now())
    revoked_token = revoked.issue_token()
    revoked.save()
    deleted = DisplayLink(name="gone")
    deleted_token = deleted.issue_token()
    deleted.save()
    deleted.delete()
    with settings_secret(settings, "another-secret-key-" + "x" * 40):
        rekeyed = DisplayLink(name="rekeyed").issue_token()
    payload = signing.loads(token, salt="dashboard.live.display-link")
    unsigned = signing.dumps(payload, salt="another-salt")
    for label, bad in [
        ("a forged signature", token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")),
        ("a token of another kind", unsigned),
        ("a token signed with another key", rekeyed),
        ("a deleted link", deleted_token),
        ("garbage", "../../etc/passwd"),
        ("a control character", token + "%00"),
        ("a 5000-character token", "A" * 5000),
        ("a revoked link", revoked_token),
    ]:
        probe(
            f"display: {label}",
            lambda bad=bad: client.get(f"/display/{quote(bad, safe='%')}/"),
            expect=(403, 404),
        )
    # An absurd refresh interval is not the display's to set: the page keeps the configured one.
    response = probe(
        "display: refresh interval",
        lambda: client.get(f"/display/{token}/?interval=0.0001&refresh=0"),
        expect=(200,),
        upstream_reads=True,
        denied="display_opened",
        outcome="succeeded",
    )
    if re.search(r'interval="0\.0001"', response.content.decode()):
        probe.found.wrong("display: the refresh interval came from the query string")
    live.refresh_from_db()
    revoked.refresh_from_db()
    assert revoked.last_opened_at is None
    assert AuditEntry.objects.filter(action="display_opened").count() == 1
    probe.done()


# --- Forged POSTs of people without the role ---------------------------------------------------------------------


@pytest.mark.django_db
def test_forged_posts_of_viewers_and_operators_are_denied_and_audited(client, upstream):
    env, key = environment(upstream, "guarded")
    item = start_work(upstream, env["id"], key, metadata={"team": "ops"})
    admin = make_user("admin")
    admin_token = tokens.mint(admin, "admin's", 7)[0]
    link = DisplayLink(name="lobby")
    link.issue_token()
    link.save()
    viewer_token = tokens.mint(make_user("viewer"), "viewer's", 7)[1]
    operator_token = tokens.mint(make_user("operator"), "operator's", 7)[1]
    expired_token = tokens.mint(make_user("viewer", username="expired"), "old", 7)
    PersonalAccessToken.objects.filter(pk=expired_token[0].pk).update(
        expires_at=timezone.now() - timedelta(days=1)
    )
    revoked_token = tokens.mint(make_user("admin", username="revoked"), "revoked", 7)
    tokens.revoke(revoked_token[0], admin)
    make_user("none", username="nobody")
    probe = Probe(upstream, upstream.api_key, key, viewer_token, operator_token)
    e, w = env["id"], item.id
    item_url = f"/environments/{e}/work/{w}/"
    forged_key = "sk-ant-oat01-" + "k" * 40
    viewer_posts = [
        ("stop", item_url + "stop/", {"reason": "forged"}, "stop"),
        # Force-stop has its own address and permission: a viewer's forged one is a refused force_stop.
        ("force stop", item_url + "force-stop/", {"reason": "forged"}, "force_stop"),
        (
            "metadata preview",
            item_url + "metadata/",
            {"step": "preview", "loaded": "{}", "key": ["a"], "value": ["b"]},
            "patch_metadata",
        ),
        (
            "metadata send",
            item_url + "metadata/",
            {"step": "send", "loaded": "{}", "patch": '{"a":"b"}'},
            "patch_metadata",
        ),
        ("bulk preview", f"/environments/{e}/bulk/", {"work_ids": [w]}, "bulk"),
        (
            "bulk start",
            f"/environments/{e}/bulk/start/",
            {"plan": "x", "mode": "force_stop", "confirm": "FORCE", "reason": "r"},
            "bulk",
        ),
        (
            "configure a key",
            "/configure/",
            {"environment_id": e, "key": forged_key, "name": "mine"},
            "configure",
        ),
        ("remove a key", f"/configure/keys/{e}/remove/", {"reason": "r"}, "configure"),
        ("create a display link", "/displays/", {"name": "sneaky", "time_zone": "UTC"}, "configure"),
        ("revoke a display link", f"/displays/{link.pk}/revoke", {"reason": "r"}, "configure"),
    ]
    client.force_login(make_user("viewer", username="watcher"))
    for label, path, data, action in viewer_posts:
        probe(
            f"viewer: {label}",
            lambda path=path, data=data: client.post(path, data),
            expect=(403,),
            denied=action,
        )
    probe(
        "viewer: revoke an admin's token",
        lambda: client.post(f"/tokens/{admin_token.pk}/revoke/", {"reason": "r"}),
        expect=(404,),
    )
    # Bodies too large or with too many fields are refused as malformed (400) before anyone's role is looked at.
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(User.objects.get(username="watcher"))
    token = csrf(browser)
    for label, path, data in [
        ("a 3 MB stop", item_url + "stop/", {"reason": "r" * 3_000_000}),
        (
            "a bulk stop of 5000 fields",
            f"/environments/{e}/bulk/",
            {"work_ids": [f"work_{n}" for n in range(5000)]},
        ),
    ]:
        probe(
            f"viewer: {label}",
            lambda path=path, data=data: browser.post(path, {**data, "csrfmiddlewaretoken": token}),
            expect=(400,),
        )
    client.force_login(make_user("operator", username="hand"))
    for label, path, data, action in [
        ("force stop", item_url + "force-stop/", {"reason": "forged"}, "force_stop"),
        (
            "bulk force-stop",
            f"/environments/{e}/bulk/start/",
            {"plan": "x", "mode": "force_stop", "confirm": "FORCE", "reason": "r"},
            "bulk_force_stop",
        ),
        (
            "configure a key",
            "/configure/",
            {"environment_id": e, "key": forged_key, "name": "mine"},
            "configure",
        ),
    ]:
        probe(
            f"operator: {label}",
            lambda path=path, data=data: client.post(path, data),
            expect=(403,),
            denied=action,
        )
    client.force_login(make_user("none", username="roleless"))
    probe(
        "no role: stop",
        lambda: client.post(item_url + "stop/", {"reason": "x"}),
        expect=(403,),
        denied="stop",
    )
    probe("no role: read", lambda: client.get(item_url), expect=(403,))
    client.logout()
    probe("anonymous: stop", lambda: client.post(item_url + "stop/", {"reason": "x"}), expect=(302,))
    probe("anonymous: configure", lambda: client.post("/configure/", {"key": forged_key}), expect=(302,))

    def gateway(secret: str, method: str, path: str, body: str = "") -> Callable[[], Any]:
        caller = Client(headers={"Authorization": f"Bearer {secret}", "X-Reason": "forged"})
        if method == "GET":
            return lambda: caller.get(path)
        return lambda: caller.post(path, body, content_type="application/json")

    work = f"/gateway/v1/environments/{e}/work/{w}"
    for label, call, status, action in [
        ("viewer token: stop", gateway(viewer_token, "POST", work + "/stop", "{}"), 403, "stop"),
        (
            "viewer token: update",
            gateway(viewer_token, "POST", work, '{"metadata": {"a": "b"}}'),
            403,
            "patch_metadata",
        ),
        (
            "operator token: force stop",
            gateway(operator_token, "POST", work + "/stop", '{"force": true}'),
            403,
            "force_stop",
        ),
        (
            "operator token: force as a string",
            gateway(operator_token, "POST", work + "/stop", '{"force": "yes"}'),
            403,
            "force_stop",
        ),
        (
            "operator token: poll",
            gateway(operator_token, "GET", f"/gateway/v1/environments/{e}/work/poll"),
            403,
            "work.poll",
        ),
        ("expired token: stop", gateway(expired_token[1], "POST", work + "/stop", "{}"), 401, None),
        ("revoked token: stop", gateway(revoked_token[1], "POST", work + "/stop", "{}"), 401, None),
        ("forged token: stop", gateway("wqd_pat_" + "A" * 43, "POST", work + "/stop", "{}"), 401, None),
        ("environment key as a token", gateway(key, "GET", work), 401, None),
    ]:
        probe(f"gateway, {label}", call, expect=(status,), denied=action)
    with worker_client(upstream) as c:
        after = c.beta.environments.work.retrieve(w, environment_id=e)
    assert (after.state, after.metadata) == ("active", {"team": "ops"})
    assert not EnvironmentKey.objects.filter(environment_id=e).exclude(updated_by="test").exists()
    assert DisplayLink.objects.get().revoked_at is None
    assert forged_key not in json.dumps(list(AuditEntry.objects.values_list("sent", flat=True)))
    probe.done()


@pytest.mark.django_db
def test_forged_and_expired_bulk_plans_and_hostile_configuration_are_refused(client, upstream, settings):
    env, key = environment(upstream, "planned")
    other, _ = environment(upstream, "elsewhere")
    item = start_work(upstream, env["id"], key)
    e, w = env["id"], item.id
    first = make_user("admin")
    client.force_login(first)
    confirm = client.post(f"/environments/{e}/bulk/", {"work_ids": [w]})
    assert confirm.status_code == 200
    plan = hidden(confirm.content.decode(), "plan")
    wanted = {"env": e, "ids": [w], "selection": "selected", "phrase": "planned", "user": first.pk}
    with settings_secret(settings, "another-secret-key-" + "x" * 40):
        rekeyed = signing.dumps(wanted, salt="dashboard.bulk-plan", compress=True)
    with mock.patch("django.core.signing.time.time", return_value=time.time() - 2 * 3600):
        expired = signing.dumps(wanted, salt="dashboard.bulk-plan", compress=True)
    probe = Probe(upstream, upstream.api_key, key)

    def start(plan: str, environment_id: str = e) -> Callable[[], Any]:
        form = {"plan": plan, "mode": "force_stop", "confirm": "planned", "reason": "forged plan"}
        return lambda: client.post(f"/environments/{environment_id}/bulk/start/", form)

    # A refused plan sends the person back to start again, with a message; nothing is stopped or audited.
    refused = (302, 400)
    probe(
        "bulk: a tampered plan",
        start(plan[:-3] + ("abc" if not plan.endswith("abc") else "xyz")),
        expect=refused,
    )
    probe("bulk: a plan signed with another key", start(rekeyed), expect=refused)
    probe("bulk: an expired plan", start(expired), expect=refused)
    probe("bulk: the plan of another environment", start(plan, other["id"]), expect=refused)
    probe("bulk: no plan", start(""), expect=refused)
    client.force_login(make_user("admin", username="second"))
    probe("bulk: another admin's plan", start(plan), expect=refused)
    valid_key = "sk-ant-oat01-" + "v" * 60
    for label, data in [
        ("a traversal id", {"environment_id": "env_../../x", "key": valid_key}),
        ("a control character in the id", {"environment_id": e + "\x00", "key": valid_key}),
        ("a key pasted as the id", {"environment_id": valid_key, "key": valid_key}),
        ("a key with a line break", {"environment_id": e, "key": valid_key + "\r\nX-Injected: 1"}),
        ("a 10 kB key", {"environment_id": e, "key": "sk-ant-oat01-" + "v" * 10_000}),
        ("a 300-character name", {"environment_id": e, "key": valid_key, "name": "n" * 300}),
    ]:
        probe(
            f"configure: {label}",
            lambda data=data: client.post("/configure/", data),
            expect=(400,),
            upstream_reads=True,
        )
    with worker_client(upstream) as c:
        assert c.beta.environments.work.retrieve(w, environment_id=e).state == "active"
    assert EnvironmentKey.objects.count() == 2
    assert not AuditEntry.objects.exists()
    probe.done()


# --- Absurd query parameters ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_absurd_query_parameters_are_refused_before_the_upstream(client, upstream):
    env, key = environment(upstream, "queried")
    item = start_work(upstream, env["id"], key)
    client.force_login(make_user("admin"))
    probe = Probe(upstream, upstream.api_key, key)
    page = f"/environments/{env['id']}/"
    for label, params in [
        ("page size 100000", {"limit": "100000"}),
        ("page size -1", {"limit": "-1"}),
        ("page size 0", {"limit": "0"}),
        ("page size 1e9", {"limit": "1e9"}),
        ("page size 10**40", {"limit": "1" + "0" * 40}),
        ("page size in words", {"limit": "all"}),
        ("page size with SQL", {"limit": "25 OR 1=1"}),
        ("a state that is a script", {"state": "<script>alert(1)</script>"}),
        ("a state with a NUL", {"state": "active\x00"}),
        ("a stuck filter of maybe", {"stuck": "maybe"}),
        ("a 10000-character search", {"q": "a" * 10_000}),
        ("a credential as the search", {"q": "sk-ant-api03-" + "x" * 30}),
        ("a 5000-character cursor", {"older": "c" * 5000}),
        ("a cursor with a space", {"newer": "abc def"}),
        ("a cursor with control characters", {"older": "abc\r\nX-Injected: 1"}),
        ("a cursor in another script", {"newer": "курсор"}),
    ]:
        response = probe(
            f"environment page: {label}", lambda params=params: client.get(page, params), expect=(400,)
        )
        if "<script>alert(1)</script>" in response.content.decode():
            probe.found.wrong(f"environment page: {label}: echoed raw")
    for label, q in [
        ("a 100000-character work id", "work_" + "a" * 100_000),
        ("a 5000-character environment id", "env_" + "a" * 5000),
        ("an empty search", ""),
        ("only spaces", "     "),
        ("a credential", "sk-ant-oat01-" + "y" * 30),
    ]:
        response = probe(f"search: {label}", lambda q=q: client.get("/search", {"q": q}), expect=(400,))
        if "sk-ant-" in response.content.decode():
            probe.found.wrong(f"search: {label}: the credential is echoed")
    probe(
        "bulk: 5000 work ids",
        lambda: client.post(
            f"/environments/{env['id']}/bulk/", {"work_ids": [f"work_{n:05d}" for n in range(5000)]}
        ),
        expect=(400,),
    )
    probe(
        "bulk: 600 work ids (over the cap)",
        lambda: client.post(
            f"/environments/{env['id']}/bulk/", {"work_ids": [f"work_{n:05d}" for n in range(600)]}
        ),
        expect=(400,),
    )
    # The audit log is local: absurd paging is clamped, never an error; an absurd filter is refused with why.
    for label, params, expected in [
        ("page -1", {"page": "-1"}, 200),
        ("page 10**30", {"page": "1" + "0" * 30}, 200),
        ("page in words", {"page": "last-ish"}, 200),
        ("a 100000-character filter", {"user": "u" * 100_000, "work_id": "w" * 100_000}, 400),
    ]:
        probe(
            f"audit log: {label}",
            lambda params=params: client.get("/audit/", params),
            expect=(expected,),
        )
    with worker_client(upstream) as c:
        assert c.beta.environments.work.retrieve(item.id, environment_id=env["id"]).state == "active"
    probe.done()


# --- What an attack on the running demo found ----------------------------------------------------------------------


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.django_db
def test_deeply_nested_json_is_a_clear_400_audited_like_other_bad_bodies(upstream):
    env, key = environment(upstream, "nested")
    item = start_work(upstream, env["id"], key, metadata={"team": "ops"})
    viewer = make_user("viewer")
    operator = make_user("operator")
    secrets = [tokens.mint(user, "hold", 7)[1] for user in (viewer, operator)]
    probe = Probe(upstream, upstream.api_key, key, *secrets)
    path = f"/gateway/v1/environments/{env['id']}/work/{item.id}"
    bodies = [
        ("1000 open brackets", "[" * 1000),
        # Under the gateway's 64 kB body limit (beyond it, 413 before any parsing).
        ("60000 open brackets", "[" * 60_000),
        ("an object 10000 deep", '{"a":' * 10_000 + "1" + "}" * 10_000),
        ("a list 200 deep, closed", deep(200)),
        ("metadata 100 deep, closed", json.dumps({"metadata": {"k": "x"}}).replace('"x"', deep(100))),
    ]
    for secret, who in zip(secrets, ("viewer", "operator"), strict=True):
        # raise_request_exception=False: an escaping RecursionError is a 500 here, as a script would see it.
        gateway = Client(
            headers={"Authorization": f"Bearer {secret}", "X-Reason": "hostile"},
            raise_request_exception=False,
        )
        for label, body in bodies:
            response = probe(
                f"gateway {who}: {label}",
                lambda body=body, gateway=gateway: gateway.post(path, body, content_type="application/json"),
                expect=(400,),
                denied="patch_metadata",
                outcome="failed",
            )
            if response.status_code == 400 and response.json()["error"]["type"] != "invalid_request_error":
                probe.found.wrong(f"gateway {who}: {label}: not the usual error envelope")
    browser = Client(raise_request_exception=False)
    browser.force_login(operator)
    form = f"/environments/{env['id']}/work/{item.id}/metadata/"
    for step in ("preview", "send"):
        for label, value in [("150000 open brackets", "[" * 150_000), ("200 deep, closed", deep(200))]:
            for field in ("loaded", "patch"):
                fields = {"step": step, "loaded": '{"team":"ops"}', "patch": '{"a":"b"}', "reason": "hostile"}
                fields[field] = value
                probe(
                    f"metadata form {step}: {field} {label}", lambda fields=fields: browser.post(form, fields)
                )
    with worker_client(upstream) as c:
        assert c.beta.environments.work.retrieve(item.id, environment_id=env["id"]).metadata == {
            "team": "ops"
        }
    FIGURES.measured("nested JSON", f"{probe.found.tried} bodies and forms, answered 400: {not probe.found}")
    probe.done()


@pytest.mark.django_db
def test_the_gateway_drops_a_work_items_secret_on_retrieve_and_list(upstream):
    env, key = environment(upstream, "secretive")
    item = start_work(upstream, env["id"], key)
    secret = tokens.mint(make_user("viewer"), "hold", 7)[1]
    gateway = Client(headers={"Authorization": f"Bearer {secret}"})
    worker_secret = "eyJ2ZXJzaW9uIjoxLCJzZXNzaW9uc190b2tlbiI6InNrLWFudC1yZXEtUVFRUVFRUVFRUSJ9"
    found = Findings()
    with worker_client(upstream) as c:
        record = c.beta.environments.work.retrieve(item.id, environment_id=env["id"])
    one = {"id": item.id, "type": "work", "state": record.state, "secret": worker_secret, "metadata": {}}
    for route, path, body in [
        ("retrieve", f"/gateway/v1/environments/{env['id']}/work/{item.id}", one),
        (
            "list",
            f"/gateway/v1/environments/{env['id']}/work",
            {"data": [one, {**one, "id": "work_other"}], "next_page": None},
        ),
    ]:
        found.case()
        upstream.set_fault(route=route, status=200, content_type="application/json", body=json.dumps(body))
        response = gateway.get(path)
        upstream.clear_faults()
        if response.status_code != 200:
            found.wrong(f"{route}: HTTP {response.status_code}")
            continue
        text = response.content.decode()
        items = [response.json()] if route == "retrieve" else response.json()["data"]
        if worker_secret in text or any(entry.get("secret") is not None for entry in items):
            found.wrong(f"{route}: the work item's secret is passed through")
        if item.id not in text:
            found.wrong(f"{route}: the item itself is not")
    FIGURES.inputs(found.tried, len(found))
    assert not found, "\n".join(found)


@pytest.mark.django_db(transaction=True)
async def test_a_socket_from_another_port_scheme_or_host_of_the_same_machine_is_refused(
    live_runtime, upstream, settings
):
    env, _ = await sync_to_async(environment)(upstream, "origins")
    e = env["id"]
    cookie = await session_cookie(await sync_to_async(make_user)("viewer"))
    settings.CSRF_TRUSTED_ORIGINS = ["https://dash.example", "https://*.ops.example"]
    settings.ALLOWED_HOSTS = ["127.0.0.1", "dash.example", ".ops.example"]
    found = Findings()

    async def opens(host: str, origin: str, scheme: str = "ws") -> bool:
        socket = communicator(f"/ws/live/?env={e}", cookie=cookie, origin=origin.encode())
        socket.scope["headers"] = [(b"host", host.encode()), *socket.scope["headers"][1:]]
        socket.scope["scheme"] = scheme
        connected, _ = await socket.connect()
        if connected:
            await socket.disconnect()
        return bool(connected)

    refused = [
        ("another port", "127.0.0.1:8000", "http://127.0.0.1:18999", "ws"),
        ("the default port for a page on another", "127.0.0.1:8000", "http://127.0.0.1", "ws"),
        ("another port for a page on the default", "127.0.0.1", "http://127.0.0.1:8080", "ws"),
        ("http where the site is https", "127.0.0.1", "http://127.0.0.1", "wss"),
        ("https where the site is http", "127.0.0.1", "https://127.0.0.1", "ws"),
        ("an origin with a path", "127.0.0.1", "http://127.0.0.1/x", "ws"),
        ("an origin with credentials", "127.0.0.1", "http://u@127.0.0.1", "ws"),
        ("a trusted host over http", "dash.example", "http://dash.example", "wss"),
        ("a trusted host on another port", "dash.example", "https://dash.example:8443", "wss"),
        ("a look-alike of a trusted wildcard", "a.ops.example", "https://evilops.example", "wss"),
        ("a host not allowed", "evil.example", "http://evil.example", "ws"),
    ]
    accepted = [
        ("the same origin", "127.0.0.1", "http://127.0.0.1", "ws"),
        ("the same origin on a port", "127.0.0.1:8000", "http://127.0.0.1:8000", "ws"),
        ("the same origin over TLS", "127.0.0.1", "https://127.0.0.1", "wss"),
        ("a trusted origin", "127.0.0.1", "https://dash.example", "ws"),
        ("a trusted wildcard origin", "127.0.0.1", "https://a.ops.example", "ws"),
    ]
    for label, host, origin, scheme in refused:
        found.case()
        if await opens(host, origin, scheme):
            found.wrong(f"{label} ({origin} to {scheme}://{host}): accepted")
    for label, host, origin, scheme in accepted:
        found.case()
        if not await opens(host, origin, scheme):
            found.wrong(f"{label} ({origin} to {scheme}://{host}): refused")
    FIGURES.measured(
        "foreign-port origins", f"{len(refused)} refused as they should, {len(accepted)} accepted"
    )
    FIGURES.inputs(found.tried, len(found))
    assert not found, "\n".join(found)


@pytest.mark.django_db(transaction=True)
def test_a_page_on_another_port_cannot_open_the_live_socket_of_the_real_server(live_server_url, upstream):
    env, _ = environment(upstream, "ports")
    make_user("viewer", password=PASSWORD)
    browser = Client()
    assert browser.login(username="viewer", password=PASSWORD)
    port = int(live_server_url.rsplit(":", 1)[1])
    upgrade = {
        "Cookie": f"sessionid={browser.cookies['sessionid'].value}",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    path = f"/ws/live/?env={env['id']}"
    same = raw_request(live_server_url, "GET", path, headers={**upgrade, "Origin": live_server_url})
    assert same.status_code == 101, "the dashboard's own page must still open its socket"
    other = raw_request(
        live_server_url, "GET", path, headers={**upgrade, "Origin": f"http://127.0.0.1:{port + 1}"}
    )
    assert other.status_code == 403, f"a page on port {port + 1} opened the socket (HTTP {other.status_code})"
