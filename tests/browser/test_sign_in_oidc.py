"""Sign-in through an identity provider: a real OpenID provider (the npm package oidc-provider, run by
tests/oidc/provider.mjs on a loopback port) and the dashboard on a real server, driven by chromium, and by httpx
for the answers a browser would never send (a forged state, a provider with another issuer, an expired token).

The provider is installed by ``make test`` (npm ci in tests/oidc). Without node or that install the tests skip with
the reason, unless ``REQUIRE_SERVICES=1``, where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pages_support import environment, start_work
from playwright.sync_api import expect

from workqueue.emulator.launch import free_port

REPO = Path(__file__).resolve().parents[2]
PROVIDER_DIR = REPO / "tests" / "oidc"
CLIENT_ID = "ops-dashboard"
CLIENT_SECRET = "client-secret-never-shown-0123456789"
PASSWORD = "provider-password"
ACCOUNTS = {
    "alice": {"password": PASSWORD, "email": "alice@example.com", "name": "Alice", "groups": ["ops-admins"]},
    "olive": {
        "password": PASSWORD,
        "email": "olive@example.com",
        "name": "Olive",
        "groups": ["ops", "everyone"],
    },
    "uma": {"password": PASSWORD, "email": "uma@example.com", "name": "Uma", "groups": ["contractors"]},
}
ROLE_MAP = {"ops-admins": "admin", "ops": "operator", "viewers": "viewer"}


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    reason = ""
    if path is None:
        reason = "node is not installed (apt-get install nodejs npm)"
    elif not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        reason = (
            "the test identity provider is not installed (npm ci --prefix tests/oidc, which make test runs)"
        )
    if reason:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(reason + "; REQUIRE_SERVICES=1 needs it")
        pytest.skip(reason)
    assert path is not None
    return path


@pytest.fixture(scope="session")
def provider_keys() -> dict[str, Any]:
    """The provider's signing key (RS256), kept here too so a test can sign a token the way the provider does."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private))
    jwk.update({"kid": "test-key-1", "alg": "RS256", "use": "sig"})
    return {"private": private, "jwks": {"keys": [jwk]}}


@dataclass
class Provider:
    issuer: str
    port: int
    process: subprocess.Popen[bytes]


@pytest.fixture
def start_provider(
    node: str, provider_keys: dict[str, Any], tmp_path: Path
) -> Iterator[Callable[..., Provider]]:
    started: list[Provider] = []

    def start(redirect_uri: str, **env: str) -> Provider:
        port = free_port()
        log = (tmp_path / f"provider-{port}.log").open("wb")
        process = subprocess.Popen(
            [node, "provider.mjs"],
            cwd=PROVIDER_DIR,
            env={
                "PATH": os.environ.get("PATH", ""),
                "PROVIDER_PORT": str(port),
                "PROVIDER_JWKS": json.dumps(provider_keys["jwks"]),
                "CLIENT_ID": CLIENT_ID,
                "CLIENT_SECRET": CLIENT_SECRET,
                "REDIRECT_URI": redirect_uri,
                "ACCOUNTS": json.dumps(ACCOUNTS),
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        provider = Provider(
            issuer=env.get("PROVIDER_ISSUER", f"http://127.0.0.1:{port}"), port=port, process=process
        )
        started.append(provider)
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError("the provider exited:\n" + (tmp_path / f"provider-{port}.log").read_text())
            try:
                httpx.get(f"http://127.0.0.1:{port}/jwks", timeout=1).raise_for_status()
                return provider
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    yield start
    for provider in started:
        provider.process.terminate()
        provider.process.wait(timeout=10)


@pytest.fixture
def sso(
    live_server_url: str, start_provider: Callable[..., Provider], settings: Any
) -> Callable[..., Provider]:
    """``sso(**provider_env)``: a provider registered for this dashboard, and the dashboard configured for it."""

    def configure(**env: str) -> Provider:
        provider = start_provider(f"{live_server_url}/oidc/callback/", **env)
        settings.OIDC_ISSUER = f"http://127.0.0.1:{provider.port}"
        settings.OIDC_RP_CLIENT_ID = CLIENT_ID
        settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
        settings.OIDC_ROLE_MAP = ROLE_MAP
        settings.OIDC_ROLE_CLAIM = "groups"
        settings.OIDC_PROVIDER_NAME = "Example SSO"
        settings.AUTHENTICATION_BACKENDS = [
            "dashboard.login_throttle.LoginThrottleBackend",
            "dashboard.oidc.ProviderBackend",
            "django.contrib.auth.backends.ModelBackend",
        ]
        return provider

    return configure


def sign_in_at_provider(page: Any, login: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Sign in with Example SSO").click()
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()


def test_an_operator_signs_in_through_the_provider_gets_the_mapped_role_and_signs_out(
    page, shoot, sso, upstream, live_server_url
):
    from django.contrib.auth.models import User

    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, state="active")
    sso()
    sign_in_at_provider(page, "olive")

    page.wait_for_url(f"{live_server_url}/")
    expect(page.locator(".site-user .username")).to_have_text("olive")
    expect(page.locator(".site-user .role")).to_contain_text("perator")
    shoot("overview")
    page.goto(f"/environments/{env['id']}/work/{item.id}/")
    expect(page.locator('[data-action="stop"]')).to_be_visible()
    expect(page.locator('[data-action="force_stop"]')).to_have_count(0)

    # The account is the provider's subject's, without a password; its role is the mapped group's.
    user = User.objects.get(sign_in_identities__subject="olive")
    assert list(user.groups.values_list("name", flat=True)) == ["operator"]
    assert not user.has_usable_password()

    page.get_by_role("button", name="Log out").click()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))


