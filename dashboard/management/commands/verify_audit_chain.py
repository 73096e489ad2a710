"""``manage.py verify_audit_chain``: recompute every audit entry's hash and check the chain links.

Exits 0 and says how many entries it checked when the chain is intact; otherwise prints each break (the entry's
sequence number and what is wrong) and exits 1.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from dashboard.audit import verify_chain
from dashboard.models import AuditEntry


class Command(BaseCommand):
    help = "Verify the audit log's hash chain; exits non-zero and names the entry where it breaks."

    def handle(self, *args: Any, **options: Any) -> None:
        breaks = list(verify_chain())
        if breaks:
            for found in breaks:
                where = f"entry #{found.sequence}" + (f" (id {found.entry_id})" if found.entry_id else "")
                self.stderr.write(f"{where}: {found.problem}")
            first = breaks[0]
            raise CommandError(
                f"The audit chain is broken at entry #{first.sequence} ({len(breaks)} problem(s) found).",
                returncode=1,
            )
        count = AuditEntry.objects.count()
        self.stdout.write(self.style.SUCCESS(f"The audit chain is intact: {count} entries checked."))
