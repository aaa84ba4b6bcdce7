"""The periodic jobs by their operator names (``manage.py run_job NAME``).

Each entry is a service taking ``caller`` and ``now``; it runs through
``audit.services.jobs.job_run``, which records a ``JobRun`` under the same
name. Beat's schedule is ``CELERY_BEAT_SCHEDULE`` (settings), whose entries
carry the job names too; each entry's Celery task runs its job through
``job_run``. So one name ties a beat entry, its task, ``run_job`` and the
runs shown on the Jobs page.

The rest of this module reads the schedule for the Jobs page: a plain-words
description and the next run, computed with Celery's own schedule objects.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery.schedules import BaseSchedule, crontab, schedule
from django.conf import settings

from audit.services.alarm_evaluation import alarms_evaluate
from audit.services.jobs import JobFunction
from audit.services.retention import audit_archive_job
from audit.services.sealing import audit_seal_job
from audit.services.usage import usage_rollup
from compliance.services import compliance_evaluate
from keys.services.importing import keys_expire_imported_material
from keys.services.jobs import keys_delete_expired, keys_rotate_due
from policies.services.grant_requests import grant_requests_expire
from policies.services.grants import grants_retire_expired

JOBS: dict[str, JobFunction] = {
    "rotate_keys": keys_rotate_due,
    "delete_expired_keys": keys_delete_expired,
    "expire_imported_material": keys_expire_imported_material,
    "expire_grants": grants_retire_expired,
    "expire_grant_requests": grant_requests_expire,
    "seal_audit": audit_seal_job,
    "archive_audit": audit_archive_job,
    "rollup_usage": usage_rollup,
    "evaluate_alarms": alarms_evaluate,
    "evaluate_compliance": compliance_evaluate,
}

WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


@dataclass(frozen=True)
class PeriodicJob:
    """A job as the Jobs page lists it: its beat entry (if any) and whether ``run_job`` knows it."""

    name: str
    task: str | None
    schedule: BaseSchedule | None
    runnable: bool

    @property
    def words(self) -> str:
        return schedule_words(self.schedule) if self.schedule is not None else "not scheduled (run_job only)"


def periodic_jobs() -> list[PeriodicJob]:
    """Every job: beat's entries in their order, then registry jobs beat does not run.

    Read from settings and the registry each time, so a job added to either
    shows up without touching the page.
    """
    jobs = []
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        every = entry.get("schedule")
        sched = every if isinstance(every, BaseSchedule) else schedule(_as_timedelta(every))
        jobs.append(PeriodicJob(name=name, task=str(entry["task"]), schedule=sched, runnable=name in JOBS))
    scheduled = {job.name for job in jobs}
    jobs += [PeriodicJob(name=n, task=None, schedule=None, runnable=True) for n in JOBS if n not in scheduled]
    return jobs


def _as_timedelta(every: object) -> timedelta:
    if isinstance(every, timedelta):
        return every
    if isinstance(every, int | float):
        return timedelta(seconds=every)
    raise TypeError(f"unsupported beat schedule {every!r}")


def _count(n: int, unit: str) -> str:
    return f"every {unit}" if n == 1 else f"every {n} {unit}s"


def schedule_words(sched: BaseSchedule) -> str:
    """The schedule in plain words ("every 5 minutes", "daily at 03:10 UTC")."""
    if isinstance(sched, crontab):
        return _crontab_words(sched)
    if isinstance(sched, schedule):
        seconds = sched.run_every.total_seconds()
        for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
            if seconds >= size and seconds % size == 0:
                return _count(int(seconds // size), unit)
        return _count(int(seconds), "second") if seconds == int(seconds) else f"every {seconds:g} seconds"
    return str(sched)


def _crontab_words(sched: crontab) -> str:
    minute, hour, dom, moy, dow = (
        str(part)
        for part in (
            sched._orig_minute,
            sched._orig_hour,
            sched._orig_day_of_month,
            sched._orig_month_of_year,
            sched._orig_day_of_week,
        )
    )
    daily = dom == "*" and moy == "*"
    if daily and minute.isdigit():
        m = int(minute)
        if hour == "*" and dow == "*":
            return "hourly, on the hour" if m == 0 else f"hourly at {m:02d} past"
        if hour.startswith("*/") and hour[2:].isdigit() and dow == "*":
            return f"every {int(hour[2:])} hours at {m:02d} past"
        if hour.isdigit():
            at = f"{int(hour):02d}:{m:02d} UTC"
            if dow == "*":
                return f"daily at {at}"
            if dow.isdigit() and int(dow) < 7:
                return f"weekly on {WEEKDAYS[int(dow)]} at {at}"
    if daily and dow == "*" and hour == "*":
        if minute == "*":
            return "every minute"
        if minute.startswith("*/") and minute[2:].isdigit():
            return _count(int(minute[2:]), "minute")
    return f'cron "{minute} {hour} {dom} {moy} {dow}" (UTC)'


def next_run_at(sched: BaseSchedule, *, last_run_at: datetime | None, now: datetime) -> datetime:
    """When beat will next send the job, by Celery's own schedule logic.

    Counted from the last run (``remaining_estimate``); a job that never ran
    is counted from ``now`` (beat starts an interval when it first sees the
    entry). A job past due (beat was down, or the run is late) is due now:
    beat sends it on its next tick, once, however many runs were missed.
    """
    clocked = copy.copy(sched)
    clocked.nowfun = lambda: now  # the jobs' clock, not the process's
    since = last_run_at or now
    due, _ = clocked.is_due(since)
    if due and last_run_at is not None:
        return now
    return now + clocked.remaining_estimate(since)
