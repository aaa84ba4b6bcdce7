"""``manage.py rotate_root_key``: re-wrap every key material version under a new root key.

    rotate_root_key --new-key                 add a root key to KMSWEB_ROOT_KEY_FILE, then re-wrap
    rotate_root_key                           re-wrap what is not yet under the current key (resume)
    rotate_root_key --new-key --rotate-owned  also rotate the platform owned keys and re-encrypt their secrets
    rotate_root_key --status                  how much each root key still wraps

With KMSWEB_ROOT_KEY_PKCS11_* set the token's key is held as well, and
KMSWEB_ROOT_KEY_CURRENT (pkcs11 or file) says which one wraps: running
rotate_root_key then moves all material to it, from the file to the token or
back (``--new-key`` with pkcs11 current generates the key in the token).

Requests are served throughout (see keys/services/root_rotation.py and docs/SERVICE_KEYS.md).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys.services.root_rotation import root_key_rotate, root_key_status
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError


class Command(BaseCommand):
    help = "Rotate the root key: re-wrap all key material (and optionally rotate the platform owned keys)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--new-key",
            action="store_true",
            help="append a new root key to KMSWEB_ROOT_KEY_FILE first (pkcs11 current: generate the token's key)",
        )
        parser.add_argument(
            "--rotate-owned",
            action="store_true",
            help="also rotate the platform owned keys and re-encrypt their secrets",
        )
        parser.add_argument("--status", action="store_true", help="only show what each root key wraps")
        parser.add_argument("--batch-size", type=int, default=200)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["status"]:
            status = root_key_status()
            self.stdout.write(f"current root key: {status['current']}")
            for key_id in status["held"]:
                self.stdout.write(f"  {key_id}: wraps {status['wraps'].get(key_id, 0)} material versions")
            for key_id in status["unknown"]:
                self.stdout.write(f"  {key_id}: NOT HELD, wraps {status['wraps'][key_id]} material versions")
            return
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        try:
            result = root_key_rotate(
                caller=Caller.system("rotate-root-key"),
                new_key=options["new_key"],
                rotate_owned=options["rotate_owned"],
                batch=options["batch_size"],
            )
        except KmsError as exc:
            raise CommandError(f"rotate_root_key failed: {exc.message}") from exc
        self.stdout.write(", ".join(f"{k}={v}" for k, v in result.items()))
