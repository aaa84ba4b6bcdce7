"""``manage.py add_mfa_device PRINCIPAL DEVICE``: a virtual MFA device for an API principal.

Prints the device's serial (``arn:aws:iam::<acct>:mfa/<DEVICE>``, the
``--serial-number`` of ``aws sts get-session-token``) and its ``otpauth://``
URI, to hand to the principal's authenticator app.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.models import PrincipalType
from policies.services import account_get_or_create, default_account, principal_get
from policies.services.sts import mfa_device_create


class Command(BaseCommand):
    help = "Enrol a virtual MFA device for an API principal; print its serial and otpauth:// URI."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("principal", help="the principal's name")
        parser.add_argument("device", help="the device's name (its serial is arn:aws:iam::<acct>:mfa/<device>)")
        parser.add_argument("--type", choices=[PrincipalType.USER, PrincipalType.SERVICE], default=PrincipalType.USER)
        parser.add_argument("--account", help="12-digit account id (default: KMSWEB_ACCOUNT_ID)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["account"]:
                account, _ = account_get_or_create(account_id=options["account"])
            else:
                account = default_account()
            principal = principal_get(account=account, name=options["principal"], type=options["type"])
            enrolment = mfa_device_create(
                caller=Caller.system("add_mfa_device", account_id=account.id),
                principal=principal,
                name=options["device"],
            )
        except KmsError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(enrolment.device.serial)
        self.stdout.write(enrolment.uri)
