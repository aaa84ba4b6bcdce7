"""The Jobs page: beat's jobs in plain words, last and next runs from Celery's
schedule logic, failed runs with their error, a run history with keyset
paging, polling only while something runs, roles, and "Run now"."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from celery.schedules import crontab, schedule
from django.conf import settings
from django.test import Client

from audit.models import AuditEvent, JobOutcome, JobRun
from audit.services.jobs import job_run
from kmsweb.celery import app as celery_app
from kmsweb.jobs import JOBS, LOST_AFTER_GRACE, beat_schedule, job_named, next_run_at, periodic_jobs, schedule_words
from kmsweb.lib.env import ImproperlyConfiguredEnv, env_job_intervals
from kmsweb.lib.errors import InternalError
from tests.dashboard_fixtures import DashboardUser

HX = {"HTTP_HX_REQUEST": "true"}
T0 = datetime(2025, 3, 1, 12, 7, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def auditor(auditor_user: DashboardUser, signed_in: Any) -> Client:
    return signed_in(auditor_user)


@pytest.fixture
def administrator(make_dashboard_user: Any, signed_in: Any) -> Client:
    return signed_in(make_dashboard_user("ada", "administrator"))


def counted(n: int) -> Any:
    def job(*, caller: Any, now: datetime) -> dict[str, int]:
        return {"rotated": n, "skipped": 0}

    return job


def broken(*, caller: Any, now: datetime) -> None:
    raise RuntimeError("root key provider unreachable")


def row(html: str, name: str) -> str:
    match = re.search(rf'<tr id="job-{name}".*?</tr>', html, re.S)
    assert match, f"no row for {name}"
    return match.group(0)


# -- the schedule, in words and in time ---------------------------------------------------


@pytest.mark.parametrize(
    ("sched", "words"),
    [
        (schedule(timedelta(seconds=60)), "every minute"),
        (schedule(timedelta(seconds=300)), "every 5 minutes"),
        (schedule(timedelta(hours=2)), "every 2 hours"),
        (schedule(timedelta(days=1)), "every day"),
        (schedule(timedelta(seconds=2)), "every 2 seconds"),
        (schedule(timedelta(seconds=1.5)), "every 1.5 seconds"),
        (crontab(minute=0), "hourly, on the hour"),
        (crontab(minute=25), "hourly at 25 past"),
        (crontab(hour=3, minute=10), "daily at 03:10 UTC"),
        (crontab(hour="*/6", minute=5), "every 6 hours at 05 past"),
        (crontab(hour=2, minute=15, day_of_week=1), "weekly on Monday at 02:15 UTC"),
        (crontab(), "every minute"),
        (crontab(minute="*/15"), "every 15 minutes"),
        (crontab(minute=0, hour=0, day_of_month=1), 'cron "0 0 1 * *" (UTC)'),
    ],
)
def test_it_words_a_schedule_plainly(sched: Any, words: str) -> None:
    assert schedule_words(sched) == words


@pytest.mark.parametrize(
    ("sched", "last", "expected"),
    [
        # An interval counts from the last run; never run, from now.
        (schedule(timedelta(minutes=5)), T0 - 3 * MINUTE, T0 + 2 * MINUTE),
        (schedule(timedelta(minutes=5)), None, T0 + 5 * MINUTE),
        # Crontabs: the next matching instant after the last run.
        (crontab(minute=0), T0 - 7 * MINUTE, datetime(2025, 3, 1, 13, 0, tzinfo=UTC)),
        (crontab(hour=3, minute=10), None, datetime(2025, 3, 2, 3, 10, tzinfo=UTC)),
        (crontab(minute=25), T0 - 2 * MINUTE, datetime(2025, 3, 1, 12, 25, tzinfo=UTC)),
        # Last run before a slot that has passed since: that slot was missed, so due now.
        (crontab(minute=25), T0 - 60 * MINUTE, T0),
        # Past due (beat was down for days): due now, once.
        (crontab(minute=0), T0 - timedelta(days=3), T0),
        (schedule(timedelta(minutes=1)), T0 - timedelta(days=3), T0),
    ],
)
def test_it_computes_the_next_run_from_the_last_with_celerys_schedule(
    sched: Any, last: datetime | None, expected: datetime
) -> None:
    assert next_run_at(sched, last_run_at=last, now=T0) == expected


def test_it_derives_beat_the_tasks_and_the_page_from_one_declaration_per_job() -> None:
    from kmsweb.tasks import JOB_TASKS

    names = [job.name for job in JOBS]
    assert len(set(names)) == len(names)
    assert [job.name for job in periodic_jobs()] == names
    assert list(settings.CELERY_BEAT_SCHEDULE) == [job.name for job in JOBS if job.schedule is not None]
    for job in JOBS:
        task = celery_app.tasks[job.task]
        assert JOB_TASKS[job.name].name == job.task
        assert (task.soft_time_limit, task.time_limit) == (job.soft_time_limit, job.time_limit)
        assert job.soft_time_limit < job.time_limit
        assert settings.CELERY_BEAT_SCHEDULE[job.name] == {"task": job.task, "schedule": job.schedule}
        assert callable(job.function())


def test_it_overrides_a_jobs_schedule_with_an_interval() -> None:
    entries = beat_schedule({"rotate_keys": 2.0})
    assert schedule_words(entries["rotate_keys"]["schedule"]) == "every 2 seconds"  # type: ignore[arg-type]
    assert entries["seal_audit"]["schedule"] == job_named("seal_audit").schedule


def test_the_readme_lists_the_declared_jobs() -> None:
    from kmsweb.jobs import jobs_table_markdown

    readme = (settings.BASE_DIR / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- jobs-table -->\n", 1)[1].split("<!-- /jobs-table -->", 1)[0]
    assert table == jobs_table_markdown(), "README's jobs table is stale: paste `python -m kmsweb.jobs` there"


@pytest.mark.django_db
def test_each_beat_task_records_its_run_under_its_entry_name(clock: time_machine.Coordinates) -> None:
    """The beat entry's name, the task's JobRun name and run_job's name are one."""
    from importlib import import_module

    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        task = str(entry["task"])
        import_module(task.rpartition(".")[0])
        celery_app.tasks[task].run()
        assert JobRun.objects.order_by("-id").values_list("name", "outcome")[0] == (name, JobOutcome.OK), task


