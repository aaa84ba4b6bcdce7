"""Celery tasks of the audit trail: sealing, retention and export jobs."""

from __future__ import annotations

from celery import shared_task

from audit.services.exporting import audit_export_run
from audit.services.jobs import job_run
from audit.services.retention import audit_archive_job
from audit.services.sealing import audit_seal_job
from audit.services.usage import usage_rollup
from kmsweb.lib.caller import Caller


@shared_task(acks_late=True, soft_time_limit=50, time_limit=58, ignore_result=True)
def audit_seal_task() -> dict[str, int]:
    """Seal new audit events (every minute); returns how many digests and events."""
    return job_run("seal_audit", audit_seal_job, caller=Caller.system("seal_audit")).counts


@shared_task(acks_late=True, soft_time_limit=3000, time_limit=3300, ignore_result=True)
def audit_archive_task() -> dict[str, int]:
    """Archive and delete sealed events past retention (daily)."""
    return job_run("archive_audit", audit_archive_job, caller=Caller.system("archive_audit")).counts


@shared_task(acks_late=True, soft_time_limit=3000, time_limit=3300, ignore_result=True)
def audit_export_task(export_id: str) -> str | None:
    """Write one queued dashboard export (its row's state says how it went)."""
    export = audit_export_run(export_id=export_id)
    return export.state if export else None


@shared_task(acks_late=True, soft_time_limit=50, time_limit=58, ignore_result=True)
def usage_rollup_task() -> dict[str, int]:
    """Count new audit events into the usage roll-ups (every minute)."""
    return job_run("rollup_usage", usage_rollup, caller=Caller.system("rollup_usage")).counts
