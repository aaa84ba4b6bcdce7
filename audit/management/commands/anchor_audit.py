"""``manage.py anchor_audit``: write the audit anchor of a trail that has none.

For a deployment that sealed digests before the anchor existed (or whose
anchor was removed, once that was investigated): the whole trail is
verified first, then every digest is written to ``KMSWEB_AUDIT_ANCHOR_FILE``.
Refused if the anchor already holds a line.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.services.anchoring import anchor_path, audit_anchor_init
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError


class Command(BaseCommand):
    help = "Verify the audit trail, then write its anchor (only where there is none yet)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = audit_anchor_init(caller=Caller.system("anchor-audit"))
        except KmsError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Anchored {count} digests in {anchor_path()}.")
