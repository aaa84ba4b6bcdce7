"""``manage.py put_principal_policy PRINCIPAL POLICY_NAME --file policy.json``.

Creates or replaces an inline identity policy of a principal. With
``--managed`` it creates/replaces a managed policy of that name in the
principal's account and attaches it instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.models import PrincipalType
from policies.services import (
    account_get_or_create,
    default_account,
    identity_policy_put,
    policy_attach,
    principal_get,
)


class Command(BaseCommand):
    help = "Put an inline (or, with --managed, an attached managed) identity policy on a principal."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("principal")
        parser.add_argument("policy_name")
        parser.add_argument("--file", required=True, help="the policy document (JSON)")
        parser.add_argument("--type", choices=PrincipalType.values)
        parser.add_argument("--account", help="12-digit account id (default: KMSWEB_ACCOUNT_ID)")
        parser.add_argument("--managed", action="store_true", help="a managed policy, attached to the principal")

    def handle(self, *args: Any, **options: Any) -> None:
        document = Path(options["file"]).read_text(encoding="utf-8")
        try:
            if options["account"]:
                account, _ = account_get_or_create(account_id=options["account"])
            else:
                account = default_account()
            principal = principal_get(account=account, name=options["principal"], type=options["type"])
            caller = Caller.system("put_principal_policy", account_id=account.id)
            if options["managed"]:
                policy = identity_policy_put(
                    caller=caller, account=account, name=options["policy_name"], document=document
                )
                policy_attach(caller=caller, principal=principal, policy=policy)
            else:
                policy = identity_policy_put(
                    caller=caller, account=account, name=options["policy_name"], document=document, principal=principal
                )
        except KmsError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        kind = "managed, attached" if options["managed"] else "inline"
        self.stdout.write(f"{policy.name} ({kind}) on {principal.arn}")
