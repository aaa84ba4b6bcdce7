"""``manage.py verify_audit``: check the sealed audit trail in the database.

Exit status 0 when every digest and sealed event verifies; 1 (naming the
first changed, deleted, inserted or reordered event or digest) otherwise.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.verification import audit_verify


class Command(BaseCommand):
    help = "Verify the audit trail's digest chain and every sealed event."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--all", action="store_true", help="list every problem, not only the first")

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_verify(stop_at_first=not options["all"])
        summary = (
            f"{report.digests} digests ({report.archived_digests} archived), {report.events} sealed events checked; "
            f"{report.unsealed} events not sealed yet"
        )
        if report.ok:
            self.stdout.write(f"OK: {summary}")
            return
        for problem in report.problems[1:]:
            self.stderr.write(f"also: {problem.message}")
        raise CommandError(f"audit trail verification FAILED: {report.problems[0].message} ({summary})")
