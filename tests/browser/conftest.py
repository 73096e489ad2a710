"""Browser tests: Debian's chromium driven by Playwright against the real ASGI app.

- ``live_server_url``: uvicorn serving ``dashboard.asgi:application`` in a thread of the test process, so it shares
  the test database (``transactional_db``: what a test writes is committed and visible to the server), configured
  against the test emulator (the ``upstream`` fixture).
- ``browser`` (per module): chromium from ``CHROMIUM_PATH`` (default ``/usr/bin/chromium``). Missing chromium skips the
  browser tests with the reason, unless ``REQUIRE_SERVICES=1``, where it fails them.
- ``page``: a fresh browser context and page per test. Any console error (a CSP violation included) or uncaught
  page error fails the test. ``shoot(name)`` saves a screenshot under ``test-artifacts/screenshots/``.
- ``sign_in(role)``: a user in that role, signed in through the login form as a person does.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pages_support import PASSWORD

from workqueue.emulator.launch import free_port

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    if not os.access(path, os.X_OK):
        reason = (
            f"Debian's chromium is not installed at {path} (apt-get install chromium, or set CHROMIUM_PATH)"
        )
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(reason + "; REQUIRE_SERVICES=1 needs it")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str, django_db_setup: None) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread while the browser is open, so Django would
    # refuse the test body's database calls (and the test database's flushes) as if they came from async code.
    # They do not: allow them, for the browser test modules only. The test database exists before this starts.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def live_server_url(transactional_db: None, upstream: Any, settings: Any) -> Iterator[str]:  # noqa: F811
    import uvicorn

    # Test passwords need no slow hashing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            "dashboard.asgi:application", host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


class BrowserErrors(list[str]):
    def console(self, message: Any) -> None:
        if message.type == "error":
            self.append(f"console error: {message.text} ({message.location.get('url', '')})")

    def page_error(self, error: Any) -> None:
        self.append(f"page error: {error}")


@pytest.fixture
def page(browser: Any, live_server_url: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server_url, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors = BrowserErrors()
    page.on("console", errors.console)
    page.on("pageerror", errors.page_error)
    page.browser_errors = errors
    yield page
    context.close()
    if errors:
        pytest.fail(f"{request.node.name}: the browser reported errors:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
def shoot(page: Any, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """``shoot("overview")`` saves the page as test-artifacts/screenshots/<test>-<n>-overview.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test_name = re.sub(r"[^\w-]+", "-", request.node.name).strip("-")
    taken: list[Path] = []

    def screenshot(name: str) -> Path:
        path = SCREENSHOTS / f"{test_name}-{len(taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        return path

    return screenshot


@pytest.fixture
def sign_in(page: Any) -> Callable[..., None]:
    """``sign_in("operator")``: a user with that name and role, signed in through the login form."""
    from pages_support import make_user

    def sign_in_as(role: str, username: str | None = None) -> None:
        make_user(role, username=username, password=PASSWORD)
        page.goto("/accounts/login/")
        page.fill("#id_username", username or role)
        page.fill("#id_password", PASSWORD)
        page.click("main button[type=submit]")
        page.wait_for_url(lambda url: "/accounts/login/" not in url)

    return sign_in_as
