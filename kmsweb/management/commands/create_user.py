"""``manage.py create_user USERNAME --role viewer|key-admin|approver|auditor``.

The password comes from ``--password-file`` or is prompted for. The user is
linked to a new ``user`` principal of the same name.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.roles import ROLES
from policies.services import default_account, user_create


class Command(BaseCommand):
    help = "Create a dashboard user with one or more roles."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", action="append", choices=list(ROLES), required=True, dest="roles")
        parser.add_argument("--password-file")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["password_file"]:
            password = Path(options["password_file"]).read_text(encoding="utf-8").strip()
        else:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("The passwords differ.")
        account = default_account()
        try:
            user = user_create(
                caller=Caller.system("create_user", account_id=account.id),
                username=options["username"],
                password=password,
                roles=options["roles"],
                account=account,
            )
        except KmsError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"created {user.get_username()} with role(s) {', '.join(options['roles'])}")
