"""What the digest chain alone cannot show, and ``verify_audit`` now does: the
audit anchor outside the database, ids no digest range reaches, a deleted
unsealed tail, a stale tail; and exports that refuse a trail that fails."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from audit.models import AuditDigest, AuditEvent, AuditExport, SigningKey
from audit.services.sealing import SEAL_EVENT, audit_seal, audit_seal_all
from audit.verification import audit_verify
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidState
from tests import dashboard_fixtures
from tests.audit.conftest import run_command, tampering

auditor_user = dashboard_fixtures.auditor_user
signed_in = dashboard_fixtures.signed_in

pytestmark = pytest.mark.django_db

SYSTEM = Caller.system("tests-anchor")


def seal() -> AuditDigest | None:
    return audit_seal(caller=SYSTEM)


@pytest.fixture
def three(activity: Callable[[int], None]) -> list[AuditDigest]:
    """Three digests, each over new activity; the trail verifies."""
    digests = []
    for _ in range(3):
        activity(2)
        digest = seal()
        assert digest is not None
        digests.append(digest)
    assert audit_verify().ok
    return digests


def anchor_path(settings: Any) -> Path:
    return Path(settings.KMSWEB_AUDIT_ANCHOR_FILE)


def fails(kind: str, *words: str) -> str:
    """verify_audit fails with ``kind`` first, naming ``words``; the command exits 1 saying so."""
    report = audit_verify()
    assert not report.ok, "verify_audit answered OK"
    first = report.problems[0]
    assert first.kind == kind, report.problems
    for word in words:
        assert word in first.message
    with pytest.raises(CommandError) as raised:
        run_command("verify_audit")
    assert first.message in str(raised.value)
    return first.message


def forge_event(event_id: int | None = None, **fields: Any) -> AuditEvent:
    values = {"event_time": timezone.now(), "event_name": "Decrypt", "origin": "api", **fields}
    with tampering():
        if event_id is None:
            return AuditEvent.objects.create(**values)
        return AuditEvent.objects.bulk_create([AuditEvent(id=event_id, **values)])[0]


# -- ids no digest range reaches ---------------------------------------------------------


@pytest.mark.parametrize("forged_id", [0, -7])
def test_it_detects_an_event_with_id_zero_or_below(three: list[AuditDigest], forged_id: int) -> None:
    forged = forge_event(forged_id)
    fails("event-inserted", f"event {forged.event_id} (id {forged_id})", "ids from 1")


@pytest.mark.postgres
def test_it_detects_a_tail_event_with_an_id_the_database_never_handed_out(three: list[AuditDigest]) -> None:
    top = AuditEvent.objects.order_by("-id").first().id
    forged = forge_event(top + 50)
    fails("event-inserted", f"(id {forged.id})", "never handed out")


# -- the unsealed tail ---------------------------------------------------------------------


def test_it_detects_a_deleted_unsealed_tail(three: list[AuditDigest], activity: Callable[[int], None]) -> None:
    activity(3)
    tail = AuditEvent.objects.filter(id__gt=three[-1].last_event_id)
    # The tail starts with the newest digest's own seal event.
    assert tail.count() == 4 and tail.order_by("id").first().event_name == SEAL_EVENT
    with tampering():
        tail.delete()
    fails("event-deleted", "seal event of digest 3", "recorded after digest 3")


def test_it_reports_the_tail_and_warns_when_it_grows_stale(
    three: list[AuditDigest], activity: Callable[[int], None], settings: Any
) -> None:
    settings.KMSWEB_SEALING_BEHIND_SECONDS = 120
    start = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        activity(2)
    first_new = three[-1].last_event_id + 1
    report = audit_verify(now=start + timedelta(seconds=119))
    assert report.ok and not report.warnings
    assert (report.unsealed, report.tail_first_id) == (3, first_new)  # the seal event, then the two
    assert report.tail_oldest == start
    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        report = audit_verify()
        assert report.ok and report.tail_stale and report.tail_age_seconds == 600
        assert "waits for 600 s, more than 120 s: is the seal_audit job running?" in report.warnings[0].message
        out, err = run_command("verify_audit")
        assert out.startswith("OK: ") and "3 events not sealed yet" in out
        assert "warning: 3 events are not sealed yet" in err
        with pytest.raises(CommandError, match="the unsealed tail is stale"):
            run_command("verify_audit", "--fail-on-stale-tail")
        seal()
        assert not audit_verify().warnings
        run_command("verify_audit", "--fail-on-stale-tail")


# -- the anchor --------------------------------------------------------------------------


def test_each_seal_appends_a_signed_line_to_the_anchor(three: list[AuditDigest], settings: Any) -> None:
    lines = [json.loads(line) for line in anchor_path(settings).read_text().splitlines()]
    assert [line["sequence"] for line in lines] == [1, 2, 3]
    total = 0
    for line, digest in zip(lines, three, strict=True):
        total += digest.event_count
        assert line["digestSha256"] == digest.digest_sha256 and line["lastEventId"] == digest.last_event_id
        assert line["totalEvents"] == total and line["signature"] == digest.signature
    assert lines[2]["previousDigestSha256"] == three[1].digest_sha256


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_openssl_verifies_an_anchor_line_with_the_public_key_alone(
    three: list[AuditDigest], settings: Any, tmp_path: Path
) -> None:
    line = json.loads(anchor_path(settings).read_text().splitlines()[-1])
    (tmp_path / "key.pem").write_text(SigningKey.objects.get(fingerprint=line["keyFingerprint"]).public_pem)
    (tmp_path / "hash.bin").write_bytes(bytes.fromhex(line["digestSha256"]))
    (tmp_path / "sig.der").write_bytes(base64.b64decode(line["signature"]))
    verify = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "key.pem", "-in", "hash.bin", "-sigfile", "sig.der"]
    ok = subprocess.run(verify, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout
    (tmp_path / "hash.bin").write_bytes(bytes(32))
    assert subprocess.run(verify, cwd=tmp_path, capture_output=True, check=False).returncode != 0


def test_it_detects_the_newest_digests_deleted_with_their_events(three: list[AuditDigest]) -> None:
    with tampering():
        AuditEvent.objects.filter(id__gt=three[0].last_event_id).delete()
        AuditDigest.objects.filter(sequence__gt=1).delete()
    fails("digest-missing", "anchor records digest 3", "newest is digest 1: digests 2-3 were deleted")


def test_only_the_anchor_finds_deleted_digests_behind_a_forged_seal_event(three: list[AuditDigest]) -> None:
    with tampering():
        AuditEvent.objects.filter(id__gt=three[0].last_event_id).delete()
        AuditDigest.objects.filter(sequence__gt=1).delete()
    # The seal event of digest 1 (sealed in the deleted digest 2) is forged back into the tail.
    forge_event(
        event_name=SEAL_EVENT,
        origin="system",
        response_elements={"sequence": 1, "digestSha256": three[0].digest_sha256},
    )
    assert audit_verify(check_anchor=False).ok
    fails("digest-missing", "digests 2-3 were deleted")


def test_it_detects_both_tables_emptied(three: list[AuditDigest], activity: Callable[[int], None]) -> None:
    with tampering():
        AuditEvent.objects.all().delete()
        AuditDigest.objects.all().delete()
    fails("digest-missing", "anchor records digest 3", "the audit tables were emptied")
    activity(1)
    with pytest.raises(InvalidState, match="does not hold it"):
        seal()  # a fresh chain would look intact: sealing stops instead
    assert not AuditDigest.objects.exists()


def test_it_detects_a_chain_rewritten_past_its_anchor(
    three: list[AuditDigest], activity: Callable[[int], None], settings: Any, tmp_path: Path
) -> None:
    real = anchor_path(settings)
    # Digest 3 and what followed are deleted, and sealed anew while the
    # sealer wrote to a copy of the anchor that stops at digest 2.
    with tampering():
        AuditEvent.objects.filter(id__gt=three[1].last_event_id).delete()
        AuditDigest.objects.filter(sequence=3).delete()
    copy = tmp_path / "other-anchor.log"
    copy.write_bytes(b"".join(real.read_bytes().splitlines(keepends=True)[:2]))
    settings.KMSWEB_AUDIT_ANCHOR_FILE = copy
    activity(1)
    rewritten = seal()
    assert rewritten is not None and rewritten.sequence == 3 and rewritten.digest_sha256 != three[2].digest_sha256
    settings.KMSWEB_AUDIT_ANCHOR_FILE = real
    fails("anchor-mismatch", "digest 3 in the database is not the one the audit anchor records")


def test_it_detects_an_edited_or_forged_anchor_line(three: list[AuditDigest], settings: Any) -> None:
    path = anchor_path(settings)
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    line = json.loads(lines[-1])
    path.write_bytes(b"".join(lines[:-1]) + json.dumps({**line, "totalEvents": 1}).encode() + b"\n")
    fails("anchor-mismatch", "digest 3")
    forged = {**line, "sequence": 4, "digestSha256": "ab" * 32}
    path.write_bytes(original + json.dumps(forged).encode() + b"\n")
    fails("anchor-corrupt", "digest 4 with a signature that does not verify")
    path.write_bytes(original[:-1])
    fails("anchor-corrupt", "cut short")


def test_a_missing_anchor_fails_closed_until_anchor_audit(
    three: list[AuditDigest], activity: Callable[[int], None], settings: Any
) -> None:
    path = anchor_path(settings)
    path.unlink()
    fails("anchor-missing", "missing or empty", "manage.py anchor_audit")
    activity(1)
    with pytest.raises(InvalidState, match="anchor_audit"):
        seal()
    failed = AuditEvent.objects.filter(event_name=SEAL_EVENT).order_by("-id").first()
    assert failed.error_code == "KMSInvalidStateException" and not path.exists()
    out, _ = run_command("anchor_audit")
    assert out.startswith("Anchored 3 digests")
    anchored = AuditEvent.objects.get(event_name="AnchorAuditTrail")
    assert anchored.error_code == "" and anchored.response_elements["anchoredDigests"] == 3
    assert audit_verify().ok
    assert seal().sequence == 4
    assert [json.loads(x)["sequence"] for x in path.read_text().splitlines()] == [1, 2, 3, 4]
    with pytest.raises(CommandError, match="already exists"):
        run_command("anchor_audit")


def test_anchor_audit_refuses_a_trail_that_fails_verification(three: list[AuditDigest], settings: Any) -> None:
    path = anchor_path(settings)
    path.unlink()
    with tampering():
        AuditEvent.objects.filter(id=three[1].last_event_id).delete()
    with pytest.raises(CommandError, match="fails verification .*was deleted.*will not anchor it"):
        run_command("anchor_audit")
    assert not path.exists()
    refused = AuditEvent.objects.get(event_name="AnchorAuditTrail")
    assert refused.error_code == "KMSInvalidStateException"


def test_the_sealer_catches_up_a_lagging_anchor(three: list[AuditDigest], settings: Any) -> None:
    path = anchor_path(settings)
    # A crash between a digest's commit and its anchor line.
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:2]))
    report = audit_verify()
    assert report.ok and [w.kind for w in report.warnings] == ["anchor-lag"]
    seal()
    assert len(path.read_text().splitlines()) == 3
    assert not audit_verify().warnings


# -- exports refuse a trail that fails ------------------------------------------------------


def test_export_audit_refuses_to_sign_when_the_trail_fails(
    three: list[AuditDigest], tmp_path: Path, settings: Any
) -> None:
    out = tmp_path / "bundle"
    run_command("export_audit", "--format", "jsonl", "--out", str(out))
    assert (out / "manifest.sig").is_file()
    with tampering():
        AuditEvent.objects.filter(id__gt=three[1].last_event_id).delete()
        AuditDigest.objects.filter(sequence=3).delete()
    refused = tmp_path / "refused"
    with pytest.raises(CommandError, match="fails verification .*digest 3 was deleted.*will not sign an export"):
        run_command("export_audit", "--format", "jsonl", "--out", str(refused), "--event", "Encrypt")
    assert not refused.exists()
    event = AuditEvent.objects.filter(event_name="ExportAuditEvents").order_by("-id").first()
    assert event.error_code == "KMSInvalidStateException"


def test_export_audit_refuses_an_event_with_id_zero(three: list[AuditDigest], tmp_path: Path) -> None:
    forge_event(0)
    with pytest.raises(CommandError, match="ids from 1"):
        run_command("export_audit", "--format", "csv", "--out", str(tmp_path / "refused"))


def test_a_dashboard_export_fails_with_the_refusal(three: list[AuditDigest], key_admin: Any) -> None:
    from audit.filters import AuditFilter
    from audit.services.exporting import audit_export_request, audit_export_run

    caller = Caller.system("tests-export", account_id=key_admin.account_id)
    export = audit_export_request(caller=caller, fmt="jsonl", flt=AuditFilter.parse({})[0])
    # The trail fails between the request and the job: the job refuses to sign.
    forge_event(-1)
    done = audit_export_run(export_id=str(export.id))
    assert done is not None and done.state == "failed" and "fails verification" in done.error
    # A new request is refused at once, by the quick check.
    with pytest.raises(InvalidState, match="fails verification .*ids from 1"):
        audit_export_request(caller=caller, fmt="jsonl", flt=AuditFilter.parse({})[0])
    started = AuditEvent.objects.filter(event_name="StartAuditExport").order_by("-id").first()
    assert started.error_code == "KMSInvalidStateException"


# -- the dashboard -----------------------------------------------------------------------


def test_the_audit_page_shows_the_trails_integrity(
    three: list[AuditDigest], auditor_user: Any, signed_in: Any, activity: Callable[[int], None]
) -> None:
    auditor: Client = signed_in(auditor_user)
    html = auditor.get("/audit/").content.decode()
    assert 'id="audit-integrity"' in html and "Intact" in html and "anchored through digest 3" in html
    with tampering():
        AuditEvent.objects.filter(id__gt=three[0].last_event_id).delete()
        AuditDigest.objects.filter(sequence__gt=1).delete()
    html = auditor.get("/audit/").content.decode()
    assert "Verification failed" in html and "digests 2-3 were deleted" in html
    # Exporting is refused inline, in the export panel.
    html = auditor.post("/audit/exports/", {"format": "jsonl"}, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="audit-export-error"' in html and "will not sign an export" in html
    assert not AuditExport.objects.exists()


@pytest.mark.parametrize(
    ("attack", "words"),
    [
        ("id-zero", "ids from 1"),
        ("tail-deleted", "seal event of digest 3 was deleted"),
        ("emptied", "the audit tables were emptied"),
        ("anchor-missing", "missing or empty"),
    ],
)
def test_the_quick_check_finds_each_attack(
    three: list[AuditDigest], activity: Callable[[int], None], settings: Any, attack: str, words: str
) -> None:
    from audit.verification import audit_integrity

    assert audit_integrity().ok
    activity(1)
    with tampering():
        if attack == "id-zero":
            forge_event(0)
        elif attack == "tail-deleted":
            AuditEvent.objects.filter(id__gt=three[-1].last_event_id).delete()
        elif attack == "emptied":
            AuditEvent.objects.all().delete()
            AuditDigest.objects.all().delete()
        else:
            anchor_path(settings).unlink()
    report = audit_integrity()
    assert not report.ok and words in report.problems[0].message, report.problems


def test_an_anchor_path_that_cannot_be_used_stops_sealing_with_a_clear_error(
    activity: Callable[[int], None], settings: Any, tmp_path: Path
) -> None:
    from audit.verification import audit_integrity

    (tmp_path / "a-directory").mkdir()
    (tmp_path / "a-directory" / "x").write_text("x")
    settings.KMSWEB_AUDIT_ANCHOR_FILE = tmp_path / "a-directory"
    activity(1)
    with pytest.raises(InvalidState, match="cannot be written: Is a directory"):
        seal()
    assert not AuditDigest.objects.exists()
    report = audit_integrity()
    assert [p.kind for p in report.problems] == ["anchor-corrupt"] and "cannot be read" in report.problems[0].message


# -- the operator's sink ---------------------------------------------------------------


@dataclass
class Sink:
    """A real HTTP receiver on loopback: what it was sent, and the status it answers."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 200

    def sequences(self) -> list[int]:
        return [line["sequence"] for _, body in self.received for line in json.loads(body)["lines"]]


