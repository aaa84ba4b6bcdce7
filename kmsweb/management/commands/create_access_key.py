"""``manage.py create_access_key PRINCIPAL [--access-key-id ID --secret SECRET]``.

Prints ``ACCESS_KEY_ID SECRET``. Fixed values let automation and tests use
credentials they already know; the secret is stored encrypted either way.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.models import PrincipalType
from policies.services import (
    access_key_authenticate,
    access_key_create,
    account_get_or_create,
    default_account,
    principal_get,
)


class Command(BaseCommand):
    help = "Create an access key for a principal and print 'ACCESS_KEY_ID SECRET'."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("principal", help="principal name")
        parser.add_argument("--type", choices=PrincipalType.values, help="principal type, if names collide")
        parser.add_argument("--account", help="12-digit account id (default: KMSWEB_ACCOUNT_ID)")
        parser.add_argument("--access-key-id")
        parser.add_argument("--secret")
        parser.add_argument(
            "--exist-ok",
            action="store_true",
            help="with fixed values: succeed when that key already exists for this principal with this secret",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if bool(options["access_key_id"]) != bool(options["secret"]):
            raise CommandError("--access-key-id and --secret go together")
        try:
            if options["account"]:
                account, _ = account_get_or_create(account_id=options["account"])
            else:
                account = default_account()
            principal = principal_get(account=account, name=options["principal"], type=options["type"])
            if options["exist_ok"] and options["access_key_id"]:
                existing = access_key_authenticate(access_key_id=options["access_key_id"])
                if existing and existing.principal.pk == principal.pk and existing.secret == options["secret"]:
                    self.stdout.write(f"{options['access_key_id']} {options['secret']}")
                    return
            key, secret = access_key_create(
                caller=Caller.system("create_access_key", account_id=account.id),
                principal=principal,
                access_key_id=options["access_key_id"],
                secret=options["secret"],
            )
        except KmsError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{key.access_key_id} {secret}")
