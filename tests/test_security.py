"""Security headers and the deploy check: the Content-Security-Policy on every response, no inline script, style
or event handler in any page the core renders, noindex, and ``manage.py check --deploy`` clean under production
settings."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pages_support import environment, make_user, start_work

from dashboard import audit

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parent.parent


def csp_directives(response) -> dict[str, str]:
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: " ".join(part.split()[1:]) for part in policy.split("; ")}


def test_every_response_carries_the_policy_and_noindex(client):
    for response in (client.get("/accounts/login/"), client.get("/robots.txt"), client.get("/audit/")):
        directives = csp_directives(response)
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["img-src"] == "'self' data:"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["base-uri"] == "'none'"
        assert directives["form-action"] == "'self'"
        assert directives["object-src"] == "'none'"
        # Websockets only to this host, not to any ws: origin.
        assert directives["connect-src"] == "'self' wss://testserver ws://testserver"
        assert response["X-Robots-Tag"] == "noindex, nofollow"
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Content-Type-Options"] == "nosniff"


def test_over_https_websockets_must_be_secure(client):
    response = client.get("/accounts/login/", secure=True)

    assert csp_directives(response)["connect-src"] == "'self' wss://testserver"


def test_robots_txt_keeps_crawlers_out(client):
    response = client.get("/robots.txt")

    assert response.status_code == 200
    assert response.content.decode() == "User-agent: *\nDisallow: /\n"


def inline_code(html: str) -> list[str]:
    """Inline scripts, inline event handlers, style attributes and <style> blocks: what the CSP would refuse."""
    found = [m for m in re.findall(r"<script\b[^>]*>", html) if "src=" not in m]
    found += re.findall(r"<[a-zA-Z][^<>]*\son[a-z]+\s*=", html)
    found += re.findall(r"<[a-zA-Z][^<>]*\sstyle\s*=", html)
    found += re.findall(r"<style\b", html)
    found += re.findall(r"javascript:", html)
    return found


def test_no_page_of_the_core_has_inline_code(client, upstream, settings):
    settings.STUCK_HEARTBEAT_SECONDS = 0
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key, metadata={"owner": "dana"})
    client.force_login(make_user("admin"))
    audit.record(
        user=None, action="stop", outcome="failed", work_id=item.id, reason='<img src=x onerror="alert(1)">'
    )
    base = f"/environments/{env['id']}/work/{item.id}"
    pages = {
        "metadata form": client.get(f"{base}/metadata/"),
        "metadata preview": client.post(
            f"{base}/metadata/",
            {"step": "preview", "loaded": '{"owner":"dana"}', "key": ["owner"], "value": ["x"]},
        ),
        "stop confirmation": client.get(f"{base}/force-stop/"),
        "bulk confirmation": client.get(f"/environments/{env['id']}/bulk/?selection=stuck"),
        "audit log": client.get("/audit/"),
        "configuration": client.get("/configure/"),
    }
    client.force_login(make_user("viewer"))
    pages["refusal"] = client.post(f"{base}/stop/", {"reason": "x"})

    for name, response in pages.items():
        assert response.status_code in (200, 403), name
        assert "Content-Security-Policy" in response, name
        assert inline_code(response.content.decode()) == [], name
    # The hostile reason is in the audit log as text, not markup.
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in pages["audit log"].content.decode()


def test_the_deploy_check_is_clean_under_production_settings(tmp_path):
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "example.com",
        "SESSION_COOKIE_SECURE": "1",
        "CSRF_COOKIE_SECURE": "1",
        "SECURE_SSL_REDIRECT": "1",
        "DASHBOARD_DATA_DIR": str(tmp_path),
    }

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
