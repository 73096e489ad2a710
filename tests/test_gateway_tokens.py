"""The token page: create a personal access token (shown once), list yours, revoke it; admins revoke anyone's."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from dashboard.gateway import tokens
from dashboard.gateway.models import PersonalAccessToken
from dashboard.models import AuditEntry
from dashboard.permissions import ensure_roles

pytestmark = pytest.mark.django_db

TOKEN_RE = re.compile(r"wqd_pat_[A-Za-z0-9_-]{40,}")


def signed_in(username: str, role: str | None) -> tuple[User, Client]:
    ensure_roles()
    user = User.objects.create_user(username=username)
    if role:
        user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return user, client


def test_it_creates_a_token_and_shows_it_once() -> None:
    user, client = signed_in("olivia", "operator")

    posted = client.post(reverse("token_create"), {"name": "cleanup-script", "expires_in_days": "30"})
    assert (posted.status_code, posted["Location"]) == (302, reverse("token_created"))
    response = client.get(posted["Location"])

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    shown = TOKEN_RE.findall(response.content.decode())
    assert shown and len(set(shown)) == 1
    token = PersonalAccessToken.objects.get()
    assert (token.user, token.name, token.status) == (user, "cleanup-script", "active")
    assert token.secret_hash == tokens.hash_secret(shown[0])
    assert 29 <= (token.expires_at - token.created_at).days <= 30
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.username, entry.token_name) == (
        "token_create",
        "succeeded",
        "olivia",
        "cleanup-script",
    )
    assert shown[0] not in repr(entry.sent)

    again = client.get(reverse("token_created"))  # a reload shows the list, not the secret, and mints nothing
    assert again.status_code == 302 and PersonalAccessToken.objects.count() == 1
    assert shown[0] not in client.get(again["Location"]).content.decode()
    listing = client.get(reverse("tokens")).content.decode()
    assert "cleanup-script" in listing and token.prefix in listing
    assert shown[0] not in listing


def test_it_refuses_a_token_without_a_name_or_with_an_unoffered_expiry() -> None:
    _, client = signed_in("olivia", "operator")

    assert client.post(reverse("token_create"), {"name": "", "expires_in_days": "30"}).status_code == 400
    assert client.post(reverse("token_create"), {"name": "x", "expires_in_days": "100000"}).status_code == 400
    assert not PersonalAccessToken.objects.exists()


def test_it_revokes_your_own_token() -> None:
    user, client = signed_in("olivia", "operator")
    token, secret = tokens.mint(user, "cleanup-script", 30)

    assert "Say why" in client.post(reverse("token_revoke", args=[token.pk])).content.decode()
    response = client.post(reverse("token_revoke", args=[token.pk]), {"reason": "script retired"})

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.status == "revoked" and token.revoked_by == user
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.username, entry.token_name) == ("token_revoke", "olivia", "cleanup-script")
    assert entry.reason == "script retired"
    assert "revoked" in client.get(reverse("tokens")).content.decode()


def test_it_does_not_let_you_revoke_someone_elses_token() -> None:
    owner, _ = signed_in("olivia", "operator")
    token, _ = tokens.mint(owner, "cleanup-script", 30)
    _, other = signed_in("otto", "operator")

    assert other.post(reverse("token_revoke", args=[token.pk])).status_code == 404
    assert "cleanup-script" not in other.get(reverse("tokens")).content.decode()
    token.refresh_from_db()
    assert token.status == "active"
    assert not AuditEntry.objects.exists()


def test_an_admin_sees_and_revokes_anyones_token() -> None:
    owner, _ = signed_in("olivia", "operator")
    token, _ = tokens.mint(owner, "cleanup-script", 30)
    admin, client = signed_in("ada", "admin")

    page = client.get(reverse("tokens")).content.decode()
    assert "cleanup-script" in page and "olivia" in page

    assert client.post(reverse("token_revoke", args=[token.pk]), {"reason": "left"}).status_code == 302
    token.refresh_from_db()
    assert token.status == "revoked" and token.revoked_by == admin
    entry = AuditEntry.objects.get()
    assert (entry.username, entry.action, (entry.sent or {})["owner"]) == ("ada", "token_revoke", "olivia")


def test_the_token_page_needs_a_role() -> None:
    _, client = signed_in("nora", None)

    assert client.get(reverse("tokens")).status_code == 403
    assert client.post(reverse("token_create"), {"name": "x", "expires_in_days": "7"}).status_code == 403
    assert not PersonalAccessToken.objects.exists()
    assert Client().get(reverse("tokens")).status_code == 302  # signed out: to the login page


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda user: user.set_password("a new long passphrase"), "password changed"),
        (lambda user: setattr(user, "is_active", False), "account deactivated"),
    ],
)
def test_a_password_change_or_deactivation_revokes_the_persons_tokens(change, why):
    ensure_roles()
    owner = User.objects.create_user("owner", password="an old long passphrase")
    other = User.objects.create_user("other", password="an old long passphrase")
    _, first = tokens.mint(owner, "nightly", 7)
    _, second = tokens.mint(owner, "ad hoc", 7)
    _, theirs = tokens.mint(other, "theirs", 7)
    owner.last_login = None
    owner.save(update_fields=["last_login"])  # an unrelated save revokes nothing
    assert PersonalAccessToken.objects.filter(revoked_at__isnull=True).count() == 3

    change(owner)
    owner.save()

    assert sorted(
        PersonalAccessToken.objects.filter(revoked_at__isnull=True).values_list("name", flat=True)
    ) == ["theirs"]
    entry = AuditEntry.objects.get(action="token_revoke")
    assert (entry.username, entry.reason, entry.sent["count"]) == ("owner", why, 2)
    assert first not in str(entry.sent) and second not in str(entry.sent)
