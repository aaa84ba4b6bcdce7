"""What only the real backends can show: PostgreSQL row locks and a Celery worker on Redis.

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
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from audit.models import AuditEvent
from keys.models import Key, KeyState
from keys.services import lifecycle
from kmsweb.lib.errors import InvalidState, KmsError
from tests.conftest import Persona

LOCK_WAIT_SECONDS = 15
WORKER_START_SECONDS = 60


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


@pytest.mark.redis
def test_it_gets_a_celery_worker_pong_through_redis(tmp_path: Path) -> None:
    from kmsweb import celery_app

    node = f"pytest-{uuid.uuid4().hex[:12]}"
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
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        # Fixed argv, no shell.
        worker = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "kmsweb",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
                "--hostname",
                f"{node}@%h",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
