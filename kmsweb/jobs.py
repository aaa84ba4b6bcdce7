"""The periodic jobs, each declared once: name, service, schedule, time limits
and what it does.

Everything else derives from ``JOBS``: the Celery tasks (``kmsweb/tasks.py``
registers one per job), beat's schedule (``CELERY_BEAT_SCHEDULE`` in
settings), ``manage.py run_job NAME``, the Jobs page, and the jobs table in
README.md (``python -m kmsweb.jobs`` prints it; a test keeps them equal).
Each run goes through ``audit.services.jobs.job_run``, which records a
``JobRun`` under the job's name.

This module is imported by settings, so it names services by dotted path and
imports them only when a job runs. The rest of it reads schedules for the
Jobs page: plain words, and the next run by Celery's own schedule objects.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from celery.schedules import BaseSchedule, crontab, schedule

if TYPE_CHECKING:
    from audit.services.jobs import JobFunction


def every(seconds: float) -> schedule:
    """An interval schedule of ``seconds``."""
    return schedule(timedelta(seconds=seconds))


@dataclass(frozen=True)
class Job:
    """One periodic job: its operator name, the service it runs, when, and for how long at most.

    ``service`` is the dotted path of a function ``(*, caller, now) -> counts``.
    ``soft_time_limit`` raises inside the task (the job can stop cleanly);
    at ``time_limit`` Celery kills the worker process, and a run still marked
    running after that (plus ``LOST_AFTER_GRACE``) is shown as lost.
    ``schedule`` None: run only on demand (``run_job``, "Run now").
    """

    name: str
    service: str
    schedule: BaseSchedule | None
    soft_time_limit: int
    time_limit: int
    description: str

    @property
    def task(self) -> str:
        """The Celery task's name: ``<service>_task``, as the house names tasks."""
        return f"kmsweb.tasks.{self.service.rpartition('.')[2]}_task"

    def function(self) -> JobFunction:
        from django.utils.module_loading import import_string

        return import_string(self.service)  # type: ignore[no-any-return]


JOBS: tuple[Job, ...] = (
    Job(
        name="seal_audit",
        service="audit.services.sealing.audit_seal_job",
        schedule=every(60),
        soft_time_limit=50,
        time_limit=58,
        description="Seal the new audit events into a signed digest chained to the previous one.",
    ),
    Job(
        name="rollup_usage",
        service="audit.services.usage.usage_rollup",
        schedule=every(60),
        soft_time_limit=50,
        time_limit=58,
        description="Count the new audit events into the usage roll-ups (charts, alarms).",
    ),
    Job(
        name="evaluate_alarms",
        service="audit.services.alarm_evaluation.alarms_evaluate",
        schedule=every(60),
        soft_time_limit=50,
        time_limit=58,
        description="Evaluate the alarms against the roll-ups; notify on state changes.",
    ),
    Job(
        name="archive_audit",
        service="audit.services.retention.audit_archive_job",
        schedule=crontab(hour=3, minute=10),
        soft_time_limit=3000,
        time_limit=3300,
        description="Archive (export and signed manifest) and delete sealed events past retention.",
    ),
    Job(
        name="rotate_keys",
        service="keys.services.jobs.keys_rotate_due",
        schedule=crontab(minute=0),
        soft_time_limit=1500,
        time_limit=1700,
        description="Rotate the keys whose automatic rotation date has come.",
    ),
    Job(
        name="delete_expired_keys",
        service="keys.services.jobs.keys_delete_expired",
        schedule=every(300),
        soft_time_limit=240,
        time_limit=280,
        description="Delete the keys whose deletion waiting period has ended.",
    ),
    Job(
        name="expire_imported_material",
        service="keys.services.importing.keys_expire_imported_material",
        schedule=every(60),
        soft_time_limit=240,
        time_limit=280,
        description="Delete imported key material whose expiration date (ValidTo) has passed.",
    ),
    Job(
        name="expire_grants",
        service="policies.services.grants.grants_retire_expired",
        schedule=every(60),
        soft_time_limit=50,
        time_limit=58,
        description="Retire the grants whose approved duration has ended.",
    ),
    Job(
        name="expire_grant_requests",
        service="policies.services.grant_requests.grant_requests_expire",
        schedule=crontab(minute=25),
        soft_time_limit=600,
        time_limit=660,
        description="Expire grant requests left pending too long.",
    ),
    Job(
        name="delete_expired_sessions",
        service="policies.services.sts.sts_sessions_delete_expired",
        schedule=crontab(minute=35),
        soft_time_limit=600,
        time_limit=660,
        description="Delete STS temporary credentials past their expiry.",
    ),
    Job(
        name="evaluate_compliance",
        service="compliance.services.compliance_evaluate",
        schedule=crontab(minute=40),
        soft_time_limit=900,
        time_limit=960,
        description="Evaluate the compliance rules; record the findings that changed (changes also trigger a run).",
    ),
    Job(
        name="start_campaigns",
        service="compliance.campaigns.campaigns_start_quarterly",
        # Quarterly: 06:00 UTC on the first day of January, April, July and October.
        schedule=crontab(minute=0, hour=6, day_of_month=1, month_of_year="1,4,7,10"),
        soft_time_limit=600,
        time_limit=660,
        description="Start the quarter's access re-certification campaign in every account.",
    ),
    Job(
        name="escalate_campaigns",
        service="compliance.campaigns.campaigns_escalate",
        schedule=crontab(minute=50),
        soft_time_limit=600,
        time_limit=660,
        description="Escalate campaign items pending at the deadline by email; revoke them where the account says so.",
    ),
)

