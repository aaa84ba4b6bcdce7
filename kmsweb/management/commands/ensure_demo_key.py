"""``manage.py ensure_demo_key``: the key behind ``alias/demo`` for ``make run``.

Creates a customer managed key and the alias only if the alias is absent,
so a second ``make run`` reuses the first one's key.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from keys import services
from keys.models import Alias
from kmsweb.lib.caller import Caller
from policies.services import default_account


class Command(BaseCommand):
    help = "Create a demo key with alias/demo unless it exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--alias", default="alias/demo")
        parser.add_argument("--region", default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        account = default_account()
        region = options["region"] or settings.KMSWEB_DEFAULT_REGION
        alias = Alias.objects.filter(account=account, region=region, name=options["alias"]).first()
        if alias is not None:
            self.stdout.write(f"{options['alias']} -> {alias.key.arn}")
            return
        caller = Caller.system("make-run", account_id=account.id, region=region)
        key = services.key_create(caller=caller, description="Demo key created by make run")
        services.alias_create(caller=caller, name=options["alias"], key=key)
        self.stdout.write(f"created {options['alias']} -> {key.arn}")