def test_it_reads_job_intervals_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    known = ["rotate_keys", "seal_audit"]
    monkeypatch.setenv("KMSWEB_JOB_INTERVALS", "rotate_keys=2, seal_audit=0.5")
    assert env_job_intervals("KMSWEB_JOB_INTERVALS", known) == {"rotate_keys": 2.0, "seal_audit": 0.5}
    for bad in ("rotate_everything=2", "rotate_keys=0", "rotate_keys=-1", "rotate_keys=soon", "rotate_keys"):
        monkeypatch.setenv("KMSWEB_JOB_INTERVALS", bad)
        with pytest.raises(ImproperlyConfiguredEnv, match="KMSWEB_JOB_INTERVALS"):
            env_job_intervals("KMSWEB_JOB_INTERVALS", known)


# -- the page ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_shows_each_jobs_schedule_last_run_and_next_run(
    auditor: Client, clock: time_machine.Coordinates, django_assert_max_num_queries: Any
) -> None:
    clock.move_to(T0 - 7 * MINUTE)  # 12:00, as beat would
    job_run("rotate_keys", counted(3))
    clock.move_to(T0 - 2 * MINUTE)
    job_run("delete_expired_keys", counted(0))
    clock.move_to(T0)
    # One indexed read of the last run per job, plus the page's fixed queries
    # (one of them the cache generations' read, kmsweb.generations).
    with django_assert_max_num_queries(14 + len(periodic_jobs())):
        html = auditor.get("/jobs/").content.decode()
    assert "<h1>Jobs</h1>" in html
    rotate = row(html, "rotate_keys")
    assert "hourly, on the hour" in rotate
    assert "2025-03-01 12:00:00" in rotate and "rotated 3 · skipped 0" in rotate and "badge ok" in rotate
    assert "2025-03-01 13:00:00" in rotate  # next: the next hour after the last run
    assert "2025-03-01 12:10:00" in row(html, "delete_expired_keys")  # every 5 minutes from 12:05
    archive = row(html, "archive_audit")
    assert "daily at 03:10 UTC" in archive and "never" in archive and "2025-03-02 03:10:00" in archive
    # Looking is recorded, and an auditor is not offered "Run now".
    assert AuditEvent.objects.filter(event_name="ListJobs", error_code="").count() == 1
    assert "Run now" not in html
    assert 'data-polling="false"' in html and "hx-trigger" not in html.split('id="jobs-table"')[1].split(">")[0]


