"""``manage.py verify_audit``: check the sealed audit trail in the database.

Exit status 0 when every digest and sealed event verifies and the database
matches the audit anchor; 1 (naming the first changed, deleted, inserted or
reordered event or digest, or the anchor's disagreement) otherwise.
Warnings (a stale unsealed tail, an anchor a seal behind) are printed and
exit 0, unless ``--fail-on-stale-tail``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import canonical
from audit.verification import Report, audit_verify


def _tail(report: Report) -> str:
    if not report.unsealed:
        return "no event waits to be sealed"
    text = f"{report.unsealed} events not sealed yet (ids {report.tail_first_id}-{report.tail_last_id}"
    if report.tail_oldest is not None:
        text += f", oldest {canonical.iso(report.tail_oldest)}, {int(report.tail_age_seconds or 0)} s ago"
    return text + ")"


class Command(BaseCommand):
    help = "Verify the audit trail's digest chain, every sealed event, ids, and the audit anchor."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--all", action="store_true", help="list every problem, not only the first")
        parser.add_argument(
            "--fail-on-stale-tail",
            action="store_true",
            help="exit 1 when an event has waited longer than KMSWEB_SEALING_BEHIND_SECONDS to be sealed",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_verify(stop_at_first=not options["all"])
        summary = (
            f"{report.digests} digests ({report.archived_digests} archived), {report.events} sealed events checked; "
            f"anchored through digest {report.anchored}; {_tail(report)}"
        )
        if report.ids_absent_after_newest:
            summary += (
                f"; {report.ids_absent_after_newest} ids handed out after the newest event are absent "
                "(rolled-back writes, or deleted events)"
            )
        for warning in report.warnings:
            self.stderr.write(f"warning: {warning.message}")
        if report.ok:
            if options["fail_on_stale_tail"] and report.tail_stale:
                raise CommandError(f"audit trail verification FAILED: the unsealed tail is stale ({summary})")
            self.stdout.write(f"OK: {summary}")
            return
        for problem in report.problems[1:]:
            self.stderr.write(f"also: {problem.message}")
        raise CommandError(f"audit trail verification FAILED: {report.problems[0].message} ({summary})")
