"""Retention: sealed ranges past retention are archived (and verify offline)
before they are deleted, and the chain still verifies across the cut."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine

from audit import exports
from audit.models import AuditArchive, AuditDigest, AuditEvent
from audit.services.retention import ARCHIVE_EVENT, audit_archive
from audit.services.sealing import audit_seal
from audit.verification import audit_verify
from keys import services as key_services
from kmsweb.lib.caller import Caller
from tests.audit.conftest import run_command, tampering
from tests.conftest import _persona

pytestmark = pytest.mark.django_db

START = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SYSTEM = Caller.system("tests-retention")


@pytest.fixture
def history(db: None, settings: Any) -> list[AuditDigest]:
    """Three days of activity, sealed daily, from the very first event; retention of 1 day."""
    settings.KMSWEB_AUDIT_RETENTION_DAYS = 1
    digests = []
    for day in range(3):
        with time_machine.travel(START + timedelta(days=day), tick=False):
            if day == 0:
                admin = _persona(settings.KMSWEB_ACCOUNT_ID, "historian").caller()
            key = key_services.key_create(caller=admin, description=f"day {day}")
            key_services.key_encrypt(caller=admin, key=key, plaintext=b"x")
            digests.append(audit_seal(caller=SYSTEM))
    return digests


def test_it_archives_then_deletes_sealed_ranges_past_retention(history: list[AuditDigest], settings: Any) -> None:
    with time_machine.travel(START + timedelta(days=2, hours=13), tick=False):
        archive = audit_archive(caller=SYSTEM)
    assert archive is not None
    # Days 0 and 1 are past a 1-day retention on day 2 + 13h; day 2 is not.
    assert (archive.first_sequence, archive.last_sequence) == (1, 2)
    assert archive.last_event_id == history[1].last_event_id
    assert not AuditEvent.objects.filter(id__lte=archive.last_event_id).exists()
    assert AuditEvent.objects.filter(id__gt=archive.last_event_id).exists()
    # Digests stay; the archive is a bundle that verifies against them, event by event.
    assert AuditDigest.objects.count() == 3
    path = Path(archive.path)
    assert path.parent == Path(settings.KMSWEB_AUDIT_ARCHIVE_DIR)
    check = exports.verify_bundle(path)
    assert check.ok, check.problems
    assert "every event matches its signed digest (2 digests)" in check.notes
    out, _ = run_command("verify_audit_export", str(path))
    assert out.startswith(f"OK: {path} ({archive.event_count} events, jsonl)")
    recorded = AuditEvent.objects.get(event_name=ARCHIVE_EVENT)
    assert recorded.response_elements["eventCount"] == archive.event_count


def test_the_chain_verifies_across_the_cut_and_keeps_growing(
    history: list[AuditDigest], activity: Callable[[int], None]
) -> None:
    # (activity's key and principal are made now, after the history)
    with time_machine.travel(START + timedelta(days=2, hours=13), tick=False):
        audit_archive(caller=SYSTEM)
        report = audit_verify()
        assert report.ok, report.problems
        assert report.archived_digests == 2
        activity(2)
        audit_seal(caller=SYSTEM)
    report = audit_verify()
    assert report.ok, report.problems
    assert report.digests == 4
    out, _ = run_command("verify_audit")
    assert out.startswith("OK: 4 digests (2 archived)")


def test_a_second_run_finds_nothing_more_to_archive(history: list[AuditDigest]) -> None:
    with time_machine.travel(START + timedelta(days=2, hours=13), tick=False):
        assert audit_archive(caller=SYSTEM) is not None
        assert audit_archive(caller=SYSTEM) is None
    assert AuditArchive.objects.count() == 1


def test_it_archives_nothing_with_retention_off(history: list[AuditDigest], settings: Any) -> None:
    settings.KMSWEB_AUDIT_RETENTION_DAYS = 0
    assert audit_archive(caller=SYSTEM) is None
    assert not AuditArchive.objects.exists()


def test_it_keeps_tampered_events_as_evidence(history: list[AuditDigest]) -> None:
    victim = AuditEvent.objects.filter(id__lte=history[0].last_event_id).first()
    with tampering():
        AuditEvent.objects.filter(pk=victim.pk).update(source_ip="203.0.113.66")
    before = AuditEvent.objects.count()
    with time_machine.travel(START + timedelta(days=2, hours=13), tick=False):
        with pytest.raises(Exception, match="does not verify, nothing was deleted"):
            audit_archive(caller=SYSTEM)
    assert not AuditArchive.objects.exists()
    # Nothing deleted; one more event: the failed archive run itself.
    assert AuditEvent.objects.count() == before + 1
    assert AuditEvent.objects.order_by("-id").first().error_code == "KMSInternalException"


def test_events_inserted_into_an_archived_range_are_found(history: list[AuditDigest]) -> None:
    with time_machine.travel(START + timedelta(days=2, hours=13), tick=False):
        archive = audit_archive(caller=SYSTEM)
    with tampering():
        AuditEvent.objects.bulk_create(
            [AuditEvent(id=archive.last_event_id, event_time=START, event_name="Decrypt", origin="api")]
        )
    report = audit_verify()
    assert report.problems[0].kind == "event-inserted"
    assert "archived range" in report.problems[0].message
