"""Failed logins are throttled per username and per address on every login form (django-axes, counted in the
database), a lockout is audited, and common or numeric passwords are refused."""

from __future__ import annotations

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client
from pages_support import PASSWORD, make_user

from dashboard.models import AuditEntry

pytestmark = pytest.mark.django_db


def attempt(client: Client, path: str, username: str, password: str):
    return client.post(path, {"username": username, "password": password})


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_guessing_a_password_is_stopped_after_the_limit(path, settings):
    make_user("admin", username="alice", password=PASSWORD)
    guesser = Client()
    limit = settings.AXES_FAILURE_LIMIT
    answers = [attempt(guesser, path, "alice", f"guess-{n}").status_code for n in range(limit)]

    # Wrong passwords get the form again, until the limit-th, which locks the username and the address.
    assert answers == [200] * (limit - 1) + [429]
    # Locked now: even the right password is refused, with a page that says why.
    locked = attempt(guesser, path, "alice", PASSWORD)
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode()
    assert "_auth_user_id" not in guesser.session
    entry = AuditEntry.objects.get(action="login_locked_out")
    assert (entry.username, entry.outcome) == ("alice", "denied")
    assert PASSWORD not in str(entry.sent) and "guess-" not in str(entry.sent)
    from hold_support import FIGURES

    FIGURES.measured(
        f"login guesses ({path})", f"{limit + 1} tried, refused from guess {limit} on (429), one audit entry"
    )


def test_the_address_is_counted_across_usernames(settings):
    for name in ("bob", "carol"):
        make_user("viewer", username=name, password=PASSWORD)
    sprayer = Client()
    for n in range(settings.AXES_FAILURE_LIMIT):
        attempt(sprayer, "/accounts/login/", f"user{n}", "password1")

    assert attempt(sprayer, "/accounts/login/", "bob", PASSWORD).status_code == 429
    # From another address, bob signs in as usual.
    elsewhere = Client(REMOTE_ADDR="10.0.0.9")
    assert attempt(elsewhere, "/accounts/login/", "carol", PASSWORD).status_code == 302


def test_a_success_before_the_limit_clears_the_count(settings):
    make_user("viewer", username="dave", password=PASSWORD)
    person = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(person, "/accounts/login/", "dave", "typo")
    assert attempt(person, "/accounts/login/", "dave", PASSWORD).status_code == 302
    person.logout()
    attempt(person, "/accounts/login/", "dave", "typo")
    assert attempt(person, "/accounts/login/", "dave", PASSWORD).status_code == 302


@pytest.mark.parametrize("weak", ["password", "12345678", "admin123", "84736251920"])
def test_common_and_numeric_passwords_are_refused(weak):
    with pytest.raises(ValidationError):
        validate_password(weak)
