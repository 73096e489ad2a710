"""The audit chain becomes keyed (HMAC-SHA256 with ``AUDIT_CHAIN_KEY``): the entries written before are hashed
again, in order, with the key, so the whole chain checks under it from here on."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def rehash(apps: Any, schema_editor: Any) -> None:
    from dashboard.models import HASHED_FIELDS, chain_digest

    entry_model = apps.get_model("dashboard", "AuditEntry")
    head_model = apps.get_model("dashboard", "AuditChainHead")
    previous = "0" * 64
    for entry in entry_model.objects.order_by("sequence").iterator(chunk_size=2000):
        fields = {name: getattr(entry, name) for name in HASHED_FIELDS}
        fields["created_at"] = entry.created_at.isoformat(timespec="microseconds")
        fields["prev_hash"] = previous
        digest = chain_digest(fields)
        entry_model.objects.filter(pk=entry.pk).update(prev_hash=previous, hash=digest)
        previous = digest
    head_model.objects.filter(length__gt=0).update(last_hash=previous)


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0004_index_history")]

    operations = [migrations.RunPython(rehash, migrations.RunPython.noop)]
