"""``manage.py verify_audit_chain``: recompute every audit entry's hash and check the chain links.

Exits 0 and says how many entries it checked when the chain is intact; otherwise prints each break (the entry's
sequence number and what is wrong) and exits 1. ``--head FILE`` (what ``export_audit_head`` printed, kept elsewhere)
also checks the log still holds that entry unchanged, so a removed tail or a wiped log is caught.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from dashboard.audit import verify_chain, verify_head
from dashboard.models import AuditEntry


class Command(BaseCommand):
    help = "Verify the audit log's hash chain; exits non-zero and names the entry where it breaks."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--head", type=Path, help="a head exported by export_audit_head, to check the log still holds it"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        breaks = list(verify_chain())
        if options.get("head"):
            try:
                exported = json.loads(Path(options["head"]).read_text())
                length, digest = int(exported["length"]), str(exported["hash"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CommandError(
                    f"Cannot read the exported head {options['head']}: {exc}", returncode=2
                ) from None
            missing = verify_head(length, digest)
            if missing is not None:
                breaks.append(missing)
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
