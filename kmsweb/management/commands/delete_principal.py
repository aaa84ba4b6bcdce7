"""``manage.py delete_principal NAME --type user|role|service``: delete a principal.

Its access keys, MFA devices and temporary credentials (its own and the
role sessions it started) stop working at once.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.models import PrincipalType
from policies.services import account_get_or_create, default_account, principal_get
from policies.services.sts import principal_delete


class Command(BaseCommand):
    help = "Delete a principal with its access keys, MFA devices and sessions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--type", choices=PrincipalType.values, default=PrincipalType.USER)
        parser.add_argument("--account", help="12-digit account id (default: KMSWEB_ACCOUNT_ID)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["account"]:
                account, _ = account_get_or_create(account_id=options["account"])
            else:
                account = default_account()
            principal = principal_get(account=account, name=options["name"], type=options["type"])
            principal_delete(caller=Caller.system("delete_principal", account_id=account.id), principal=principal)
        except KmsError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"deleted {principal.arn}")