def test_someone_whose_groups_map_to_no_role_is_refused(page, sso, live_server_url):
    from django.contrib.auth.models import User

    sso()
    with page.expect_response(lambda r: "/oidc/callback/" in r.url) as answer:
        sign_in_at_provider(page, "uma")
    assert answer.value.status == 403
    expect(page.get_by_role("alert")).to_contain_text("none of your groups")
    # The refused answer is expected: its console line (which may arrive a moment later) is not an error here.
    for _ in range(40):
        if any("status of 403" in e for e in page.browser_errors):
            break
        page.wait_for_timeout(50)
    page.browser_errors[:] = [e for e in page.browser_errors if "status of 403" not in e]
    assert not User.objects.filter(sign_in_identities__subject="uma").exists()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))


def test_a_demotion_at_the_provider_takes_effect_at_the_next_sign_in(page, sso, live_server_url):
    from django.contrib.auth.models import Group, User

    from dashboard.models import AuditEntry, SignInIdentity

    sso()
    # Olive had been an admin here (through the provider); the provider now says she is in "ops".
    user = User.objects.create_user("olive")
    user.groups.add(Group.objects.get_or_create(name="admin")[0])
    SignInIdentity.objects.create(
        user=user, issuer=f"http://127.0.0.1:{_provider_port(live_server_url)}", subject="olive"
    )
    sign_in_at_provider(page, "olive")
    page.wait_for_url(f"{live_server_url}/")
    expect(page.locator(".site-user .role")).to_contain_text("perator")
    assert list(user.groups.values_list("name", flat=True)) == ["operator"]
    entry = AuditEntry.objects.get(action="role_from_provider")
    assert entry.sent == {"role": "operator", "was": "admin"}


def _provider_port(live_server_url: str) -> int:
    from django.conf import settings

    return int(str(settings.OIDC_ISSUER).rsplit(":", 1)[1])


def test_the_password_form_is_gone_and_refused_when_password_login_is_off(
    page, sso, settings, live_server_url
):
    from pages_support import PASSWORD as LOCAL_PASSWORD
    from pages_support import make_user

    sso()
    settings.PASSWORD_LOGIN = False
    make_user("admin", username="root", password=LOCAL_PASSWORD)
    page.goto("/accounts/login/")
    expect(page.get_by_role("link", name="Sign in with Example SSO")).to_be_visible()
    expect(page.locator("#id_password")).to_have_count(0)
    csrf = page.context.cookies()
    token = next(c["value"] for c in csrf if c["name"] == "csrftoken")
    answer = page.request.post(
        f"{live_server_url}/accounts/login/",
        form={"username": "root", "password": LOCAL_PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{live_server_url}/accounts/login/"},
    )
    assert answer.status == 403
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))


# --- Answers a browser would not send: httpx, following the provider's forms ---------------------------------


def _flow(client: httpx.Client, live_server_url: str, login: str) -> httpx.Response:
    """Start at the dashboard, sign in at the provider, and return the callback's answer (not followed)."""
    answer = client.get(f"{live_server_url}/oidc/authenticate/")
    assert answer.status_code == 302, answer.text
    for _ in range(10):
        location = answer.headers["location"]
        if "/oidc/callback/" in location:
            return client.get(location)
        answer = client.get(httpx.URL(str(answer.url)).join(location))
        if answer.status_code == 200 and 'name="login"' in answer.text:
            action = re.search(r'action="([^"]+)"', answer.text)
            assert action is not None
            answer = client.post(
                httpx.URL(str(answer.url)).join(action.group(1)), data={"login": login, "password": PASSWORD}
            )
    raise AssertionError("the provider never sent the browser back")


def test_a_forged_state_is_refused(sso, live_server_url):
    sso()
    with httpx.Client(timeout=10) as client:
        client.get(f"{live_server_url}/oidc/authenticate/")  # this browser started a sign-in
        answer = client.get(f"{live_server_url}/oidc/callback/", params={"code": "stolen", "state": "forged"})
        assert answer.status_code == 400
        assert "not started in this browser" in answer.text
        assert "sessionid" not in client.cookies or client.get(f"{live_server_url}/").status_code == 302


