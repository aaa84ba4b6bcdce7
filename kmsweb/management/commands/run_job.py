"""``manage.py run_job NAME``: run one periodic job now (operators, tests);
``manage.py run_job --list``: every job with its schedule and last run."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.services.job_status import job_list
from audit.services.jobs import job_run
from kmsweb.jobs import JOBS, UnknownJob, job_named
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError

NAMES = ", ".join(job.name for job in JOBS)


class Command(BaseCommand):
    help = "Run one periodic job now and print what it did, or list the jobs (--list). Jobs: " + NAMES

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="one of: " + NAMES)
        parser.add_argument("--list", action="store_true", help="list the jobs, their schedules and last runs")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            self._list()
            return
        name = options["name"]
        if not name:
            raise CommandError(f"Name a job, or --list. Jobs: {NAMES}")
        try:
            job = job_named(name)
        except UnknownJob:
            raise CommandError(f"Unknown job '{name}'. Jobs: {NAMES}") from None
        try:
            run = job_run(name, job.function(), caller=Caller.system(name))
        except KmsError as exc:
            raise CommandError(f"{name} failed: {exc}") from exc
        counts = ", ".join(f"{k}={v}" for k, v in run.counts.items()) or "nothing to report"
        self.stdout.write(f"{name}: {counts}")

    def _list(self) -> None:
        for status in job_list(caller=Caller.system("run_job")):
            last = status.last
            started = last.started_at.strftime("%Y-%m-%d %H:%M:%S") if last else "-"
            line = f"{status.job.name:<26} {status.job.words:<24} last {started:<19} {status.state}"
            if status.state == "lost":
                line += " (still marked running past its time limit: the worker died or was killed)"
            self.stdout.write(line)