@pytest.mark.django_db
def test_it_shows_a_failed_run_with_its_error(auditor: Client, clock: time_machine.Coordinates) -> None:
    with pytest.raises(InternalError):
        job_run("seal_audit", broken)
    html = auditor.get("/jobs/").content.decode()
    assert "badge bad" in row(html, "seal_audit")
    assert 'id="job-error-seal_audit">RuntimeError: root key provider unreachable</pre>' in html
    detail = auditor.get("/jobs/seal_audit/").content.decode()
    assert "RuntimeError: root key provider unreachable" in detail


@pytest.mark.django_db
def test_it_shows_a_job_overdue_after_beat_was_down_as_due_now(
    auditor: Client, clock: time_machine.Coordinates
) -> None:
    job_run("rotate_keys", counted(0))
    clock.move_to(T0 + timedelta(days=2))
    assert "due now" in row(auditor.get("/jobs/").content.decode(), "rotate_keys")


@pytest.mark.django_db
def test_it_polls_while_a_run_is_running_and_stops_when_it_ends(
    auditor: Client, clock: time_machine.Coordinates
) -> None:
    run = JobRun.objects.create(name="rotate_keys", started_at=T0)
    fragment = auditor.get("/jobs/", **HX).content.decode()
    assert "<html" not in fragment
    assert fragment.startswith('\n<div id="jobs-table" hx-get="/jobs/" hx-trigger="every 3s" hx-swap="outerHTML"')
    assert "Running" in row(fragment, "rotate_keys")
    detail = auditor.get("/jobs/rotate_keys/", **HX).content.decode()
    assert 'hx-get="/jobs/rotate_keys/" hx-trigger="every 3s"' in detail

    run.outcome, run.finished_at, run.counts = JobOutcome.OK, T0 + 4 * MINUTE, {"rotated": 2}
    run.save()
    fragment = auditor.get("/jobs/", **HX).content.decode()
    assert "hx-trigger" not in fragment.split(">")[0] and 'data-polling="false"' in fragment
    assert "4 min 00 s" in row(fragment, "rotate_keys")
    assert "hx-trigger" not in auditor.get("/jobs/rotate_keys/", **HX).content.decode().split(">")[0]


@pytest.mark.django_db
def test_a_run_still_running_past_its_task_time_limit_shows_lost_and_is_not_polled(
    auditor: Client, clock: time_machine.Coordinates
) -> None:
    limit = timedelta(seconds=job_named("rotate_keys").time_limit) + LOST_AFTER_GRACE
    JobRun.objects.create(name="rotate_keys", started_at=T0 - limit + MINUTE)
    fragment = auditor.get("/jobs/", **HX).content.decode()
    assert 'data-outcome="running"' in row(fragment, "rotate_keys") and 'data-polling="true"' in fragment

    clock.move_to(T0 + MINUTE + timedelta(seconds=1))  # past the hard limit and the grace: Celery killed it
    fragment = auditor.get("/jobs/", **HX).content.decode()
    assert 'data-outcome="lost"' in row(fragment, "rotate_keys") and 'data-polling="false"' in fragment
    detail = auditor.get("/jobs/rotate_keys/", **HX).content.decode()
    assert 'data-outcome="lost"' in detail and "the worker died or was killed" in detail
    assert 'data-polling="false"' in detail


