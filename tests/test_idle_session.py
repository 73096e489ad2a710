"""A person is signed out after SESSION_IDLE_MINUTES without a request; activity keeps the session alive."""

from __future__ import annotations

import time

import pytest
from pages_support import make_user

from dashboard.security import IDLE_KEY

pytestmark = pytest.mark.django_db


def set_seen(client, seconds_ago: int) -> None:
    session = client.session
    session[IDLE_KEY] = int(time.time()) - seconds_ago
    session.save()


def test_an_idle_session_is_signed_out(client, settings):
    settings.SESSION_IDLE_MINUTES = 30
    client.force_login(make_user("viewer"))
    assert client.get("/audit/").status_code == 200

    set_seen(client, 31 * 60)
    response = client.get("/audit/")

    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in client.session


def test_activity_keeps_it_alive(client, settings):
    settings.SESSION_IDLE_MINUTES = 30
    client.force_login(make_user("viewer"))
    set_seen(client, 29 * 60)
    assert client.get("/audit/").status_code == 200  # within the limit: renewed
    assert time.time() - client.session[IDLE_KEY] < 5
    assert client.get("/audit/").status_code == 200
