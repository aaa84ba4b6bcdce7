"""Celery tasks of the keys: automatic rotation, scheduled deletion and
expiry of imported key material (beat)."""

from __future__ import annotations

from celery import shared_task

from audit.services.jobs import job_run
from keys.services.importing import keys_expire_imported_material
from keys.services.jobs import keys_delete_expired, keys_rotate_due
from kmsweb.lib.caller import Caller

# Not retried: beat runs them again soon, and a key left due stays due.


@shared_task(acks_late=True, serializer="json", soft_time_limit=1500, time_limit=1700, ignore_result=True)
def keys_rotate_due_task() -> dict[str, int]:
    """Rotate the keys whose automatic rotation date has come (hourly)."""
    return job_run("rotate_keys", keys_rotate_due, caller=Caller.system("rotate_keys")).counts


@shared_task(acks_late=True, serializer="json", soft_time_limit=240, time_limit=280, ignore_result=True)
def keys_delete_expired_task() -> dict[str, int]:
    """Delete the keys whose deletion waiting period has ended (every 5 minutes)."""
    return job_run("delete_expired_keys", keys_delete_expired, caller=Caller.system("delete_expired_keys")).counts


@shared_task(acks_late=True, serializer="json", soft_time_limit=240, time_limit=280, ignore_result=True)
def keys_expire_imported_material_task() -> dict[str, int]:
    """Delete imported key material whose ValidTo has passed (every minute)."""
    return job_run(
        "expire_imported_material",
        keys_expire_imported_material,
        caller=Caller.system("expire_imported_material"),
    ).counts
