"""Celery tasks of the audit app: dashboard exports and alarm notifications.

The periodic jobs (sealing, retention, usage roll-ups, alarm evaluation) are
declared in ``kmsweb.jobs`` and their tasks registered by ``kmsweb.tasks``."""

from __future__ import annotations

from celery import Task, shared_task

from audit.services.exporting import audit_export_run
from audit.services.notifications import notification_deliver


@shared_task(acks_late=True, soft_time_limit=3000, time_limit=3300, ignore_result=True)
def audit_export_task(export_id: str) -> str | None:
    """Write one queued dashboard export (its row's state says how it went)."""
    export = audit_export_run(export_id=export_id)
    return export.state if export else None


# The per-try connect and read timeouts (seconds) keep a try far below the soft limit.
@shared_task(bind=True, acks_late=True, soft_time_limit=30, time_limit=40, ignore_result=True, max_retries=None)
def notification_deliver_task(self: Task, notification_id: int) -> str | None:
    """Deliver one alarm notification; on failure retry later with exponential backoff."""
    row, delay = notification_deliver(notification_id=notification_id)
    if delay is not None:
        raise self.retry(countdown=delay)
    return row.status if row else None
