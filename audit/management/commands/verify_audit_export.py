"""``manage.py verify_audit_export DIR``: check an export bundle (or a signed report) offline.

Needs no database: the signature of manifest.json, the SHA-256 and size of
every file it lists, and the signed digests that cover the events. Exit
status 1 names the first file that does not verify.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.exports import verify_bundle


class Command(BaseCommand):
    help = "Verify an audit export bundle (signature, file hashes, digests) without the database."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory")
        parser.add_argument(
            "--fingerprint",
            action="append",
            default=[],
            help="a trusted signing key fingerprint (from GET /audit/public-keys); repeatable",
        )
        parser.add_argument("--public-keys", help="a saved copy of GET /audit/public-keys: trust those keys")

    def handle(self, *args: Any, **options: Any) -> None:
        trusted: set[str] | None = None
        if options["fingerprint"] or options["public_keys"]:
            trusted = {f.lower() for f in options["fingerprint"]}
            if options["public_keys"]:
                try:
                    document = json.loads(Path(options["public_keys"]).read_text())
                    trusted |= {k["fingerprint"] for k in document["keys"]}
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    raise CommandError(f"--public-keys: cannot read {options['public_keys']}: {exc}") from exc
        directory = Path(options["directory"])
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory")
        check = verify_bundle(directory, trusted_fingerprints=trusted)
        if not check.ok:
            for problem in check.problems[1:]:
                self.stderr.write(f"also: {problem}")
            raise CommandError(f"export verification FAILED: {check.problems[0]}")
        manifest = check.manifest or {}
        if "report" in manifest:
            # A report bundle (the compliance report, a campaign's evidence): files, no events.
            self.stdout.write(f"OK: {directory} ({manifest['report']}, {len(manifest.get('files', []))} files)")
        else:
            self.stdout.write(
                f"OK: {directory} ({manifest.get('events', {}).get('count')} events, {manifest.get('format')})"
            )
        for note in check.notes:
            self.stdout.write(f"  {note}")
        if trusted is None:
            self.stdout.write(
                "  note: no trusted key given; compare the fingerprint above with GET /audit/public-keys "
                "(or pass --fingerprint)"
            )
