"""Celery tasks of the audit app: sealing, retention and export jobs, usage
roll-ups, alarm evaluation and alarm notifications."""

from __future__ import annotations

from celery import Task, shared_task

from audit.services.alarm_evaluation import alarms_evaluate
from audit.services.exporting import audit_export_run
from audit.services.jobs import job_run
from audit.services.notifications import notification_deliver
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


@shared_task(acks_late=True, soft_time_limit=50, time_limit=58, ignore_result=True)
def alarms_evaluate_task() -> dict[str, int]:
    """Evaluate every alarm and notify on transitions (every minute)."""
    return job_run("evaluate_alarms", alarms_evaluate, caller=Caller.system("evaluate_alarms")).counts


# The per-try connect and read timeouts (seconds) keep a try far below the soft limit.
@shared_task(bind=True, acks_late=True, soft_time_limit=30, time_limit=40, ignore_result=True, max_retries=None)
def notification_deliver_task(self: Task, notification_id: int) -> str | None:
    """Deliver one alarm notification; on failure retry later with exponential backoff."""
    row, delay = notification_deliver(notification_id=notification_id)
    if delay is not None:
        raise self.retry(countdown=delay)
    return row.status if row else None
