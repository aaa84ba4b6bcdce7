"""Celery task of the compliance app: the evaluation (hourly on beat, and debounced after changes)."""

from __future__ import annotations

from celery import shared_task

from audit.services.jobs import job_run
from compliance.services import compliance_evaluate
from kmsweb.lib.caller import Caller


# Not retried: the next trigger or the hourly run evaluates again.
@shared_task(acks_late=True, serializer="json", soft_time_limit=900, time_limit=960, ignore_result=True)
def compliance_evaluate_task() -> dict[str, int]:
    """Evaluate every compliance rule and record the findings that changed."""
    return job_run("evaluate_compliance", compliance_evaluate, caller=Caller.system("evaluate_compliance")).counts
