"""Environment keys: entered by an admin, stored encrypted (the database never holds the key), shown masked only and
never sent back to a browser, replaced and removed with audit entries, checked against the emulator; the deployment's
ENVIRONMENT_KEYS (malformed → refused at start); admins only."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from pages_support import environment, make_user, store_key

from dashboard import crypto
from dashboard import upstream as dashboard_upstream
from dashboard.models import AuditEntry, EnvironmentKey
from dashboard.settings import _environment_keys

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(client):
    client.force_login(make_user("admin"))
    return client


def raw_rows() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM dashboard_environmentkey")
        return repr(cursor.fetchall())


def test_an_admin_adds_a_key_that_is_stored_encrypted_and_shown_masked(admin, upstream):
    env, key = environment(upstream, "east", with_key=False)

    response = admin.post("/configure/", {"environment_id": env["id"], "name": "East", "key": key})

    assert response.status_code == 302 and response["Location"] == "/configure/"
    assert key not in raw_rows()  # not in any column
    assert EnvironmentKey.objects.get().key() == key
    page = admin.get("/configure/").content.decode()
    assert f"<code data-masked-key>sk-ant-…{key[-4:]}</code>" in page
    assert key not in page and key[:-4] not in page
    assert 'name="key" value=""' in page
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome, entry.environment_id) == (
        "configure_key_set",
        "succeeded",
        env["id"],
    )
    assert entry.sent == {"name": "East", "key": f"sk-ant-…{key[-4:]}", "replaced": False}
    # The key works: the dashboard can now list this environment's work.
    assert dashboard_upstream.environment_key_sync(env["id"]) == key


def test_a_key_the_api_refuses_does_not_replace_a_working_one(admin, upstream):
    env, key = environment(upstream, "east")
    wrong = "sk-ant-oat01-" + "w" * 40

    response = admin.post("/configure/", {"environment_id": env["id"], "key": wrong})

    assert response.status_code == 400
    assert EnvironmentKey.objects.get().key() == key  # the working key is kept
    html = response.content.decode()
    assert f"Not saved: listing the work of {env['id']} with it failed: " in html
    assert "The key in use is kept." in html and "(request-id " in html
    assert 'name="save_anyway"' in html
    assert wrong not in html
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.outcome) == ("configure_key_set", "failed")
    assert entry.sent == {"name": "", "key": "sk-ant-…wwww", "replaced": False}

    # An admin who confirms saves it all the same, and is told it did not work.
    response = admin.post("/configure/", {"environment_id": env["id"], "key": wrong, "save_anyway": "1"})

    assert response.status_code == 302
    assert EnvironmentKey.objects.get().key() == wrong
    assert AuditEntry.objects.order_by("-sequence").first().sent == {
        "name": "",
        "key": "sk-ant-…wwww",
        "replaced": True,
    }
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert texts[0] == f"Environment key for {env['id']} replaced (sk-ant-…wwww)."
    assert texts[1].startswith(f"Saved, but listing the work of {env['id']} with it failed: ")
    assert "(request-id " in texts[1]
    assert all(wrong not in text for text in texts)


def test_invalid_input_is_refused_and_the_key_is_not_echoed(admin, upstream):
    secret = "sk-ant-oat01-has a space in it"

    response = admin.post("/configure/", {"environment_id": "not-an-env", "key": secret})

    assert response.status_code == 400
    page = response.content.decode()
    assert "is not a valid environment id" in page
    assert "An environment key has no spaces or line breaks" in page
    assert secret not in page
    assert not EnvironmentKey.objects.exists() and not AuditEntry.objects.exists()


def test_an_admin_removes_a_key(admin, upstream):
    env, key = environment(upstream, "east")

    url = f"/configure/keys/{env['id']}/remove/"
    confirm = admin.get(url)
    assert confirm.status_code == 200 and f"sk-ant-…{key[-4:]}" in confirm.content.decode()
    assert "Say why" in admin.post(url).content.decode()  # no reason: nothing removed
    assert EnvironmentKey.objects.exists() and not AuditEntry.objects.exists()

    response = admin.post(url, {"reason": "key rotated in the Console"})

    assert response.status_code == 302
    assert not EnvironmentKey.objects.exists()
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.sent) == ("configure_key_remove", {"key": f"sk-ant-…{key[-4:]}"})
    assert entry.reason == "key rotated in the Console"


def test_deployment_keys_are_listed_masked_and_yield_to_entered_ones(admin, upstream, settings):
    settings.ENVIRONMENT_KEYS = {
        "env_deployed": "sk-ant-oat01-deployed-key-1234",
        "env_both": "sk-ant-oat01-old-9999",
    }
    store_key("env_both", "sk-ant-oat01-entered-key-5678")

    page = admin.get("/configure/").content.decode()

    assert "sk-ant-…1234" in page and "deployment (ENVIRONMENT_KEYS)" in page
    assert "sk-ant-…5678" in page and "(the deployment's key applies again)" in page
    assert "deployed-key" not in page and "entered-key" not in page
    assert dashboard_upstream.environment_key_sync("env_deployed") == "sk-ant-oat01-deployed-key-1234"
    assert dashboard_upstream.environment_key_sync("env_both") == "sk-ant-oat01-entered-key-5678"
    assert dashboard_upstream.environment_key_sync("env_none") is None


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_configure(client, role):
    client.force_login(make_user(role))

    assert client.get("/configure/").status_code == 403
    assert client.post("/configure/keys/env_a/remove/").status_code == 403
    assert AuditEntry.objects.get().outcome == "denied"


def test_environment_keys_from_the_deployment(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT_KEYS", " env_a = sk-ant-oat01-aaaa , env_b=sk-ant-oat01-bbbb")
    assert _environment_keys() == {"env_a": "sk-ant-oat01-aaaa", "env_b": "sk-ant-oat01-bbbb"}

    monkeypatch.setenv("ENVIRONMENT_KEYS", "")
    assert _environment_keys() == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("env_a", "ENVIRONMENT_KEYS entry 1 is not environment_id=key"),
        ("env_a=sk-ant-oat01-aaaa,env_b=", "ENVIRONMENT_KEYS entry 2 is not environment_id=key"),
        ("prod=sk-ant-oat01-aaaa", "ENVIRONMENT_KEYS entry 1 does not start with an environment id"),
        ("env_a=sk-ant-oat01-aaaa,env_a=sk-ant-oat01-bbbb", "ENVIRONMENT_KEYS names env_a twice"),
        ("env_a=sk-ant oat01", "ENVIRONMENT_KEYS entry 1 is not environment_id=key"),
    ],
)
def test_malformed_environment_keys_stop_the_start(monkeypatch, value, message):
    monkeypatch.setenv("ENVIRONMENT_KEYS", value)

    with pytest.raises(ImproperlyConfigured) as raised:
        _environment_keys()

    assert str(raised.value) == message
    assert "sk-ant" not in str(raised.value)


def test_keys_stay_readable_when_a_dedicated_encryption_key_is_introduced(settings):
    token = crypto.encrypt("sk-ant-oat01-secret")
    settings.ENVIRONMENT_KEY_ENCRYPTION_KEY = "k" * 40

    assert crypto.decrypt(token) == "sk-ant-oat01-secret"
    fresh = crypto.encrypt("sk-ant-oat01-secret")
    settings.ENVIRONMENT_KEY_ENCRYPTION_KEY = ""
    settings.SECRET_KEY = "another-secret-key-" * 3
    with pytest.raises(crypto.KeyUnreadable):
        crypto.decrypt(fresh)
