"""``manage.py export_audit``: write an export bundle (events or the PDF
report, with a signed manifest) to a new directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.exports import FORMATS
from audit.selectors import audit_filter_for
from audit.services.exporting import audit_export_write
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError


class Command(BaseCommand):
    help = "Export audit events (csv, jsonl, cloudtrail) or the PDF report with a signed manifest."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", required=True, choices=sorted(FORMATS))
        parser.add_argument("--out", required=True, help="a new (or empty) directory for the bundle")
        parser.add_argument("--since", default="", help="ISO 8601 date or time (inclusive), UTC unless stated")
        parser.add_argument("--until", default="", help="ISO 8601 date or time (exclusive)")
        parser.add_argument("--key", default="", help="alias, alias ARN, key id or key ARN")
        parser.add_argument("--principal", default="", help="principal ARN")
        parser.add_argument("--event", default="", help="event name, e.g. Decrypt")
        parser.add_argument("--outcome", default="", help="success, denied or error")
        parser.add_argument("--origin", default="", help="api, dashboard or system")
        parser.add_argument("--account", default="", help="only this account's events (default: all)")

    def handle(self, *args: Any, **options: Any) -> None:
        caller = Caller.system("export-audit", account_id=options["account"])
        params = {name: options[name] for name in ("since", "until", "key", "principal", "event", "outcome", "origin")}
        params["routine"] = "show"  # an operator's export holds every event; only the Audit page hides routine ones
        flt, errors = audit_filter_for(caller=caller, params=params)
        if errors:
            raise CommandError("; ".join(f"--{name}: {message}" for name, message in errors.items()))
        try:
            bundle = audit_export_write(caller=caller, fmt=options["format"], flt=flt, out_dir=Path(options["out"]))
        except KmsError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"Exported {bundle.stats.count} events to {bundle.path} "
            f"(manifest signed by {bundle.manifest['signingKeyFingerprint']})"
        )
