"""The audit log: append-only in the ORM and the Django admin, the hash chain and its verification command (which
finds a raw SQL edit, a removed entry, and a removed newest entry), concurrent appends forming one intact chain."""

from __future__ import annotations

import threading
from io import StringIO

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from dashboard import audit
from dashboard.audit import GENESIS_HASH, verify_chain
from dashboard.models import AuditEntry, AuditLogIsAppendOnly


def add(n: int = 1, **fields) -> list[AuditEntry]:
    defaults = {
        "user": None,
        "action": "stop",
        "outcome": "succeeded",
        "work_id": "work_a",
        "sent": {"force": False},
    }
    return [audit.record(**{**defaults, **fields}) for _ in range(n)]


def verify() -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit_chain", stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, err.getvalue() + str(exc)
    return 0, out.getvalue()


@pytest.mark.django_db
def test_entries_chain_by_hash():
    first, second = add(2)

    assert first.sequence == 1 and second.sequence == 2
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert first.hash == first.compute_hash() and len(first.hash) == 64
    assert verify() == (0, "The audit chain is intact: 2 entries checked.\n")


@pytest.mark.django_db
def test_an_entry_about_hostile_input_with_nul_characters_is_still_written():
    # PostgreSQL refuses NUL in text and jsonb: the entry keeps everything else, with NUL shown as U+FFFD.
    entry = audit.record(
        user=None,
        action="metadata_patch",
        outcome="denied",
        work_id="work_a\x00",
        reason="because\x00",
        sent={"metadata": {"key\x00": "value\x00", "list": ["x\x00"]}},
        error="refused\x00",
    )
    stored = AuditEntry.objects.get(pk=entry.pk)
    assert stored.reason == "because\ufffd"
    assert stored.work_id == "work_a\ufffd"
    assert stored.sent == {"metadata": {"key\ufffd": "value\ufffd", "list": ["x\ufffd"]}}
    assert list(verify_chain()) == []


@pytest.mark.django_db
def test_every_orm_write_path_is_refused():
    (entry,) = add()

    entry.reason = "rewritten"
    with pytest.raises(AuditLogIsAppendOnly):
        entry.save()
    with pytest.raises(AuditLogIsAppendOnly):
        entry.delete()
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEntry.objects.filter(pk=entry.pk).update(reason="rewritten")
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEntry.objects.all().delete()
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEntry.objects.bulk_update([entry], ["reason"])
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEntry.objects.create(sequence=99, action="stop", outcome="succeeded", hash="x", prev_hash="y")
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEntry.objects.bulk_create([AuditEntry(sequence=99, action="x", outcome="succeeded")])
    entry.refresh_from_db()
    assert entry.reason == "" and AuditEntry.objects.count() == 1
    assert verify()[0] == 0


@pytest.mark.django_db
def test_an_unknown_outcome_is_refused():
    with pytest.raises(ValueError, match="outcome must be one of succeeded, failed, denied"):
        audit.record(user=None, action="stop", outcome="maybe")


@pytest.mark.django_db
def test_the_django_admin_is_read_only_even_for_superusers(client):
    (entry,) = add()
    superuser = User.objects.create_superuser("root", password="pw")
    client.force_login(superuser)
    model_admin = site._registry[AuditEntry]
    request = type("R", (), {"user": superuser})()

    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, entry)
    assert not model_admin.has_delete_permission(request, entry)
    assert client.get("/admin/dashboard/auditentry/").status_code == 200
    assert client.get("/admin/dashboard/auditentry/add/").status_code == 403
    assert client.post(f"/admin/dashboard/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    change = client.post(f"/admin/dashboard/auditentry/{entry.pk}/change/", {"reason": "rewritten"})
    assert change.status_code == 403
    assert (
        'name="_save"' not in client.get(f"/admin/dashboard/auditentry/{entry.pk}/change/").content.decode()
    )
    entry.refresh_from_db()
    assert entry.reason == ""


@pytest.mark.django_db
def test_verify_finds_a_raw_sql_edit_and_names_the_entry():
    entries = add(3)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE dashboard_auditentry SET reason = %s WHERE id = %s", ["rewritten", entries[1].pk]
        )

    code, output = verify()

    assert code == 1
    assert f"entry #2 (id {entries[1].pk}): its content does not match its hash: it was changed" in output
    assert "The audit chain is broken at entry #2" in output


@pytest.mark.django_db
def test_verify_finds_a_removed_entry():
    entries = add(3)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dashboard_auditentry WHERE id = %s", [entries[1].pk])

    code, output = verify()

    assert code == 1
    assert "entry #3" in output and "an entry is missing or was reordered" in output


@pytest.mark.django_db
def test_verify_finds_a_removed_newest_entry():
    entries = add(3)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dashboard_auditentry WHERE id = %s", [entries[2].pk])

    code, output = verify()

    assert code == 1
    assert "the newest were removed" in output


