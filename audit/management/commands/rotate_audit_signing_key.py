"""``manage.py rotate_audit_signing_key``: retire the signing key and make a new one.

The old public key stays published, so earlier digests and exports verify.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from audit.services.signing import signing_key_rollover
from kmsweb.lib.caller import Caller


class Command(BaseCommand):
    help = "Roll the audit signing key over (old public keys stay published)."

    def handle(self, *args: Any, **options: Any) -> None:
        key = signing_key_rollover(caller=Caller.system("rotate-audit-signing-key"))
        self.stdout.write(f"New audit signing key {key.fingerprint}")