# A run still marked running this long after its hard time limit is lost:
# the limit is enforced by the worker, and its clock may differ a little
# from the web server's.
LOST_AFTER_GRACE = timedelta(seconds=60)


class UnknownJob(KeyError):
    """No job has this name."""


def job_named(name: str) -> Job:
    """The declaration of ``name``; ``UnknownJob`` if there is none."""
    for job in JOBS:
        if job.name == name:
            return job
    raise UnknownJob(name)


def beat_schedule(intervals: dict[str, float] | None = None) -> dict[str, dict[str, object]]:
    """``CELERY_BEAT_SCHEDULE``: one entry per scheduled job, named after it.

    ``intervals`` ({name: seconds}, from ``KMSWEB_JOB_INTERVALS``) replaces
    those jobs' schedules (demos, end-to-end tests).
    """
    intervals = intervals or {}
    entries: dict[str, dict[str, object]] = {}
    for job in JOBS:
        sched = every(intervals[job.name]) if job.name in intervals else job.schedule
        if sched is not None:
            entries[job.name] = {"task": job.task, "schedule": sched}
    return entries


@dataclass(frozen=True)
class PeriodicJob:
    """A job as the Jobs page lists it: its declaration and the schedule beat really runs."""

    job: Job
    schedule: BaseSchedule | None

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def task(self) -> str:
        return self.job.task

    @property
    def runnable(self) -> bool:
        return True

    @property
    def time_limit(self) -> timedelta:
        return timedelta(seconds=self.job.time_limit)

    @property
    def words(self) -> str:
        return schedule_words(self.schedule) if self.schedule is not None else "not scheduled (run_job only)"


def periodic_jobs() -> list[PeriodicJob]:
    """Every declared job, with the schedule beat runs it on (settings may override it)."""
    from django.conf import settings

    beat = settings.CELERY_BEAT_SCHEDULE
    jobs = []
    for job in JOBS:
        entry = beat.get(job.name)
        sched = _as_schedule(entry["schedule"]) if entry is not None else None
        jobs.append(PeriodicJob(job=job, schedule=sched))
    return jobs


def _as_schedule(every_: object) -> BaseSchedule:
    if isinstance(every_, BaseSchedule):
        return every_
    if isinstance(every_, timedelta):
        return schedule(every_)
    if isinstance(every_, int | float):
        return every(every_)
    raise TypeError(f"unsupported beat schedule {every_!r}")


def jobs_table_markdown() -> str:
    """The jobs table of README.md, from the declarations."""
    lines = ["| job | schedule | time limit (soft / hard) | what it does |", "|---|---|---|---|"]
    for job in JOBS:
        words = schedule_words(job.schedule) if job.schedule is not None else "on demand only"
        lines.append(f"| `{job.name}` | {words} | {job.soft_time_limit} s / {job.time_limit} s | {job.description} |")
    return "\n".join(lines) + "\n"


MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def _count(n: int, unit: str) -> str:
    return f"every {unit}" if n == 1 else f"every {n} {unit}s"


def schedule_words(sched: BaseSchedule) -> str:
    """The schedule in plain words ("every 5 minutes", "daily at 03:10 UTC")."""
    if isinstance(sched, crontab):
        return _crontab_words(sched)
    if isinstance(sched, schedule):
        # celery-types does not declare schedule.run_every.
        seconds = cast(Any, sched).run_every.total_seconds()
        for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
            if seconds >= size and seconds % size == 0:
                return _count(int(seconds // size), unit)
        return _count(int(seconds), "second") if seconds == int(seconds) else f"every {seconds:g} seconds"
    return str(sched)


def _crontab_words(sched: crontab) -> str:
    # The fields as written (celery-types does not declare them).
    raw: Any = sched
    minute, hour, dom, moy, dow = (
        str(part)
        for part in (
            raw._orig_minute,
            raw._orig_hour,
            raw._orig_day_of_month,
            raw._orig_month_of_year,
            raw._orig_day_of_week,
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
    months = moy.split(",")
    quarterly = len(months) == 4 and all(m.isdigit() and 1 <= int(m) <= 12 for m in months)
    if quarterly and dom.isdigit() and dow == "*" and minute.isdigit() and hour.isdigit():
        names = [MONTHS[int(m) - 1] for m in months]
        day = f"day {int(dom)} of {', '.join(names[:-1])} and {names[-1]}"
        return f"quarterly, {day}, at {int(hour):02d}:{int(minute):02d} UTC"
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
    clocked: Any = copy.copy(sched)
    clocked.nowfun = lambda: now  # the jobs' clock, not the process's
    since = last_run_at or now
    due, _ = clocked.is_due(since)
    if due and last_run_at is not None:
        return now
    return now + clocked.remaining_estimate(since)


if __name__ == "__main__":
    print(jobs_table_markdown(), end="")
