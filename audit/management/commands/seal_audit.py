"""``manage.py seal_audit``: seal new audit events now (beat does it every minute)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from audit.services.sealing import audit_seal_all
from kmsweb.lib.caller import Caller


class Command(BaseCommand):
    help = "Seal the audit events committed since the last digest."

    def handle(self, *args: Any, **options: Any) -> None:
        digests = audit_seal_all(caller=Caller.system("seal-audit"), budget_seconds=3600)
        if not digests:
            self.stdout.write("Nothing new to seal.")
        for digest in digests:
            self.stdout.write(f"Sealed {digest.event_count} events into digest {digest.sequence}.")
