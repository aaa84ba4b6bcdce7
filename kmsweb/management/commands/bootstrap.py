"""``manage.py bootstrap``: the default account, the admin principal and login.

Idempotent: run it on every start; it creates only what is missing and says
what it did. It creates no keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from audit.services.alarms import alarms_ensure_builtin
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.models import IdentityPolicy, Principal, PrincipalType
from policies.services import FULL_ACCESS_POLICY, default_account, identity_policy_put, principal_create

ADMIN_POLICY_NAME = "AdministratorAccess"


class Command(BaseCommand):
    help = "Create the default account, the 'admin' principal and a dashboard superuser (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", help="dashboard superuser and principal name")
        parser.add_argument(
            "--password-file",
            help="file holding the superuser's password (used only when the user is created)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"]
        account = default_account()
        self.stdout.write(f"account {account.id}")
        caller = Caller.system("bootstrap", account_id=account.id)
        principal = Principal.objects.filter(account=account, name=username, type=PrincipalType.USER).first()
        if principal is None:
            try:
                principal = principal_create(caller=caller, account=account, name=username, type=PrincipalType.USER)
            except KmsError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"created principal {principal.arn}")
        else:
            self.stdout.write(f"principal {principal.arn} exists")
        if not IdentityPolicy.objects.filter(principal=principal, name=ADMIN_POLICY_NAME).exists():
            identity_policy_put(
                caller=caller,
                account=account,
                name=ADMIN_POLICY_NAME,
                document=FULL_ACCESS_POLICY,
                principal=principal,
                description="Full access to kms:* actions (made by bootstrap)",
            )
            self.stdout.write(f"gave {principal.arn} the inline policy {ADMIN_POLICY_NAME} (kms:*)")
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None:
            password_file = options.get("password_file")
            if not password_file:
                raise CommandError("--password-file is required to create the dashboard user")
            password = Path(password_file).read_text(encoding="utf-8").strip()
            with transaction.atomic():
                user = user_model.objects.create_superuser(username=username, password=password)
            self.stdout.write(f"created dashboard superuser {username}")
        else:
            self.stdout.write(f"dashboard user {username} exists")
        if principal.user_id != user.pk:
            Principal.objects.filter(pk=principal.pk).update(user=user)
            self.stdout.write(f"linked {username} to {principal.arn}")
        made = alarms_ensure_builtin()
        if made:
            self.stdout.write(f"created {made} built-in alarm(s)")
