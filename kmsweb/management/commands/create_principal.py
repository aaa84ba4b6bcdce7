"""``manage.py create_principal NAME --type user|role|service``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.models import PrincipalType
from policies.services import account_get_or_create, default_account, principal_create


class Command(BaseCommand):
    help = "Create an IAM-style principal and print its ARN."

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
            principal = principal_create(
                caller=Caller.system("create_principal", account_id=account.id),
                account=account,
                name=options["name"],
                type=options["type"],
            )
        except KmsError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(principal.arn)