@pytest.mark.django_db
def test_it_pages_a_jobs_history_newest_first(auditor: Client, clock: time_machine.Coordinates) -> None:
    for i in range(30):
        clock.move_to(T0 + i * MINUTE)
        job_run("expire_grants", counted(i))
    job_run("rotate_keys", counted(99))  # another job's runs stay out
    first = auditor.get("/jobs/expire_grants/").content.decode()
    starts = re.findall(r'data-run="(\d+)"', first)
    assert len(starts) == 25 and "rotated 29 · " in first and "rotated 99" not in first
    older = re.search(r'id="job-runs-older"', first)
    assert older
    link = re.search(r'hx-get="(/jobs/expire_grants/\?before=[^"]+)"', first)
    assert link
    second = auditor.get(link.group(1).replace("&amp;", "&"), **HX).content.decode()
    rest = re.findall(r'data-run="(\d+)"', second)
    assert len(rest) == 5 and not set(rest) & set(starts)
    assert "rotated 4 · " in second and "rotated 0 · " in second
    assert 'id="job-runs-older"' not in second and 'id="job-runs-newest"' in second
    # A mangled cursor: a clear message and the newest runs, never a 500.
    response = auditor.get("/jobs/expire_grants/?before=yesterday")
    assert response.status_code == 200
    assert "The page cursor is not valid" in response.content.decode()
    assert len(re.findall(r'data-run="(\d+)"', response.content.decode())) == 25
    assert AuditEvent.objects.filter(event_name="ListJobRuns", error_code="ValidationException").count() == 1


@pytest.mark.django_db
def test_an_unknown_job_is_a_clear_error(auditor: Client) -> None:
    response = auditor.get("/jobs/rotate_everything/", **HX)
    assert "NotFoundException" in response.content.decode() and "rotate_everything" in response.content.decode()


@pytest.mark.django_db
def test_it_shows_jobs_to_key_admins_and_auditors_only(
    viewer_user: DashboardUser, key_admin_user: DashboardUser, make_dashboard_user: Any, signed_in: Any
) -> None:
    assert "<h1>Jobs</h1>" in signed_in(key_admin_user).get("/jobs/").content.decode()
    for who in (viewer_user, make_dashboard_user("april", "approver")):
        client = signed_in(who)
        assert client.get("/jobs/").status_code == 302
        fragment = client.get("/jobs/", **HX).content.decode()
        assert "AccessDeniedException" in fragment and 'id="jobs-table"' not in fragment
        assert "AccessDeniedException" in client.get("/jobs/rotate_keys/", **HX).content.decode()
    denied = AuditEvent.objects.filter(event_name__in=["ListJobs", "ListJobRuns"], error_code="AccessDeniedException")
    assert denied.count() == 6


# -- Run now ----------------------------------------------------------------------------


@pytest.fixture
def eager_celery() -> Iterator[None]:
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.mark.django_db
def test_an_administrator_runs_a_job_now_and_it_is_recorded(administrator: Client, eager_celery: None) -> None:
    html = administrator.get("/jobs/").content.decode()
    assert 'id="job-start-rotate_keys"' in html
    response = administrator.post("/jobs/rotate_keys/start/", **HX)
    assert response["HX-Trigger"] == '{"jobQueued": {"name": "rotate_keys"}}'
    (started,) = AuditEvent.objects.filter(event_name="StartJob")
    assert started.error_code == "" and started.request_parameters == {"jobName": "rotate_keys"}
    assert started.response_elements["task"] == "kmsweb.tasks.keys_rotate_due_task"
    # The task ran (eagerly, as a worker would) as the rotate_keys job, and the answer shows it.
    assert list(JobRun.objects.values_list("name", "outcome")) == [("rotate_keys", JobOutcome.OK)]
    assert 'data-outcome="ok"' in row(response.content.decode(), "rotate_keys")


@pytest.mark.django_db
def test_a_queued_run_shows_and_polls_until_a_worker_starts_it(
    administrator: Client, clock: time_machine.Coordinates, monkeypatch: Any
) -> None:
    from audit.services import job_status

    sent: list[str] = []
    monkeypatch.setattr(job_status, "_send", sent.append)  # no worker: the run stays queued
    fragment = administrator.post("/jobs/delete_expired_keys/start/", **HX).content.decode()
    assert sent == ["kmsweb.tasks.keys_delete_expired_task"]
    assert 'data-outcome="queued"' in row(fragment, "delete_expired_keys")
    poll = re.search(r'hx-get="(/jobs/\?queued=[^"]+)" hx-trigger="every 3s"', fragment)
    assert poll, fragment[:300]
    assert 'data-outcome="queued"' in row(
        administrator.get(poll.group(1), **HX).content.decode(), "delete_expired_keys"
    )
    clock.move_to(T0 + 5 * timedelta(seconds=1))
    job_run("delete_expired_keys", counted(0))
    done = administrator.get(poll.group(1), **HX).content.decode()
    assert 'data-outcome="ok"' in row(done, "delete_expired_keys") and 'data-polling="false"' in done


