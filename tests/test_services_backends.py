"""What only the real backends can show: PostgreSQL row locks, and a Celery worker
and beat on Redis.

Skipped on the embedded default (SQLite, filesystem broker); CI sets
DATABASE_URL and REDIS_URL and KMSWEB_REQUIRE_SERVICES=true, so there they
run or fail, never skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent, JobOutcome, JobRun
from keys.models import Key, KeyMaterial, KeyState, RotationType
from keys.services import lifecycle
from kmsweb.lib.errors import InvalidState, KmsError
from tests.conftest import Persona

LOCK_WAIT_SECONDS = 15
WORKER_START_SECONDS = 60
# Worker and beat start in parallel, a few seconds each; the whole test takes about 6 s.
END_TO_END_SECONDS = 30


def _lock_waiters() -> int:
    """Backends of this database blocked on a lock right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_serializes_concurrent_deletion_schedules_on_the_key_row(
    key_admin: Persona, make_key: Callable[..., Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ScheduleKeyDeletion calls at once: one wins, the other sees PendingDeletion.

    The first call to hold the row lock pauses until PostgreSQL reports the
    second one waiting for that lock; so the test fails (rather than passing
    by luck) if the service ever stops locking the row.
    """
    key = make_key()
    original_lock = lifecycle.key_lock
    holder_has_lock = threading.Event()
    release_holder = threading.Event()
    order = threading.Lock()
    acquired: list[str] = []

    def observed_lock(locked_key: Key) -> Key:
        row = original_lock(locked_key)
        with order:
            acquired.append(threading.current_thread().name)
            first = len(acquired) == 1
        if first:
            holder_has_lock.set()
            release_holder.wait(LOCK_WAIT_SECONDS)
        return row

    monkeypatch.setattr(lifecycle, "key_lock", observed_lock)
    results: dict[str, Any] = {}
    start = threading.Barrier(2)

    def schedule(name: str) -> None:
        try:
            start.wait(LOCK_WAIT_SECONDS)
            results[name] = lifecycle.key_schedule_deletion(
                caller=key_admin.caller(), key=key, pending_window_days=7 if name == "a" else 30
            )
        except KmsError as exc:
            results[name] = exc
        except Exception as exc:  # surfaced by the assertions below
            results[name] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=schedule, args=(n,), name=n) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    try:
        assert holder_has_lock.wait(LOCK_WAIT_SECONDS), "no call ever got the row lock"
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while _lock_waiters() == 0:
            assert time.monotonic() < deadline, "the second call never waited on the key's row lock"
            time.sleep(0.02)
    finally:
        release_holder.set()
        for thread in threads:
            thread.join(LOCK_WAIT_SECONDS)
    assert not any(t.is_alive() for t in threads)

    winner, loser = acquired
    assert isinstance(results[winner], dict), results
    assert isinstance(results[loser], InvalidState), results
    key.refresh_from_db()
    assert key.state == KeyState.PENDING_DELETION
    assert key.pending_window_days == results[winner]["PendingWindowInDays"]
    assert key.deletion_date == results[winner]["DeletionDate"]
    events = AuditEvent.objects.filter(event_name="ScheduleKeyDeletion").order_by("id")
    assert sorted(e.error_code for e in events) == ["", "KMSInvalidStateException"]


def _celery_env(**extra: str) -> dict[str, str]:
    """The environment of a Celery subprocess: this run's secrets, database and Redis."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if name in os.environ}
    for name in (
        "DJANGO_SECRET_KEY",
        "DJANGO_SECRET_KEY_FILE",
        "KMSWEB_ROOT_KEY",
        "KMSWEB_ROOT_KEY_FILE",
        "DATABASE_URL",
        "KMSWEB_VAR_DIR",
    ):
        if name in os.environ:
            env[name] = os.environ[name]
    env["REDIS_URL"] = settings.REDIS_URL
    env["DJANGO_SETTINGS_MODULE"] = "kmsweb.settings"
    env.update(extra)
    return env


def _celery(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        # Fixed argv, no shell.
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "celery", "-A", "kmsweb", *args, "--loglevel", "INFO"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _worker_args(node: str) -> list[str]:
    return ["worker", "--pool", "solo", "--without-mingle", "--without-gossip", "--hostname", f"{node}@%h"]


@pytest.mark.redis
def test_it_gets_a_celery_worker_pong_through_redis(tmp_path: Path) -> None:
    from kmsweb import celery_app

    node = f"pytest-{uuid.uuid4().hex[:12]}"
    log_path = tmp_path / "worker.log"
    worker = _celery(_worker_args(node), _celery_env(), log_path)
    try:
        deadline = time.monotonic() + WORKER_START_SECONDS
        replies: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert worker.poll() is None, f"the worker exited:\n{log_path.read_text(errors='replace')}"
            replies = celery_app.control.ping(timeout=1.0) or []
            if any(name.startswith(f"{node}@") for reply in replies for name in reply):
                break
        mine = [body for reply in replies for name, body in reply.items() if name.startswith(f"{node}@")]
        assert mine == [{"ok": "pong"}], f"no pong from {node} in {replies}:\n{log_path.read_text(errors='replace')}"
    finally:
        _stop(worker)


def _test_database_url() -> str:
    """This run's test database, for processes outside it (the worker must see what the test wrote)."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="") + (f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_beat_and_a_worker_run_a_scheduled_job_end_to_end_through_redis(
    make_key: Callable[..., Key], tmp_path: Path
) -> None:
    """Real beat sends ``rotate_keys`` (every second here) through Redis to a real
    worker, which rotates a due key and records the run, in this test's database."""
    from kmsweb import celery_app

    key = make_key(rotation_period_days=90)
    Key.objects.filter(pk=key.pk).update(next_rotation_at=timezone.now() - timedelta(days=1))
    celery_app.control.purge()  # nothing left over from another run reaches this worker
    env = _celery_env(DATABASE_URL=_test_database_url(), KMSWEB_JOB_INTERVALS="rotate_keys=1")
    node = f"pytest-{uuid.uuid4().hex[:12]}"
    worker = _celery(_worker_args(node), env, tmp_path / "worker.log")
    beat = _celery(
        ["beat", "--schedule", str(tmp_path / "beat-schedule"), "--max-interval", "1"], env, tmp_path / "beat.log"
    )

    def logs() -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(tmp_path.glob("*.log"))
        )

    try:
        deadline = time.monotonic() + END_TO_END_SECONDS
        run = None
        while run is None:
            assert worker.poll() is None and beat.poll() is None, f"a Celery process exited:\n{logs()}"
            assert time.monotonic() < deadline, f"no finished rotate_keys run in {END_TO_END_SECONDS} s:\n{logs()}"
            run = JobRun.objects.filter(name="rotate_keys").exclude(outcome=JobOutcome.RUNNING).first()
            if run is None:
                time.sleep(0.2)
    finally:
        _stop(beat)
        _stop(worker)
    assert run.outcome == JobOutcome.OK and run.counts["rotated"] == 1, (run.counts, run.error)
    assert list(KeyMaterial.objects.filter(key=key).order_by("version").values_list("version", "rotation_type")) == [
        (1, ""),
        (2, RotationType.AUTOMATIC),
    ]
    rotated = AuditEvent.objects.get(event_name="RotateKey")
    assert rotated.user_identity["principalId"] == "rotate_keys" and rotated.error_code == ""
    assert "Scheduler: Sending due task rotate_keys (kmsweb.tasks.keys_rotate_due_task)" in (
        tmp_path / "beat.log"
    ).read_text(errors="replace")