def test_an_answer_naming_another_issuer_is_refused(sso, live_server_url):
    """RFC 9207: the provider names itself in its answer (iss); another provider's answer is a mix-up."""
    sso()
    with httpx.Client(timeout=10) as client:
        answer = _flow(client, live_server_url, "olive")
        assert answer.status_code == 302  # the real answer signs in
        client.cookies.clear()
        started = client.get(f"{live_server_url}/oidc/authenticate/")
        state = re.search(r"state=([\w-]+)", started.headers["location"])
        assert state is not None
        answer = client.get(
            f"{live_server_url}/oidc/callback/",
            params={"code": "x", "state": state.group(1), "iss": "https://attacker.example"},
        )
        assert answer.status_code == 400
        assert "not http://127.0.0.1:" in answer.text
        assert client.get(f"{live_server_url}/").status_code == 302


def test_an_expired_id_token_is_refused(sso, live_server_url, caplog):
    # The provider's clock runs two minutes behind and its ID tokens last one: they expired before they arrive.
    sso(CLOCK_OFFSET_SECONDS="-120", ID_TOKEN_TTL_SECONDS="60")
    with httpx.Client(timeout=10) as client:
        answer = _flow(client, live_server_url, "olive")
        assert answer.status_code == 400
        assert "The ID token has expired." in answer.text
        assert client.get(f"{live_server_url}/").status_code == 302
    assert CLIENT_SECRET not in caplog.text


def test_a_provider_naming_another_issuer_is_refused(sso, live_server_url, settings):
    # The provider answers at 127.0.0.1 but says it is localhost: the dashboard's issuer is not the provider's.
    provider = sso(PROVIDER_ISSUER="http://localhost:0")
    assert provider.issuer == "http://localhost:0"
    with httpx.Client(timeout=10) as client:
        answer = client.get(f"{live_server_url}/oidc/authenticate/")
        assert answer.status_code == 502
        assert "must be exactly that" in answer.text


def test_an_id_token_from_another_issuer_or_for_another_client_is_refused(sso, provider_keys, settings):
    """The backend's check of the token itself, with the provider's own key (served at its JWKS)."""
    import jwt

    from dashboard.oidc import ProviderBackend, SignInRefused, provider_metadata

    sso()
    backend = ProviderBackend()
    backend.OIDC_OP_JWKS_ENDPOINT = provider_metadata().jwks_uri
    now = int(time.time())
    good = {
        "iss": settings.OIDC_ISSUER,
        "aud": CLIENT_ID,
        "sub": "olive",
        "iat": now,
        "exp": now + 300,
        "nonce": "n",
    }

    def token(**changes: Any) -> str:
        return jwt.encode(
            {**good, **changes}, provider_keys["private"], algorithm="RS256", headers={"kid": "test-key-1"}
        )

    assert backend.verify_token(token(), nonce="n")["sub"] == "olive"
    for changes, message in [
        ({"iss": "http://127.0.0.1:1"}, "was not issued by"),
        ({"aud": "another-client"}, "not meant for this dashboard"),
        ({"exp": now - 60}, "has expired"),
        ({"nonce": "other"}, "nonce"),
    ]:
        with pytest.raises(SignInRefused, match=message):
            backend.verify_token(token(**changes), nonce="n")


def test_losing_every_mapped_group_ends_access_for_the_persons_tokens_too(sso, upstream, live_server_url):
    from django.contrib.auth.models import Group, User

    from dashboard.gateway import tokens
    from dashboard.models import SignInIdentity

    environment(upstream, "east")
    sso()
    # Uma was an operator here with a token for a script; the provider now has her in "contractors" only.
    user = User.objects.create_user("uma")
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    SignInIdentity.objects.create(
        user=user, issuer=f"http://127.0.0.1:{_provider_port(live_server_url)}", subject="uma"
    )
    _, secret = tokens.mint(user, "cleanup-script", 30)
    listing = f"{live_server_url}/gateway/v1/environments"
    assert httpx.get(listing, headers={"Authorization": f"Bearer {secret}"}, timeout=10).status_code == 200

    with httpx.Client(timeout=10) as client:
        answer = _flow(client, live_server_url, "uma")
        assert answer.status_code == 403
        assert "none of your groups" in answer.text
    assert list(user.groups.values_list("name", flat=True)) == []
    assert httpx.get(listing, headers={"Authorization": f"Bearer {secret}"}, timeout=10).status_code == 403


def test_a_provider_that_does_not_answer_gets_a_page_saying_so(live_server_url, settings):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    answer = httpx.get(f"{live_server_url}/oidc/authenticate/", timeout=10)
    assert answer.status_code == 502
    assert "discovery document" in answer.text and "could not be read (ConnectError)" in answer.text
    assert CLIENT_SECRET not in answer.text
