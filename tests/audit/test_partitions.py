"""The audit event table partitioned by month (PostgreSQL): partitions made
ahead, DEFAULT rows moved into their month, sealing and verification across
partitions, and retention dropping whole months once archived."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.db import connection

from audit import exports
from audit.models import AuditEvent
from audit.services.partitions import DEFAULT, TABLE, audit_partitions, audit_partitions_ensure, partitioned
from audit.services.retention import ARCHIVE_EVENT, audit_archive, audit_archive_job
from audit.services.sealing import audit_seal, audit_seal_job
from audit.verification import audit_verify
from keys import services as key_services
from kmsweb.lib.caller import Caller
from tests.audit.conftest import run_command, tampering
from tests.conftest import _persona

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SYSTEM = Caller.system("tests-partitions")


def _rows_in(table: str) -> int:
    with connection.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 (test's own names)
        return int(cur.fetchone()[0])


def _months(*months: tuple[int, int]) -> list[str]:
    return [f"{TABLE}_p{y:04d}{m:02d}" for y, m in months]


def _activity_on(days: list[datetime], settings: Any) -> list[Any]:
    """One key created and used on each day, sealed the same day."""
    digests = []
    admin = None
    for day in days:
        with time_machine.travel(day, tick=False):
            if admin is None:
                admin = _persona(settings.KMSWEB_ACCOUNT_ID, "partitioned").caller()
            key = key_services.key_create(caller=admin, description=f"{day:%b}")
            key_services.key_encrypt(caller=admin, key=key, plaintext=b"x")
            digests.append(audit_seal(caller=SYSTEM))
    return digests


def test_the_table_is_partitioned_by_month_with_a_default(db: None) -> None:
    assert partitioned()
    with connection.cursor() as cur:
        cur.execute(
            "SELECT pg_get_partkeydef(%s::regclass), pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'p'",
            [TABLE, TABLE],
        )
        key, primary = cur.fetchone()
    assert key == "RANGE (event_time)"
    assert primary == "PRIMARY KEY (id, event_time)"
    assert _rows_in(DEFAULT) == 0
    # The migration made this month and the next three.
    today = datetime.now(UTC).replace(day=15)
    names = [p.name for p in audit_partitions()]
    for n in range(4):
        month = (today.replace(day=1) + timedelta(days=32 * n)).replace(day=1)
        assert f"{TABLE}_p{month:%Y%m}" in names


def test_the_sealing_job_creates_the_months_ahead(db: None) -> None:
    with time_machine.travel(datetime(2031, 11, 20, tzinfo=UTC), tick=False):
        audit_seal_job(caller=SYSTEM, now=datetime.now(UTC))
    names = [p.name for p in audit_partitions()]
    assert set(_months((2031, 11), (2031, 12), (2032, 1), (2032, 2))) <= set(names)
    # Idempotent: a second run creates nothing.
    assert audit_partitions_ensure(now=datetime(2031, 11, 30, tzinfo=UTC)) == []


def test_events_of_a_month_without_partition_move_from_default_into_it(db: None, settings: Any) -> None:
    march = datetime(2025, 3, 10, 12, tzinfo=UTC)
    _activity_on([march], settings)
    in_default = _rows_in(DEFAULT)
    assert in_default == AuditEvent.objects.filter(event_time__year=2025).count() > 0
    created = audit_partitions_ensure(now=march)
    assert created == _months((2025, 3), (2025, 4), (2025, 5), (2025, 6))
    assert _rows_in(DEFAULT) == 0
    assert _rows_in(f"{TABLE}_p202503") == in_default
    # The moved rows are the same rows: the chain still verifies.
    report = audit_verify()
    assert report.ok, report.problems
    # And the append-only trigger holds on the attached partition.
    with pytest.raises(Exception, match="append-only"):
        AuditEvent.objects.filter(event_time__year=2025).update(source_ip="203.0.113.9")


def test_sealing_and_verification_span_partitions(db: None, settings: Any) -> None:
    audit_partitions_ensure(now=datetime(2025, 1, 1, tzinfo=UTC))
    days = [datetime(2025, m, 10, 12, tzinfo=UTC) for m in (1, 2, 3)]
    digests = _activity_on(days, settings)
    for name in _months((2025, 1), (2025, 2), (2025, 3)):
        assert _rows_in(name) > 0
    # The last digest seals events of two months (February's seal event and March's calls).
    report = audit_verify()
    assert report.ok, report.problems
    assert report.digests == 3
    victim = AuditEvent.objects.filter(event_time__month=2, event_time__year=2025).order_by("id").first()
    with tampering():
        AuditEvent.objects.filter(pk=victim.pk).update(source_ip="203.0.113.66")
    report = audit_verify()
    assert not report.ok
    assert str(victim.id) in report.problems[0].message
    assert digests[1].first_event_id <= victim.id <= digests[1].last_event_id


def test_retention_archives_then_drops_whole_months(db: None, settings: Any) -> None:
    settings.KMSWEB_AUDIT_RETENTION_DAYS = 30
    audit_partitions_ensure(now=datetime(2025, 1, 1, tzinfo=UTC))
    _activity_on([datetime(2025, m, 10, 12, tzinfo=UTC) for m in (1, 2, 3)], settings)
    january = _rows_in(f"{TABLE}_p202501")
    with time_machine.travel(datetime(2025, 3, 25, tzinfo=UTC), tick=False):
        counts = audit_archive_job(caller=SYSTEM, now=datetime.now(UTC))
    # Retention starts on 23 February: January and February's first digest are archived.
    names = [p.name for p in audit_partitions()]
    assert f"{TABLE}_p202501" not in names
    # February keeps the events of the digest still inside retention (its seal event).
    assert f"{TABLE}_p202502" in names
    assert _rows_in(f"{TABLE}_p202502") > 0
    recorded = AuditEvent.objects.get(event_name=ARCHIVE_EVENT)
    assert recorded.response_elements["droppedPartitions"] == [f"{TABLE}_p202501"]
    assert counts["events"] == recorded.response_elements["eventCount"] > january
    archive_dir = Path(recorded.response_elements["path"])
    check = exports.verify_bundle(archive_dir)
    assert check.ok, check.problems
    report = audit_verify()
    assert report.ok, report.problems
    out, _ = run_command("verify_audit")
    assert out.startswith("OK: 3 digests (2 archived)")


def test_retention_keeps_a_month_holding_an_event_inserted_into_the_archived_range(db: None, settings: Any) -> None:
    settings.KMSWEB_AUDIT_RETENTION_DAYS = 30
    audit_partitions_ensure(now=datetime(2025, 1, 1, tzinfo=UTC))
    _activity_on([datetime(2025, m, 10, 12, tzinfo=UTC) for m in (1, 2)], settings)
    with time_machine.travel(datetime(2025, 2, 20, tzinfo=UTC), tick=False):
        first = audit_archive(caller=SYSTEM)
    assert first is not None
    # Someone with database access adds an event into the archived range, in December.
    with tampering():
        AuditEvent.objects.bulk_create(
            [AuditEvent(id=1, event_time=datetime(2024, 12, 31, tzinfo=UTC), event_name="Decrypt", origin="api")]
        )
    audit_partitions_ensure(now=datetime(2024, 12, 1, tzinfo=UTC))
    with time_machine.travel(datetime(2025, 6, 1, tzinfo=UTC), tick=False):
        audit_archive(caller=SYSTEM)
    assert f"{TABLE}_p202412" in [p.name for p in audit_partitions()]
    report = audit_verify()
    assert report.problems[0].kind == "event-inserted"


def test_sealing_goes_on_when_a_partition_cannot_be_made(db: None, activity: Any) -> None:
    # A table in the way of November 2031's partition: creating it fails.
    with connection.cursor() as cur:
        cur.execute(f"CREATE TABLE {TABLE}_p203111 (x int)")
    activity(2)
    with time_machine.travel(datetime(2031, 11, 20, tzinfo=UTC), tick=False):
        counts = audit_seal_job(caller=SYSTEM, now=datetime.now(UTC))
    assert counts["digests"] == 1
    assert f"{TABLE}_p203111" not in [p.name for p in audit_partitions()]
