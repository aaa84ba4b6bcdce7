"""The periodic jobs by their operator names (``manage.py run_job NAME``).

Each entry is a service taking ``caller`` and ``now``; it runs through
``audit.services.jobs.job_run``, which records a ``JobRun``. Beat's schedule
is in ``CELERY_BEAT_SCHEDULE`` (settings); the Celery tasks in each app's
``tasks.py`` use the same names.
"""

from __future__ import annotations

from audit.services.jobs import JobFunction
from audit.services.sealing import audit_seal_job
from keys.services.jobs import keys_delete_expired, keys_rotate_due
from policies.services.grant_requests import grant_requests_expire
from policies.services.grants import grants_retire_expired

JOBS: dict[str, JobFunction] = {
    "rotate_keys": keys_rotate_due,
    "delete_expired_keys": keys_delete_expired,
    "expire_grants": grants_retire_expired,
    "expire_grant_requests": grant_requests_expire,
    "seal_audit": audit_seal_job,
}
