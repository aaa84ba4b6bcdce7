"""Exports: a filtered range written as a signed bundle (``audit.exports``),
from the command line at once or from the dashboard as a Celery job.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Min, QuerySet
from django.utils import timezone

from audit import canonical, exports
from audit.filters import AuditFilter
from audit.models import AuditDigest, AuditEvent, AuditExport, ExportState, SigningKey
from audit.report import write_pdf
from audit.rows import event_rows
from audit.selectors import audit_events_for, report_data
from audit.services.recording import audited
from audit.services.signing import EVENT_SOURCE, signing_key_current, signing_key_sign
from audit.verification import Report, audit_integrity, audit_verify
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidState, KmsError, ValidationError
from policies.authorization import authorize

logger = logging.getLogger(__name__)

EXPORT_EVENT = "ExportAuditEvents"
START_EVENT = "StartAuditExport"
CHUNK = 5000


def iter_rows(
    qs: QuerySet[AuditEvent], *, through_id: int, after_id: int = 0, chunk: int | None = None
) -> Iterator[Sequence[Any]]:
    """The rows of ``qs`` up to ``through_id`` in id order, ``chunk`` at a time.

    Keyset chunks rather than one server-side cursor: no transaction stays
    open for the length of an export, and memory holds one chunk.
    """
    return event_rows(qs, after_id=after_id, through_id=through_id, chunk=chunk or CHUNK)


def retention_start(now: datetime) -> datetime | None:
    days = settings.KMSWEB_AUDIT_RETENTION_DAYS
    return now - timedelta(days=days) if days > 0 else None


def _events_checked(*, caller: Caller, fmt: str, flt: AuditFilter, now: datetime) -> tuple[QuerySet[AuditEvent], int]:
    """The events to export, after the checks every export shares; raises ``ValidationError``."""
    if fmt not in exports.FORMATS:
        raise ValidationError(f"Unknown format '{fmt}': use one of {', '.join(exports.FORMATS)}.")
    start = retention_start(now)
    if start is not None and flt.since is not None and flt.since < start:
        raise ValidationError(
            f"The range starts at {canonical.iso(flt.since)}, before the retention period "
            f"({settings.KMSWEB_AUDIT_RETENTION_DAYS} days, from {canonical.iso(start)}): older events are "
            "archived under KMSWEB_AUDIT_ARCHIVE_DIR. Start the range later, or use the archive."
        )
    events = flt.apply(audit_events_for(caller=caller))
    count = events.count()
    if count == 0:
        raise ValidationError("No event matches this filter and range: nothing was exported.")
    return events, count


def _verified(first_id: int, last_id: int) -> None:
    """Refuse (``InvalidState``) to sign a range when the trail fails verification.

    The events of the digests covering the range are re-hashed; the chain,
    the anchor, the ids and the seal events are checked for the whole trail
    (a signed export of a range the anchored chain does not vouch for would
    lend it kmsweb's signature).
    """
    _refuse_if_failing(audit_verify(events_between=(first_id, last_id)))


def _refuse_if_failing(report: Report) -> None:
    if not report.ok:
        raise InvalidState(
            f"The audit trail fails verification ({report.problems[0].message}): kmsweb will not sign an export "
            "until this is investigated (manage.py verify_audit)."
        )


def bundle_signer() -> exports.Signer:
    key = signing_key_current()
    return exports.Signer(
        fingerprint=key.fingerprint, public_pem=key.public_pem, sign=lambda data: signing_key_sign(key=key, data=data)
    )


def covering_digests(first_id: int | None, last_id: int | None) -> Iterable[exports.DigestLine]:
    if first_id is None or last_id is None:
        return []
    rows = (
        AuditDigest.objects.filter(last_event_id__gte=first_id, first_event_id__lte=last_id)
        .order_by("sequence")
        .defer("leaves")
        .iterator(chunk_size=500)
    )
    return (exports.DigestLine(canonical.digest_document_of(d), d.digest_sha256, d.signature) for d in rows)


def public_key_map() -> dict[str, str]:
    return dict(SigningKey.objects.values_list("fingerprint", "public_pem"))


def audit_export_write(
    *,
    caller: Caller,
    fmt: str,
    flt: AuditFilter,
    out_dir: Path,
    progress: Callable[[int], object] | None = None,
    now: datetime | None = None,
    requested_by: str | None = None,
) -> exports.Bundle:
    """Write the export bundle of ``flt`` in ``fmt`` to ``out_dir`` (which must be new or empty).

    Authorized as ``kmsweb:ExportAudit``; recorded as ``ExportAuditEvents``.
    An empty range, a range reaching past retention, an unknown format or
    a non-empty directory is refused before anything is written; so is any
    range while the trail fails ``audit_verify`` (``InvalidState``).
    ``requested_by`` names the person a queued export is written for (the
    worker's caller is the system); the manifest's ``requestedBy`` is them.
    """
    now = now or timezone.now()
    params = {"Format": fmt, "Filter": flt.describe()}
    with audited(
        caller, EXPORT_EVENT, request_parameters=params, read_only=True, event_source=EVENT_SOURCE, atomic=False
    ) as op:
        authorize(caller=caller, action="kmsweb:ExportAudit")
        events, count = _events_checked(caller=caller, fmt=fmt, flt=flt, now=now)
        span = events.aggregate(a=Min("id"), b=Max("id"))
        through_id = span["b"]
        _verified(span["a"], through_id)
        write_data: Callable[[BinaryIO], exports.Stats] | None = None
        if fmt == "pdf":

            def write_data(out: BinaryIO) -> exports.Stats:
                write_pdf(out, report_data(caller=caller, flt=flt, events=events, now=now))
                agg = events.aggregate(
                    n=Count("id"), a=Min("id"), b=Max("id"), o=Min("event_time"), w=Max("event_time")
                )
                return exports.Stats(agg["n"], agg["a"], agg["b"], agg["o"], agg["w"])

        sealed_through = AuditDigest.objects.aggregate(m=Max("last_event_id"))["m"] or 0
        try:
            bundle = exports.write_bundle(
                out_dir=out_dir,
                fmt=fmt,
                rows=None if write_data else iter_rows(events, through_id=through_id),
                write_data=write_data,
                digests=lambda stats: covering_digests(stats.first_id, stats.last_id),
                public_keys=public_key_map(),
                signer=bundle_signer(),
                manifest_fields={
                    "createdAt": canonical.iso(now),
                    "requestedBy": requested_by or caller.principal_arn,
                    "scope": {"accountId": caller.account_id or "*"},
                    "filter": flt.describe(),
                    "timeRange": {
                        "since": canonical.iso(flt.since) if flt.since else None,
                        "until": canonical.iso(flt.until) if flt.until else None,
                    },
                    "sealedThroughEventId": sealed_through,
                },
                progress=progress,
            )
        except exports.BundleError as exc:
            raise ValidationError(str(exc)) from exc
        op.response_elements = {
            "EventCount": bundle.stats.count,
            "Files": [f["name"] for f in bundle.manifest["files"]],
            "ManifestSha256": exports.file_sha256(out_dir / exports.MANIFEST),
        }
    return bundle


def export_root(export_id: object) -> Path:
    return Path(settings.KMSWEB_AUDIT_EXPORT_DIR) / str(export_id)


def export_zip_path(export: AuditExport) -> Path:
    return export_root(export.id) / f"kmsweb-audit-{export.format}-{export.id}.zip"


def audit_export_request(*, caller: Caller, fmt: str, flt: AuditFilter, now: datetime | None = None) -> AuditExport:
    """Queue a dashboard export; the worker writes it (``audit_export_run``).

    The checks run now, so the user sees an empty range, a bad format or a
    trail that fails the quick integrity check (``audit_integrity``) at
    once; the job runs the full check before it signs. Recorded as
    ``StartAuditExport``; the task is enqueued on commit.
    """
    from audit.tasks import audit_export_task

    now = now or timezone.now()
    with audited(
        caller, START_EVENT, request_parameters={"Format": fmt, "Filter": flt.describe()}, event_source=EVENT_SOURCE
    ) as op:
        authorize(caller=caller, action="kmsweb:ExportAudit")
        _, count = _events_checked(caller=caller, fmt=fmt, flt=flt, now=now)
        _refuse_if_failing(audit_integrity())
        export = AuditExport.objects.create(
            account_id=caller.account_id,
            requested_by=caller.principal_arn,
            format=fmt,
            filter=flt.filter_params(),
            total=count,
            created_at=now,
        )
        op.response_elements = {"ExportId": str(export.id), "EventCount": count}
        transaction.on_commit(lambda: audit_export_task.delay(str(export.id)))
    return export


def audit_export_run(*, export_id: str) -> AuditExport | None:
    """Write a queued export: claim it, stream it with progress, zip it. None if already claimed."""
    if AuditExport.objects.filter(pk=export_id, state=ExportState.QUEUED).update(state=ExportState.RUNNING) != 1:
        return None
    export = AuditExport.objects.get(pk=export_id)
    caller = Caller.system("audit-export", account_id=export.account_id)
    root = export_root(export.id)
    flt, errors = AuditFilter.parse(export.filter)
    try:
        if errors:
            raise ValidationError("; ".join(errors.values()))
        shutil.rmtree(root, ignore_errors=True)
        bundle = audit_export_write(
            caller=caller,
            fmt=export.format,
            flt=flt,
            out_dir=root / "bundle",
            progress=lambda n: AuditExport.objects.filter(pk=export.pk).update(progress=n),
            now=export.created_at,
            requested_by=export.requested_by,
        )
        archive = shutil.make_archive(str(export_zip_path(export).with_suffix("")), "zip", root_dir=root / "bundle")
        shutil.rmtree(root / "bundle")
        logger.info("audit export %s written to %s", export.id, archive)
        # The count queued with the request is an estimate: events recorded since (the
        # StartAuditExport event itself among them) can fall in the range. Say what the bundle holds.
        AuditExport.objects.filter(pk=export.pk).update(
            state=ExportState.DONE, total=bundle.stats.count, progress=bundle.stats.count, finished_at=timezone.now()
        )
    except KmsError as exc:
        AuditExport.objects.filter(pk=export.pk).update(
            state=ExportState.FAILED, error=exc.message, finished_at=timezone.now()
        )
    except Exception:
        logger.exception("audit export %s failed", export.id)
        AuditExport.objects.filter(pk=export.pk).update(
            state=ExportState.FAILED, error="An internal error occurred.", finished_at=timezone.now()
        )
        raise
    export.refresh_from_db()
    return export


def audit_export_download(*, caller: Caller, export: AuditExport) -> Path:
    """The zip of a finished export; ``kmsweb:ExportAudit``, recorded as ``DownloadAuditExport``."""
    with audited(
        caller,
        "DownloadAuditExport",
        request_parameters={"ExportId": str(export.id)},
        read_only=True,
        event_source=EVENT_SOURCE,
    ):
        authorize(caller=caller, action="kmsweb:ExportAudit")
        path = export_zip_path(export)
        if export.state != ExportState.DONE or not path.is_file():
            raise ValidationError("This export is not ready (or its file was removed).")
        return path
