"""Celery tasks of grants, grant requests and STS sessions: expiry (beat)."""

from __future__ import annotations

from celery import shared_task

from audit.services.jobs import job_run
from kmsweb.lib.caller import Caller
from policies.services.grant_requests import grant_requests_expire
from policies.services.grants import grants_retire_expired
from policies.services.sts import sts_sessions_delete_expired

# Not retried: beat runs them again soon, and what is left stays expired-but-live
# only until the next run.


@shared_task(acks_late=True, serializer="json", soft_time_limit=50, time_limit=58, ignore_result=True)
def grants_retire_expired_task() -> dict[str, int]:
    """Retire the grants whose approved duration has ended (every minute)."""
    return job_run("expire_grants", grants_retire_expired, caller=Caller.system("expire_grants")).counts


@shared_task(acks_late=True, serializer="json", soft_time_limit=600, time_limit=660, ignore_result=True)
def grant_requests_expire_task() -> dict[str, int]:
    """Expire grant requests left pending too long (hourly)."""
    return job_run("expire_grant_requests", grant_requests_expire, caller=Caller.system("expire_grant_requests")).counts


@shared_task(acks_late=True, serializer="json", soft_time_limit=600, time_limit=660, ignore_result=True)
def sts_sessions_delete_expired_task() -> dict[str, int]:
    """Delete STS temporary credentials past their expiry (hourly)."""
    return job_run(
        "delete_expired_sessions", sts_sessions_delete_expired, caller=Caller.system("delete_expired_sessions")
    ).counts
