"""The Jobs page's operations: the periodic jobs with their last and next
runs, one job's run history, and "Run now".

Seeing the jobs is ``kmsweb:ListJobs`` (key administrators, auditors and
administrators); starting one is ``kmsweb:RunJob`` (administrators). Both are
recorded like any other call. The job list is read from beat's schedule and
their declarations (``kmsweb.jobs.JOBS``) every time, so a job declared
there appears without changes here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import import_module

from django.db.models import Q
from django.utils.dateparse import parse_datetime
from kombu.exceptions import OperationalError

from audit.models import JobOutcome, JobRun
from audit.services.jobs import EVENT_SOURCE
from audit.services.recording import audited
from kmsweb.jobs import LOST_AFTER_GRACE, PeriodicJob, next_run_at, periodic_jobs
from kmsweb.lib import clock
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InternalError, NotFound, ValidationError
from policies.authorization import authorize

RUNS_PER_PAGE = 25


def run_lost(run: JobRun, *, limit: timedelta, now: datetime) -> bool:
    """Still "running" past the job's hard time limit and a grace: the worker died
    or was killed before it could record an outcome (the next run starts afresh;
    jobs are idempotent)."""
    return run.outcome == JobOutcome.RUNNING and now - run.started_at > limit + LOST_AFTER_GRACE


@dataclass(frozen=True)
class JobStatus:
    """A periodic job with its latest run and its next one."""

    job: PeriodicJob
    last: JobRun | None
    next_run: datetime | None
    now: datetime
    limit: timedelta

    @property
    def lost(self) -> bool:
        return self.last is not None and run_lost(self.last, limit=self.limit, now=self.now)

    @property
    def running(self) -> bool:
        return self.last is not None and self.last.outcome == JobOutcome.RUNNING and not self.lost

    @property
    def overdue(self) -> bool:
        return self.next_run is not None and self.next_run <= self.now

    @property
    def state(self) -> str:
        """The last run's state in one word: never, running, ok, failed or lost."""
        if self.last is None:
            return "never"
        return "lost" if self.lost else str(self.last.outcome)


@dataclass(frozen=True)
class RunPage:
    """One page of a job's runs, newest first, and the cursor of the next (older) page."""

    job: JobStatus
    runs: list[JobRun]
    older: str | None
    # Runs that never recorded an outcome (see ``run_lost``).
    lost: frozenset[int]


def _latest(name: str) -> JobRun | None:
    # One indexed read per job (name, -started_at): never a scan of the whole history.
    return JobRun.objects.filter(name=name).order_by("-started_at", "-id").first()


def _status(job: PeriodicJob, now: datetime) -> JobStatus:
    last = _latest(job.name)
    next_run = None
    if job.schedule is not None:
        next_run = next_run_at(job.schedule, last_run_at=last.started_at if last else None, now=now)
    return JobStatus(job=job, last=last, next_run=next_run, now=now, limit=job.time_limit)


def _job(name: str) -> PeriodicJob:
    for job in periodic_jobs():
        if job.name == name:
            return job
    raise NotFound(f"Job '{name}' does not exist.")


def job_list(*, caller: Caller) -> list[JobStatus]:
    """Every periodic job: schedule, last run and next run. ``kmsweb:ListJobs``; recorded as ListJobs."""
    with audited(caller, "ListJobs", read_only=True, event_source=EVENT_SOURCE):
        authorize(caller=caller, action="kmsweb:ListJobs")
        now = clock.now()
        return [_status(job, now) for job in periodic_jobs()]


def _cursor(run: JobRun) -> str:
    return f"{run.started_at.isoformat()}_{run.pk}"


def _parse_cursor(cursor: str) -> tuple[datetime, int]:
    moment, _, pk = cursor.rpartition("_")
    started = parse_datetime(moment) if moment else None
    if started is None or started.tzinfo is None or not pk.isdigit():
        raise ValidationError("The page cursor is not valid; start again from the newest runs.")
    return started, int(pk)


def job_runs(*, caller: Caller, name: str, before: str | None = None) -> RunPage:
    """One page of ``name``'s runs, newest first, older than the cursor ``before``.

    ``kmsweb:ListJobs``; recorded as ListJobRuns. Keyset paging on
    (started_at, id), so an old page costs what the first one does.
    """
    params = {"JobName": name, "Before": before} if before else {"JobName": name}
    with audited(caller, "ListJobRuns", request_parameters=params, read_only=True, event_source=EVENT_SOURCE):
        authorize(caller=caller, action="kmsweb:ListJobs")
        job = _job(name)
        qs = JobRun.objects.filter(name=name).order_by("-started_at", "-id")
        if before:
            started, pk = _parse_cursor(before)
            qs = qs.filter(Q(started_at__lt=started) | Q(started_at=started, id__lt=pk))
        runs = list(qs[: RUNS_PER_PAGE + 1])
        older = _cursor(runs[RUNS_PER_PAGE - 1]) if len(runs) > RUNS_PER_PAGE else None
        status = _status(job, clock.now())
        runs = runs[:RUNS_PER_PAGE]
        lost = frozenset(r.pk for r in runs if run_lost(r, limit=status.limit, now=status.now))
        return RunPage(job=status, runs=runs, older=older, lost=lost)


def _send(task: str) -> None:
    from kmsweb.celery import app

    # Beat names tasks "module.function"; importing the module registers it
    # here, so apply_async honours the app's settings (eager in tests).
    import_module(task.rpartition(".")[0])
    # No publish retries: a broker that is down is reported now, not after a wait.
    app.tasks[task].apply_async(retry=False)


def job_start(*, caller: Caller, name: str) -> datetime:
    """Queue one run of ``name`` now, as beat would ("Run now"); returns when it was queued.

    ``kmsweb:RunJob``; recorded as StartJob. The run itself records its
    ``JobRun`` and RunJob event when a worker takes it. Jobs are safe to run
    twice, so a second click costs a run, not a double rotation.

    The task is sent inside the StartJob transaction rather than on commit
    (the house rule for tasks that read what their service wrote): this task
    reads nothing StartJob writes, and sending here lets a broker that is
    down be refused and recorded as StartJob's outcome instead of failing
    after a successful event.
    """
    with audited(caller, "StartJob", request_parameters={"JobName": name}, event_source=EVENT_SOURCE) as op:
        authorize(caller=caller, action="kmsweb:RunJob")
        job = _job(name)
        queued_at = clock.now()
        try:
            _send(job.task)
        except (OperationalError, OSError) as exc:
            raise InternalError(
                f"The job queue could not be reached ({type(exc).__name__}); nothing was queued. "
                f"Try again, or run manage.py run_job {name} on a server."
            ) from exc
        op.response_elements = {"task": job.task, "queuedAt": queued_at.isoformat()}
        return queued_at
