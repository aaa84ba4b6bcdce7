"""``manage.py run_job NAME``: run one periodic job now (operators, tests)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.services.jobs import job_run
from kmsweb.jobs import JOBS
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError


class Command(BaseCommand):
    help = "Run one periodic job now and print what it did. Jobs: " + ", ".join(JOBS)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="one of: " + ", ".join(JOBS))

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        if name not in JOBS:
            raise CommandError(f"Unknown job '{name}'. Jobs: {', '.join(JOBS)}")
        try:
            run = job_run(name, JOBS[name], caller=Caller.system(name))
        except KmsError as exc:
            raise CommandError(f"{name} failed: {exc}") from exc
        counts = ", ".join(f"{k}={v}" for k, v in run.counts.items()) or "nothing to report"
        self.stdout.write(f"{name}: {counts}")