@pytest.mark.django_db
def test_a_rehashed_edit_still_breaks_the_next_link():
    entries = add(2)
    forged = AuditEntry.objects.get(pk=entries[0].pk)
    forged.reason = "rewritten"
    new_hash = forged.compute_hash()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE dashboard_auditentry SET reason = %s, hash = %s WHERE id = %s",
            ["rewritten", new_hash, forged.pk],
        )

    breaks = list(verify_chain())

    assert [(b.sequence, b.problem) for b in breaks][:1] == [
        (2, "prev_hash does not match the hash of the entry before it")
    ]


@pytest.mark.django_db
def test_deleting_a_user_keeps_their_entries_and_the_chain():
    user = User.objects.create_user("dana")
    add(2, user=user)

    user.delete()

    assert list(AuditEntry.objects.values_list("username", "user")) == [("dana", None), ("dana", None)]
    assert verify()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_appends_form_one_intact_chain():
    barrier = threading.Barrier(50)
    errors: list[BaseException] = []

    def append(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            audit.record(user=None, action="stop", outcome="succeeded", work_id=f"work_{n}")
        except BaseException as exc:  # reported below, with the thread's own exception
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=append, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert sorted(AuditEntry.objects.values_list("sequence", flat=True)) == list(range(1, 51))
    assert len(set(AuditEntry.objects.values_list("work_id", flat=True))) == 50
    assert list(verify_chain()) == []


def _rewrite_from(sequence: int, change: str, digest: str = "sha256") -> None:
    """What someone who can write the database (but lacks the chain's key) can do: edit an entry's reason and
    recompute every hash from it on, with the algorithm of their choosing, head row included."""
    import hashlib
    import hmac
    import json

    from dashboard.models import AuditChainHead

    previous = AuditEntry.objects.get(sequence=sequence - 1).hash if sequence > 1 else GENESIS_HASH
    with connection.cursor() as cursor:
        cursor.execute("UPDATE dashboard_auditentry SET reason = %s WHERE sequence = %s", [change, sequence])
    for entry in AuditEntry.objects.filter(sequence__gte=sequence).order_by("sequence"):
        entry.prev_hash = previous
        canonical = json.dumps(
            entry.hashed_fields(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        if digest == "sha256":
            new = hashlib.sha256(canonical.encode()).hexdigest()
        else:  # an HMAC, under a key guessed wrong
            new = hmac.new(b"a guessed key", canonical.encode(), hashlib.sha256).hexdigest()
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE dashboard_auditentry SET prev_hash = %s, hash = %s WHERE id = %s",
                [previous, new, entry.pk],
            )
        previous = new
    AuditChainHead.objects.update(last_hash=previous)


@pytest.mark.django_db
@pytest.mark.parametrize("digest", ["sha256", "hmac-guessed"])
def test_a_rewrite_with_every_later_hash_recomputed_is_caught_without_the_key(digest):
    add(30)
    assert verify()[0] == 0

    _rewrite_from(20, "nothing happened here", digest)

    code, said = verify()
    assert code == 1
    assert "entry #20" in said and "it was changed" in said


@pytest.mark.django_db
def test_the_key_comes_from_the_environment_not_the_database(settings):
    add(3)
    assert verify()[0] == 0
    settings.AUDIT_CHAIN_KEY = "another-key-of-at-least-thirty-two-characters"
    code, said = verify()
    assert code == 1 and "entry #1" in said


def _export_head(tmp_path) -> str:
    out = StringIO()
    call_command("export_audit_head", stdout=out)
    path = tmp_path / "audit-head.json"
    path.write_text(out.getvalue())
    return str(path)


def verify_against(head: str) -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit_chain", "--head", head, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, err.getvalue() + str(exc)
    return 0, out.getvalue()


@pytest.mark.django_db
def test_an_exported_head_catches_a_removed_tail_and_a_wiped_log(tmp_path):
    from dashboard.models import AuditChainHead

    add(10)
    head = _export_head(tmp_path)
    add(2)  # the log grows after the export: still intact against it
    assert verify_against(head) == (0, "The audit chain is intact: 12 entries checked.\n")

    # The newest five removed, and the head row rewound to match: the chain alone cannot tell.
    seven = AuditEntry.objects.get(sequence=7)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dashboard_auditentry WHERE sequence > 7")
    AuditChainHead.objects.update(length=7, last_hash=seven.hash)
    assert verify()[0] == 0
    code, said = verify_against(head)
    assert code == 1 and "names entry #10, but the log ends at #7" in said

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dashboard_auditentry")
    AuditChainHead.objects.update(length=0, last_hash="")
    assert verify() == (0, "The audit chain is intact: 0 entries checked.\n")
    code, said = verify_against(head)
    assert code == 1 and "the log ends at #0" in said


@pytest.mark.django_db
def test_an_unreadable_exported_head_is_said_plainly(tmp_path):
    path = tmp_path / "head.json"
    path.write_text("not json")
    code, said = verify_against(str(path))
    assert code == 2 and "Cannot read the exported head" in said
