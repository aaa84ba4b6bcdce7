"""``manage.py add_totp_device USERNAME``: enrol a TOTP device, print its URI.

For operators (hand the URI or its QR code to the user) and for automated
tests that compute codes from the secret.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.services import totp_device_enrol


class Command(BaseCommand):
    help = "Enrol a TOTP authenticator for a dashboard user and print its otpauth:// URI."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--replace", action="store_true", help="replace an existing authenticator")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user {options['username']!r}.")
        try:
            enrolment = totp_device_enrol(
                caller=Caller.system("add_totp_device"), user=user, replace=options["replace"]
            )
        except KmsError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(enrolment.uri)