@pytest.mark.django_db
def test_a_queued_marker_that_is_stale_future_or_mangled_is_ignored(
    auditor: Client, clock: time_machine.Coordinates
) -> None:
    for marker in (
        f"rotate_keys@{(T0 - timedelta(minutes=11)).isoformat()}",  # no worker took it in 10 minutes
        f"rotate_keys@{(T0 + timedelta(days=1)).isoformat()}",
        "rotate_keys@yesterday",
        "rotate_keys",
        "@",
    ):
        fragment = auditor.get("/jobs/", {"queued": marker}, **HX).content.decode()
        assert 'data-outcome="never"' in row(fragment, "rotate_keys") and 'data-polling="false"' in fragment, marker


@pytest.mark.django_db
def test_a_broker_that_is_down_refuses_run_now_clearly_and_records_it(administrator: Client, monkeypatch: Any) -> None:
    from kombu.exceptions import OperationalError

    from audit.services import job_status

    def down(task: str) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(job_status, "_send", down)
    response = administrator.post("/jobs/rotate_keys/start/", **HX)
    assert response.status_code == 200
    assert "The job queue could not be reached (OperationalError); nothing was queued." in response.content.decode()
    (started,) = AuditEvent.objects.filter(event_name="StartJob")
    assert started.error_code == "KMSInternalException"
    assert not JobRun.objects.exists()


@pytest.mark.django_db
def test_only_an_administrator_may_run_a_job_now(
    key_admin_user: DashboardUser, auditor: Client, signed_in: Any, django_capture_on_commit_callbacks: Any
) -> None:
    for client in (signed_in(key_admin_user), auditor):
        assert "Run now" not in client.get("/jobs/").content.decode()
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = client.post("/jobs/rotate_keys/start/", **HX)
        assert "AccessDeniedException" in response.content.decode()
        assert callbacks == []
    assert AuditEvent.objects.filter(event_name="StartJob", error_code="AccessDeniedException").count() == 2
    assert not JobRun.objects.exists()


@pytest.mark.django_db
def test_running_an_unknown_job_is_refused_and_recorded(administrator: Client) -> None:
    response = administrator.post("/jobs/rotate_everything/start/", **HX)
    assert "NotFoundException" in response.content.decode()
    assert AuditEvent.objects.filter(event_name="StartJob", error_code="NotFoundException").count() == 1


# -- run_job ----------------------------------------------------------------------------


def _run_job(*args: str) -> str:
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("run_job", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_run_job_lists_a_run_left_running_by_a_killed_worker_as_lost(clock: time_machine.Coordinates) -> None:
    JobRun.objects.create(name="seal_audit", started_at=T0)
    job_run("rotate_keys", counted(1))
    listing = _run_job("--list")
    assert re.search(r"^seal_audit .*last 2025-03-01 12:07:00 running$", listing, re.M), listing
    assert re.search(r"^rotate_keys .*hourly, on the hour .* ok$", listing, re.M), listing
    assert re.search(r"^archive_audit .*last - +never$", listing, re.M), listing

    limit = timedelta(seconds=job_named("seal_audit").time_limit) + LOST_AFTER_GRACE
    clock.move_to(T0 + limit)  # at the limit and grace: perhaps still finishing
    assert re.search(r"^seal_audit .* running$", _run_job("--list"), re.M)
    clock.move_to(T0 + limit + timedelta(seconds=1))
    assert re.search(r"^seal_audit .* lost \(still marked running past its time limit", _run_job("--list"), re.M)


@pytest.mark.django_db
def test_run_job_refuses_an_unknown_or_missing_name() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Unknown job 'rotate_everything'. Jobs: seal_audit, "):
        _run_job("rotate_everything")
    with pytest.raises(CommandError, match="Name a job, or --list"):
        _run_job()
    assert not JobRun.objects.exists()
