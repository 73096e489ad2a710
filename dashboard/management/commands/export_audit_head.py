"""``manage.py export_audit_head``: print where the audit chain ends (its length and newest hash), as one line of
JSON to keep outside the dashboard's database. ``verify_audit_chain --head <file>`` later checks the chain still
holds that entry unchanged: a removed tail, a wiped log or a rewritten one is caught, which the chain alone cannot
show to someone who can also rewrite its head row."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from dashboard.models import AuditEntry


class Command(BaseCommand):
    help = "Print the audit chain's length and newest hash as JSON, to keep outside the database."

    def handle(self, *args: Any, **options: Any) -> None:
        newest = AuditEntry.objects.order_by("-sequence").first()
        head = {
            "length": newest.sequence if newest else 0,
            "hash": newest.hash if newest else "",
            "exported_at": timezone.now().isoformat(timespec="seconds"),
        }
        self.stdout.write(json.dumps(head, sort_keys=True))
