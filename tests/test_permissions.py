"""Roles and access: the role matrix, the groups the data migration creates, closed by default (no role → 403,
signed out → login), forged POSTs refused with an audit entry, CSRF enforced on plain and htmx POSTs, and the item
actions a person is offered by role."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import AnonymousUser, Group, User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.template.loader import render_to_string
from django.test import Client
from pages_support import environment, make_user, start_work

from dashboard.models import AuditEntry
from dashboard.permissions import ACTIONS, Role, can, capabilities, ensure_roles, role_of

pytestmark = pytest.mark.django_db

MATRIX = {
    "viewer": {"view"},
    "operator": {"view", "patch_metadata", "stop", "bulk"},
    "admin": set(ACTIONS),
}


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_the_role_matrix(role):
    user = make_user(role)

    assert role_of(user) == Role[role.upper()]
    assert {action for action in ACTIONS if can(user, action)} == MATRIX[role]
    assert capabilities(user) == {action: action in MATRIX[role] for action in ACTIONS}


def test_the_highest_role_wins_and_a_superuser_is_an_admin():
    user = make_user("viewer", "both")
    user.groups.add(Group.objects.get(name="operator"))
    assert role_of(User.objects.get(pk=user.pk)) == Role.OPERATOR
    assert role_of(User.objects.create_superuser("root", password="x")) == Role.ADMIN


def test_no_role_means_no_access():
    inactive = make_user("admin", "gone")
    inactive.is_active = False
    for user in (make_user("none"), AnonymousUser(), inactive, None):
        assert role_of(user) is None
        assert not any(can(user, action) for action in ACTIONS)
    assert not can(make_user("admin", "boss"), "launch_missiles")


def test_the_data_migration_creates_the_three_groups():
    Group.objects.all().delete()
    state = MigrationExecutor(connection).loader.project_state(("dashboard", "0002_roles"))
    migration = __import__("dashboard.migrations.0002_roles", fromlist=["create_roles"])

    migration.create_roles(state.apps, SimpleNamespace(connection=connection))
    ensure_roles()  # idempotent next to it

    assert sorted(Group.objects.values_list("name", flat=True)) == ["admin", "operator", "viewer"]


@pytest.mark.parametrize(
    "path",
    [
        "/audit/",
        "/audit/export.csv",
        "/configure/",
        "/environments/env_a/work/work_b/stop/",
        "/environments/env_a/work/work_b/metadata/",
        "/environments/env_a/bulk/",
    ],
)
def test_signed_out_visitors_are_sent_to_login(client, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_a_signed_in_user_without_a_role_gets_403(client, upstream):
    client.force_login(make_user("none"))

    response = client.get("/audit/")

    assert response.status_code == 403
    assert "Your account has no role in this dashboard yet" in response.content.decode()


def test_a_viewers_forged_stop_is_refused_and_audited(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    client.force_login(make_user("viewer"))
    upstream.reset_requests()

    response = client.post(f"/environments/{env['id']}/work/{item.id}/force-stop/", {"reason": "mine now"})

    assert response.status_code == 403
    # Force-stop has its own address and permission: refused as the force-stop it is, needing an admin.
    assert "Your role (viewer) does not allow this: it needs the admin role." in response.content.decode()
    assert upstream.requests()["total"] == 0
    entry = AuditEntry.objects.get()
    assert (
        entry.action,
        entry.outcome,
        entry.username,
        entry.environment_id,
        entry.work_id,
        entry.reason,
    ) == (
        "force_stop",
        "denied",
        "viewer",
        env["id"],
        item.id,
        "mine now",
    )
    assert entry.sent == {"reason": ["mine now"]}


def test_a_forged_configuration_change_is_refused_and_audited(client):
    client.force_login(make_user("operator"))

    key = "sk-ant-oat01-" + "x" * 40
    response = client.post(
        "/configure/", {"environment_id": "env_a", "name": key, "key": "plain-secret-value"}
    )

    assert response.status_code == 403
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome) == ("configure", "denied")
    # What was tried is recorded, but never a credential: the key field is left out, anything key-shaped redacted.
    assert entry.sent == {"environment_id": ["env_a"], "name": ["[redacted]"]}


def test_csrf_is_enforced_on_action_posts(upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("operator"))
    url = f"/environments/{env['id']}/work/{item.id}/stop/"
    upstream.reset_requests()

    refused = client.post(url, {"reason": "no token"})

    assert refused.status_code == 403
    assert "CSRF" in refused.content.decode()
    assert upstream.requests()["total"] == 0
    assert not AuditEntry.objects.exists()

    client.get(url)  # the confirmation page sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    accepted = client.post(
        url, {"reason": "with the htmx header"}, headers={"X-CSRFToken": token, "HX-Request": "true"}
    )

    assert accepted.status_code == 302
    entry = AuditEntry.objects.get()
    assert (entry.outcome, entry.via) == ("succeeded", "htmx")


@pytest.mark.parametrize(
    ("role", "state", "offered"),
    [
        ("viewer", "active", []),
        ("operator", "active", ["patch_metadata", "stop"]),
        ("admin", "active", ["patch_metadata", "stop", "force_stop"]),
        ("admin", "stopped", ["patch_metadata"]),
    ],
)
def test_the_item_actions_offered_by_role(role, state, offered):
    user = make_user(role)
    item = SimpleNamespace(environment_id="env_a", id="work_b", state=state)

    html = render_to_string(
        "dashboard/actions/_item_actions.html", {"item": item, "user_can": capabilities(user)}
    )

    assert re.findall(r'data-action="(\w+)"', html) == offered
    if not offered:
        assert "<a" not in html and "<button" not in html and "<form" not in html


def test_a_refused_request_is_audited_in_a_few_kilobytes(client, upstream):
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    client.force_login(make_user("viewer"))
    fields = {f"field{n}": ["v" * 600] * 20 for n in range(49)}

    response = client.post(
        f"/environments/{env['id']}/work/{item.id}/stop/", {"reason": "r" * 5000, **fields}
    )

    assert response.status_code == 403
    entry = AuditEntry.objects.get()
    assert entry.outcome == "denied"
    assert set(entry.sent) >= set(fields)  # every field is named
    stored = len(json.dumps(entry.sent)) + len(entry.reason)
    assert stored < 8 * 1024, stored
    from hold_support import FIGURES

    sent = sum(len(v) for values in fields.values() for v in values) + 5000
    FIGURES.measured("audit growth per refused request", f"{sent} characters sent, {stored} bytes stored")


def test_refusals_are_audited_within_an_allowance_per_person(client, upstream, settings):  # noqa: F811
    """A viewer hammering an action they may not take cannot grow the audit log without bound: every attempt is
    still refused, the first AUDIT_REFUSALS_PER_MINUTE are written (the last saying so), the rest only counted."""
    from prometheus_client import REGISTRY

    settings.AUDIT_REFUSALS_PER_MINUTE = 5
    env, key = environment(upstream, "east")
    item = start_work(upstream, env["id"], key)
    client.force_login(make_user("viewer"))
    unrecorded = REGISTRY.get_sample_value("dashboard_audit_refusals_unrecorded_total") or 0.0

    answers = [
        client.post(f"/environments/{env['id']}/work/{item.id}/stop/", {"reason": f"try {n}"}).status_code
        for n in range(12)
    ]

    assert answers == [403] * 12
    entries = list(AuditEntry.objects.order_by("sequence"))
    assert [e.reason for e in entries] == [f"try {n}" for n in range(5)]
    assert all(e.outcome == "denied" for e in entries)
    assert "further ones this minute are counted" in entries[-1].error
    assert REGISTRY.get_sample_value("dashboard_audit_refusals_unrecorded_total") - unrecorded == 7
    # Someone else's refusals have an allowance of their own.
    client.force_login(make_user("viewer", username="vera"))
    assert (
        client.post(f"/environments/{env['id']}/work/{item.id}/stop/", {"reason": "mine"}).status_code == 403
    )
    assert AuditEntry.objects.latest("sequence").reason == "mine"
