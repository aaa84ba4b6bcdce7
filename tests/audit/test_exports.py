"""Exports and their offline verification: the command, the bundle, the
manifest signature, openssl, and every way a bundle or a request can be bad."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management.base import CommandError
from django.utils import timezone

from audit import canonical, exports
from audit.models import AuditEvent
from audit.services.exporting import EXPORT_EVENT
from audit.services.sealing import audit_seal
from keys.models import Key
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from tests.audit.conftest import run_command
from tests.conftest import Persona

pytestmark = pytest.mark.django_db

OPENSSL = shutil.which("openssl")


@pytest.fixture
def trail(activity: Callable[[int], None], key: Key, admin: Caller, outsider: Persona) -> Key:
    """Some successes, a denial and an error, sealed."""
    from keys import services

    activity(5)
    with pytest.raises(KmsError):
        services.key_encrypt(caller=outsider.caller(), key=key, plaintext=b"no")
    with pytest.raises(KmsError):
        services.key_schedule_deletion(caller=admin, key=key, pending_window_days=3)
    audit_seal(caller=Caller.system("tests"))
    return key


def export(tmp_path: Path, fmt: str, *args: str, name: str = "bundle") -> Path:
    out = tmp_path / name
    run_command("export_audit", "--format", fmt, "--out", str(out), *args)
    return out


def verify(directory: Path, *args: str) -> str:
    out, _ = run_command("verify_audit_export", str(directory), *args)
    return out


def jsonl(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "events.jsonl").read_text().splitlines()]


def test_it_exports_json_lines_that_verify_offline(trail: Key, tmp_path: Path) -> None:
    out = export(tmp_path, "jsonl")
    records = jsonl(out)
    ids = list(AuditEvent.objects.order_by("id").values_list("event_id", flat=True))
    # The export is taken before its own event is recorded.
    assert [r["eventID"] for r in records] == [str(i) for i in ids[:-1]]
    assert AuditEvent.objects.order_by("-id").first().event_name == EXPORT_EVENT
    for record in records:
        assert {"eventVersion", "eventTime", "eventSource", "eventName", "userIdentity", "requestID"} <= set(record)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["events"]["count"] == len(records)
    assert manifest["digests"]["count"] == 1
    assert {f["name"] for f in manifest["files"]} == {
        "events.jsonl",
        "digests.jsonl",
        "public-keys.json",
        "public-key.pem",
    }
    report = verify(out)
    assert report.startswith("OK:")
    assert "1 covering digests verified" in report


def test_it_exports_the_cloudtrail_log_format(trail: Key, tmp_path: Path) -> None:
    out = export(tmp_path, "cloudtrail", "--key", str(trail.id))
    document = json.loads((out / "events.json").read_text())
    assert set(document) == {"Records"}
    assert document["Records"] and all(r["kmsweb"]["keyId"] == str(trail.id) for r in document["Records"])
    assert verify(out).startswith("OK:")


def test_it_exports_csv_filtered_by_principal_and_range(trail: Key, tmp_path: Path, key_admin: Persona) -> None:
    since = (timezone.now() - timedelta(hours=1)).isoformat()
    out = export(tmp_path, "csv", "--principal", key_admin.principal.arn, "--since", since)
    rows = list(csv.DictReader(io.StringIO((out / "events.csv").read_text())))
    assert rows and {r["principalArn"] for r in rows} == {key_admin.principal.arn}
    assert {r["outcome"] for r in rows} == {"success", "error"}
    assert rows[0].keys() == set(exports.CSV_COLUMNS)
    assert verify(out).startswith("OK:")


def test_it_writes_the_pdf_report(trail: Key, tmp_path: Path) -> None:
    out = export(tmp_path, "pdf", "--account", trail.account_id)
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and len(pdf) > 1000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "pdf" and manifest["events"]["count"] > 0
    assert verify(out).startswith("OK:")


@pytest.mark.skipif(OPENSSL is None, reason="needs openssl")
def test_openssl_verifies_the_manifest_signature_and_file_hashes(trail: Key, tmp_path: Path) -> None:
    """The commands of docs/AUDIT.md, run as written there."""
    out = export(tmp_path, "jsonl")

    def sh(*cmd: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(cmd, cwd=out, input=stdin, capture_output=True, check=False)

    ok = sh("openssl", "dgst", "-sha256", "-verify", "public-key.pem", "-signature", "manifest.sig", "manifest.json")
    assert ok.returncode == 0 and ok.stdout.strip() == b"Verified OK"
    der = sh("openssl", "pkey", "-pubin", "-in", "public-key.pem", "-outform", "DER").stdout
    fingerprint = sh("openssl", "dgst", "-sha256", "-r", stdin=der).stdout.split()[0].decode()
    manifest = json.loads((out / "manifest.json").read_text())
    assert fingerprint == manifest["signingKeyFingerprint"]
    for entry in manifest["files"]:
        line = sh("openssl", "dgst", "-sha256", "-r", entry["name"]).stdout.decode()
        assert line.split()[0] == entry["sha256"], entry["name"]
    # A changed manifest fails openssl too.
    (out / "manifest.json").write_bytes((out / "manifest.json").read_bytes().replace(b'"jsonl"', b'"jsonX"'))
    bad = sh("openssl", "dgst", "-sha256", "-verify", "public-key.pem", "-signature", "manifest.sig", "manifest.json")
    assert bad.returncode == 1 and b"Verification failure" in bad.stdout


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "cloudtrail", "pdf"])
def test_one_changed_byte_fails_verification_naming_the_file(trail: Key, tmp_path: Path, fmt: str) -> None:
    out = export(tmp_path, fmt)
    data = out / exports.FORMATS[fmt]
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(CommandError) as raised:
        verify(out)
    assert str(raised.value) == (
        f"export verification FAILED: {data.name}: SHA-256 does not match the manifest (the file was changed)"
    )


def test_a_truncated_file_fails_verification(trail: Key, tmp_path: Path) -> None:
    out = export(tmp_path, "jsonl")
    data = out / "events.jsonl"
    size = data.stat().st_size
    data.write_bytes(data.read_bytes()[: size - 10])
    with pytest.raises(CommandError, match=rf"events.jsonl: truncated \({size - 10} of {size} bytes\)"):
        verify(out)


def test_a_changed_manifest_or_signature_fails_verification(trail: Key, tmp_path: Path) -> None:
    out = export(tmp_path, "jsonl")
    manifest = out / "manifest.json"
    original = manifest.read_bytes()
    manifest.write_bytes(original.replace(b'"count": ', b'"count": 1', 1))
    with pytest.raises(CommandError, match="manifest.json: the signature in manifest.sig does not match"):
        verify(out)
    manifest.write_bytes(original)
    signature = bytearray((out / "manifest.sig").read_bytes())
    signature[-3] ^= 0xFF
    (out / "manifest.sig").write_bytes(bytes(signature))
    with pytest.raises(CommandError, match="does not match"):
        verify(out)


def test_a_bundle_re_signed_with_another_key_fails_against_the_trusted_fingerprint(trail: Key, tmp_path: Path) -> None:
    from keys.crypto import signatures

    out = export(tmp_path, "jsonl")
    genuine = json.loads((out / "manifest.json").read_text())["signingKeyFingerprint"]
    assert verify(out, "--fingerprint", genuine).startswith("OK:")
    # A forger edits the events and re-signs everything with a key of their own.
    forged = signatures.generate_signing_key()
    data = out / "events.jsonl"
    data.write_bytes(data.read_bytes().replace(b"Encrypt", b"Decrypt"))
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["name"] == "public-key.pem":
            (out / "public-key.pem").write_text(forged.public_pem)
        path = out / entry["name"]
        entry["sha256"], entry["bytes"] = exports.file_sha256(path), path.stat().st_size
    manifest["signingKeyFingerprint"] = forged.fingerprint
    body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    (out / "manifest.json").write_bytes(body)
    (out / "manifest.sig").write_bytes(signatures.sign(forged.private_der, body))
    with pytest.raises(CommandError, match="is not one of the trusted audit signing keys"):
        verify(out, "--fingerprint", genuine)


def test_a_missing_or_extra_file_fails_verification(trail: Key, tmp_path: Path) -> None:
    out = export(tmp_path, "jsonl")
    (out / "notes.txt").write_text("slipped in")
    with pytest.raises(CommandError, match="notes.txt: not listed in the manifest"):
        verify(out)
    (out / "notes.txt").unlink()
    (out / "digests.jsonl").unlink()
    with pytest.raises(CommandError, match="digests.jsonl: missing"):
        verify(out)
    (out / "manifest.sig").unlink()
    with pytest.raises(CommandError, match="manifest.sig: missing"):
        verify(out)


# -- bad requests: clear messages, nothing written, non-zero exit ---------------------------


def assert_refused(tmp_path: Path, message: str, *args: str) -> None:
    events = AuditEvent.objects.count()
    with pytest.raises(CommandError) as raised:
        export(tmp_path, "jsonl", *args, name="refused")
    assert message in str(raised.value)
    assert not (tmp_path / "refused").exists()
    # A refused export is recorded (with its error) unless the filter itself could not be read.
    assert AuditEvent.objects.count() - events in (0, 1)


def test_it_refuses_an_empty_range(trail: Key, tmp_path: Path) -> None:
    tomorrow = (timezone.now() + timedelta(days=1)).date()
    assert_refused(
        tmp_path, "No event matches this filter and range", "--since", str(tomorrow), "--until", str(tomorrow)
    )
    refused = AuditEvent.objects.order_by("-id").first()
    assert (refused.event_name, refused.error_code) == (EXPORT_EVENT, "ValidationException")


def test_it_refuses_a_range_beyond_retention(trail: Key, tmp_path: Path, settings: Any) -> None:
    settings.KMSWEB_AUDIT_RETENTION_DAYS = 30
    since = (timezone.now() - timedelta(days=45)).date().isoformat()
    assert_refused(tmp_path, "before the retention period (30 days", "--since", since)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--outcome", "maybe"), "--outcome: Unknown outcome 'maybe': use one of success, denied, error."),
        (("--origin", "cli"), "--origin: Unknown origin 'cli'"),
        (("--key", "not-a-key"), "--key: 'not-a-key' is not an alias, alias ARN, key id or key ARN."),
        (("--key", "0f0e5c8e-47a8-4a57-9b6c-0a0b0c0d0e0f"), "--key: Unknown key"),
        (("--principal", "arn:aws:iam::111122223333:user/nobody"), "--principal: Unknown principal"),
        (("--since", "yesterday"), "--since: 'yesterday' is not a date or time"),
        (("--since", "2025-03-02", "--until", "2025-03-01"), "--until: The end of the range must be after its start."),
        (("--event", "Drop Table"), "--event: 'Drop Table' is not an event name"),
    ],
)
def test_it_refuses_unknown_filter_values(trail: Key, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    assert_refused(tmp_path, message, *args)


def test_it_refuses_a_directory_that_is_not_empty(trail: Key, tmp_path: Path) -> None:
    out = tmp_path / "used"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CommandError, match="is not empty"):
        run_command("export_audit", "--format", "jsonl", "--out", str(out))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_verify_audit_export_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="is not a directory"):
        verify(tmp_path / "nope")


def test_the_export_streams_in_chunks(trail: Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("audit.services.exporting.CHUNK", 2)
    out = export(tmp_path, "jsonl")
    ids = [r["eventID"] for r in jsonl(out)]
    assert len(ids) == len(set(ids)) == AuditEvent.objects.count() - 1
    assert verify(out).startswith("OK:")


def test_a_complete_bundle_checks_each_event_against_its_digest(trail: Key, tmp_path: Path) -> None:
    """What the retention archive relies on: complete bundles are re-hashed per digest."""
    from audit.models import AuditDigest
    from audit.services.exporting import bundle_signer, covering_digests, iter_rows, public_key_map

    digest = AuditDigest.objects.get()
    out = tmp_path / "complete"
    exports.write_bundle(
        out_dir=out,
        fmt="jsonl",
        rows=iter_rows(AuditEvent.objects.all(), through_id=digest.last_event_id),
        digests=lambda stats: covering_digests(stats.first_id, stats.last_id),
        public_keys=public_key_map(),
        signer=bundle_signer(),
        manifest_fields={},
        complete=True,
    )
    check = exports.verify_bundle(out)
    assert check.ok and "every event matches its signed digest (1 digests)" in check.notes
    lines = (out / "events.jsonl").read_bytes().splitlines()
    assert canonical.events_root(canonical.leaf_hash(line) for line in lines) == digest.events_sha256
