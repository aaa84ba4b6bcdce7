"""Retention: sealed ranges older than ``KMSWEB_AUDIT_RETENTION_DAYS`` leave
the database, archived first.

A run takes the oldest whole digests whose newest event is past retention,
writes their events (JSON Lines, complete: exactly the digests' events)
with the digests and a signed manifest under ``KMSWEB_AUDIT_ARCHIVE_DIR``,
verifies that bundle against the signed digests, and only then deletes the
events. Digest rows stay: ``verify_audit`` still walks the whole chain and
checks the archived digests' signatures and links.

On PostgreSQL the event table is partitioned by month: a month that ended
before the retention start and holds only events of the archived range is
dropped whole (no row-by-row DELETE, no bloat); the rest of the range is
deleted row by row.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit import canonical, exports
from audit.models import AuditArchive, AuditDigest, AuditEvent
from audit.services.exporting import bundle_signer, iter_rows, public_key_map, retention_start
from audit.services.partitions import audit_partitions_droppable, audit_partitions_ensure, drop_partitions
from audit.services.recording import audited
from audit.services.signing import EVENT_SOURCE
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InternalError

ARCHIVE_EVENT = "ArchiveAuditEvents"
# One run archives at most this many events; the next run takes the rest.
MAX_EVENTS_PER_RUN = 2_000_000


def audit_archive_job(*, caller: Caller, now: datetime) -> dict[str, int]:
    """The retention job's entry for ``job_run``: archive what is past retention, return counts.

    It also makes sure the next months' partitions exist (as the sealing job does).
    """
    audit_partitions_ensure(now=now)
    archive = audit_archive(caller=caller, now=now)
    return {"archives": 1 if archive else 0, "events": archive.event_count if archive else 0}


def audit_archive(*, caller: Caller, now: datetime | None = None) -> AuditArchive | None:
    """Archive and delete the sealed ranges past retention; None when there are none.

    Recorded as ``ArchiveAuditEvents``. The delete runs with the session
    setting ``kmsweb.audit_retention`` on, the one exception the
    PostgreSQL append-only trigger allows; whole months of the archived
    range are dropped as partitions instead.
    """
    now = now or timezone.now()
    start = retention_start(now)
    if start is None:
        return None
    last_archive = AuditArchive.objects.order_by("-last_sequence").first()
    first_sequence = last_archive.last_sequence + 1 if last_archive else 1
    chosen: list[AuditDigest] = []
    total = 0
    for digest in AuditDigest.objects.filter(sequence__gte=first_sequence).order_by("sequence").defer("leaves"):
        if digest.sequence != first_sequence + len(chosen) or digest.newest_event_time >= start:
            break
        if chosen and total + digest.event_count > MAX_EVENTS_PER_RUN:
            break
        chosen.append(digest)
        total += digest.event_count
    if not chosen:
        return None
    previous = AuditDigest.objects.filter(sequence=chosen[0].sequence - 1).values_list("last_event_id", flat=True)
    after_id = previous[0] if previous else 0
    through_id = chosen[-1].last_event_id
    out_dir = Path(settings.KMSWEB_AUDIT_ARCHIVE_DIR) / f"digests-{chosen[0].sequence:08d}-{chosen[-1].sequence:08d}"
    params = {"FirstSequence": chosen[0].sequence, "LastSequence": chosen[-1].sequence, "RetentionStart": start}
    with audited(caller, ARCHIVE_EVENT, request_parameters=params, event_source=EVENT_SOURCE, atomic=False) as op:
        try:
            exports.write_bundle(
                out_dir=out_dir,
                fmt="jsonl",
                rows=iter_rows(AuditEvent.objects.all(), through_id=through_id, after_id=after_id),
                digests=lambda stats: (
                    exports.DigestLine(canonical.digest_document_of(d), d.digest_sha256, d.signature) for d in chosen
                ),
                public_keys=public_key_map(),
                signer=bundle_signer(),
                manifest_fields={
                    "createdAt": canonical.iso(now),
                    "requestedBy": caller.principal_arn,
                    "scope": {"accountId": "*"},
                    "filter": {},
                    "timeRange": {"since": None, "until": canonical.iso(start)},
                    "retentionDays": settings.KMSWEB_AUDIT_RETENTION_DAYS,
                },
                complete=True,
            )
        except exports.BundleError as exc:
            raise InternalError(f"The audit archive could not be written: {exc}") from exc
        check = exports.verify_bundle(out_dir)
        if not check.ok:
            # The live events no longer match their digests: keep them, as evidence.
            raise InternalError(f"The audit archive does not verify, nothing was deleted: {check.problems[0]}")
        with transaction.atomic():
            dropped = audit_partitions_droppable(before=start, after_id=after_id, through_id=through_id)
            deleted = drop_partitions(dropped)
            if connection.vendor == "postgresql":
                with connection.cursor() as cur:
                    cur.execute("SET LOCAL kmsweb.audit_retention = 'on'")
            deleted += AuditEvent.objects.filter(id__gt=after_id, id__lte=through_id).delete()[0]
            archive = AuditArchive.objects.create(
                first_sequence=chosen[0].sequence,
                last_sequence=chosen[-1].sequence,
                last_event_id=through_id,
                event_count=deleted,
                oldest_event_time=min(d.oldest_event_time for d in chosen),
                newest_event_time=max(d.newest_event_time for d in chosen),
                path=str(out_dir),
                manifest_sha256=exports.file_sha256(out_dir / exports.MANIFEST),
                created_at=now,
            )
        op.response_elements = {
            "EventCount": deleted,
            "Path": str(out_dir),
            "DroppedPartitions": [p.name for p in dropped],
        }
    return archive
