"""The Celery tasks of the periodic jobs, one per job declared in ``kmsweb.jobs.JOBS``.

Each is named ``kmsweb.tasks.<service>_task``, carries its job's time limits,
and runs the job's service through ``job_run`` under the job's name, so a
beat entry, its task, ``run_job`` and the Jobs page share one name. Not
retried: beat runs them again soon, and work left due stays due.
"""

from __future__ import annotations

from celery import Task, shared_task

from audit.services.jobs import job_run
from kmsweb.jobs import JOBS, Job
from kmsweb.lib.caller import Caller


def _task_for(job: Job) -> Task:
    def run() -> dict[str, int]:
        return job_run(job.name, job.function(), caller=Caller.system(job.name)).counts

    run.__name__ = run.__qualname__ = job.task.rpartition(".")[2]
    run.__doc__ = f"The {job.name} job: {job.description}"
    task: Task = shared_task(
        name=job.task,
        acks_late=True,
        serializer="json",
        soft_time_limit=job.soft_time_limit,
        time_limit=job.time_limit,
        ignore_result=True,
    )(run)
    return task


# By job name: the tasks for tests and tools (beat and "Run now" use the task names).
JOB_TASKS: dict[str, Task] = {job.name: _task_for(job) for job in JOBS}
