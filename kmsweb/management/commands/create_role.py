"""``manage.py create_role NAME --trust-policy-file F``: a role principal with its trust policy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.models import PrincipalType
from policies.services import account_get_or_create, default_account, principal_get
from policies.services.sts import role_create, role_trust_policy_put


class Command(BaseCommand):
    help = "Create a role (or, with --update, replace its trust policy) and print its ARN."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--trust-policy-file", required=True, help="the AssumeRolePolicyDocument (JSON), '-' for stdin"
        )
        parser.add_argument("--account", help="12-digit account id (default: KMSWEB_ACCOUNT_ID)")
        parser.add_argument("--update", action="store_true", help="replace an existing role's trust policy")

    def handle(self, *args: Any, **options: Any) -> None:
        source = options["trust_policy_file"]
        try:
            document = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise CommandError(f"Cannot read {source}: {exc}") from exc
        try:
            if options["account"]:
                account, _ = account_get_or_create(account_id=options["account"])
            else:
                account = default_account()
            caller = Caller.system("create_role", account_id=account.id)
            if options["update"]:
                role = principal_get(account=account, name=options["name"], type=PrincipalType.ROLE)
                role_trust_policy_put(caller=caller, role=role, document=document)
            else:
                role = role_create(caller=caller, account=account, name=options["name"], trust_policy=document)
        except KmsError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(role.arn)
