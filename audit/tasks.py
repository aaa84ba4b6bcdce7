"""Celery tasks of the audit trail: sealing, retention and export jobs."""

from __future__ import annotations

from celery import shared_task

from audit.services.exporting import audit_export_run
from audit.services.retention import audit_archive
from audit.services.sealing import audit_seal_all
from kmsweb.lib.caller import Caller


@shared_task(acks_late=True, soft_time_limit=50, time_limit=58, ignore_result=True)
def audit_seal_task() -> int:
    """Seal new audit events (every minute); returns how many digests it made."""
    return len(audit_seal_all(caller=Caller.system("audit-seal")))


@shared_task(acks_late=True, soft_time_limit=3000, time_limit=3300, ignore_result=True)
def audit_archive_task() -> int | None:
    """Archive and delete sealed events past retention (daily)."""
    archive = audit_archive(caller=Caller.system("audit-retention"))
    return archive.event_count if archive else None


@shared_task(acks_late=True, soft_time_limit=3000, time_limit=3300, ignore_result=True)
def audit_export_task(export_id: str) -> str | None:
    """Write one queued dashboard export (its row's state says how it went)."""
    export = audit_export_run(export_id=export_id)
    return export.state if export else None
