"""Running a background job: the ``JobRun`` record and its RunJob audit event.

Every periodic job (Celery beat or ``manage.py run_job``) runs through
``job_run``, which reads the clock once, hands the job a system caller and
that ``now``, and records how the run went in a ``JobRun`` row and in one
RunJob audit event. The job's own changes carry their own events
(RotateKey, DeleteKey, ...); RunJob says that the run happened and what it did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from audit.models import JobOutcome, JobRun
from audit.services.recording import audited
from kmsweb.lib import clock
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InternalError

EVENT_SOURCE = "kmsweb.jobs"
MAX_ERROR_CHARS = 4000

JobResult = Mapping[str, int] | int | None


class JobFunction(Protocol):
    def __call__(self, *, caller: Caller, now: datetime) -> JobResult: ...


def _counts(result: JobResult) -> dict[str, int]:
    if result is None:
        return {}
    if isinstance(result, int):
        return {"count": result}
    return {str(k): int(v) for k, v in result.items()}


def _describe(exc: BaseException) -> str:
    # audited() turns unexpected exceptions into InternalError; keep the real one.
    if isinstance(exc, InternalError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


def job_run(name: str, fn: JobFunction | Callable[..., Any], *, caller: Caller | None = None) -> JobRun:
    """Run ``fn(caller=..., now=...)`` as the job ``name`` and record the run.

    Side effects: a ``JobRun`` row (created ``running``, then ``ok`` with the
    counts ``fn`` returned, or ``failed`` with the error) and one RunJob
    audit event for the system caller. The job's work is not wrapped in a
    transaction here: each job commits per item, so a failure half-way keeps
    what was done. A failure is re-raised after it is recorded.
    """
    caller = caller or Caller.system(name)
    now = clock.now()
    run = JobRun.objects.create(name=name, started_at=now)
    try:
        with audited(
            caller, "RunJob", request_parameters={"JobName": name}, event_source=EVENT_SOURCE, atomic=False
        ) as op:
            op.additional_event_data["jobRunId"] = run.pk
            counts = _counts(fn(caller=caller, now=now))
            op.response_elements = {"counts": counts}
    except Exception as exc:
        run.finished_at, run.outcome, run.error = clock.now(), JobOutcome.FAILED, _describe(exc)
        run.save(update_fields=["finished_at", "outcome", "error"])
        raise
    run.finished_at, run.outcome, run.counts = clock.now(), JobOutcome.OK, counts
    run.save(update_fields=["finished_at", "outcome", "counts"])
    return run
