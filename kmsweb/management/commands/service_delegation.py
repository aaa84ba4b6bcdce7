"""``manage.py service_delegation PRINCIPAL SERVICE [--type user|role] [--remove]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.models import PrincipalType
from policies.services import (
    account_get_or_create,
    default_account,
    principal_get,
    service_delegation_create,
    service_delegation_delete,
)


class Command(BaseCommand):
    help = (
        "Let a registered service principal act for a user or role (X-Kmsweb-On-Behalf-Of), "
        "or withdraw that with --remove."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("principal", help="the user or role name")
        parser.add_argument("service", help="the service principal's name, e.g. backup")
        parser.add_argument("--type", choices=[PrincipalType.USER, PrincipalType.ROLE], default=PrincipalType.USER)
        parser.add_argument("--account", help="12-digit account id (default: KMSWEB_ACCOUNT_ID)")
        parser.add_argument("--remove", action="store_true", help="withdraw the delegation")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["account"]:
                account, _ = account_get_or_create(account_id=options["account"])
            else:
                account = default_account()
            principal = principal_get(account=account, name=options["principal"], type=options["type"])
            service = principal_get(account=account, name=options["service"], type=PrincipalType.SERVICE)
            caller = Caller.system("service_delegation", account_id=account.id)
            if options["remove"]:
                service_delegation_delete(caller=caller, principal=principal, service=service)
                self.stdout.write(f"{service.arn} may no longer act for {principal.arn}")
            else:
                service_delegation_create(caller=caller, principal=principal, service=service)
                self.stdout.write(f"{service.arn} may act for {principal.arn}")
        except KmsError as exc:
            raise CommandError(str(exc)) from exc