@pytest.fixture
def sink(settings: Any) -> Iterator[Sink]:
    box: list[Sink] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            receiver = box[0]
            if receiver.status == 200:
                receiver.received.append((dict(self.headers), body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    box.append(Sink(url=f"http://127.0.0.1:{server.server_address[1]}/anchor?source=kmsweb"))
    settings.KMSWEB_AUDIT_ANCHOR_URL = box[0].url
    settings.KMSWEB_AUDIT_ANCHOR_SECRET = "sink-secret"
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_sink_receives_every_anchor_line_signed_in_order(
    sink: Sink, activity: Callable[[int], None], settings: Any
) -> None:
    for _ in range(2):
        activity(2)
        audit_seal_all(caller=SYSTEM)
    assert sink.sequences() == [1, 2]
    headers, body = sink.received[-1]
    expected = hmac.new(b"sink-secret", headers["X-Kmsweb-Timestamp"].encode() + b"." + body, hashlib.sha256)
    assert headers["X-Kmsweb-Signature"] == "sha256=" + expected.hexdigest()
    # The lines are the anchor's, byte for byte.
    anchored = anchor_path(settings).read_bytes().splitlines()
    assert [json.dumps(line, separators=(",", ":"), sort_keys=True).encode() for line in json.loads(body)["lines"]] == [
        anchored[1]
    ]


def test_a_sink_that_was_down_gets_what_it_missed_in_order(
    sink: Sink, activity: Callable[[int], None], settings: Any
) -> None:
    from audit.verification import audit_integrity

    activity(2)
    audit_seal_all(caller=SYSTEM)
    sink.status = 503
    for _ in range(2):
        activity(2)
        audit_seal_all(caller=SYSTEM)  # sealing goes on
    assert AuditDigest.objects.count() == 3 and sink.sequences() == [1]
    report = audit_integrity()
    assert report.ok and [w.kind for w in report.warnings] == ["anchor-sink-lag"]
    assert "has not acknowledged digests 2-3" in report.warnings[0].message
    sink.status = 200
    audit_seal_all(caller=SYSTEM)  # an idle round still delivers
    assert sink.sequences() == [1, 2, 3]
    audit_seal_all(caller=SYSTEM)
    assert sink.sequences() == [1, 2, 3], "nothing is sent twice once acknowledged"
    assert not audit_verify().warnings


def test_a_new_anchor_is_sent_to_the_sink_from_its_first_line(
    sink: Sink, activity: Callable[[int], None], settings: Any
) -> None:
    for _ in range(2):
        activity(2)
        audit_seal_all(caller=SYSTEM)
    assert sink.sequences() == [1, 2]
    path = anchor_path(settings)
    path.rename(path.with_name("investigated-anchor.log"))
    run_command("anchor_audit")
    activity(1)
    audit_seal_all(caller=SYSTEM)
    assert sink.sequences() == [1, 2, 1, 2, 3]
