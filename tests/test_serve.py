"""``manage.py serve`` supervises its processes: a Celery worker killed with
SIGKILL is restarted while the API keeps answering; SIGTERM stops them all.
And a worker rides out a Redis outage (stop, restart) without dying.

Each test runs the real processes on a temporary var/ (SQLite, the embedded
broker) or on its own redis-server, from a clean environment.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from django.conf import settings

from tests.gunicorn_nodes import free_port

START_SECONDS = 90


def _port_outside_the_ephemeral_range() -> int:
    """A free port that no bind(0) and no outgoing connection of any process can be given.

    For a server that stops and must come back on the same port: while it is
    down, a port from the ephemeral range can be taken by another process's
    bind(0) or outgoing connection (busy under pytest-xdist), or by a client
    reconnecting to it (TCP self-connect), and the restart then fails.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(10_000, low)  # noqa: S311 - a port, not a secret
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError(f"no free port between 10000 and {low}")


def _clean_env(var: Path, **extra: str) -> dict[str, str]:
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env.update(KMSWEB_VAR_DIR=str(var), KMSWEB_LOG_LEVEL="INFO", **extra)
    return env


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait(condition: Callable[[], object], what: str, log: Callable[[], str], seconds: float = START_SECONDS) -> object:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {seconds} s:\n{log()}"
        time.sleep(0.3)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str], Path, Callable[[], str]]]:
    """``manage.py serve`` on a fresh var/, seal_audit every second; yields (process, access key, var, log)."""
    var = tmp_path / "var"
    env = _clean_env(var, KMSWEB_JOB_INTERVALS="seal_audit=1")
    manage = str(settings.BASE_DIR / "manage.py")
    (tmp_path / "pw").write_text("correct horse battery staple\n", encoding="utf-8")
    for argv in (
        [sys.executable, "-m", "kmsweb.devsecrets", str(var)],
        [sys.executable, manage, "migrate", "--noinput"],
        [sys.executable, manage, "bootstrap", "--password-file", str(tmp_path / "pw")],
    ):
        done = subprocess.run(argv, cwd=settings.BASE_DIR, env=env, capture_output=True, timeout=120)  # noqa: S603
        assert done.returncode == 0, done.stderr[-3000:]
    made = subprocess.run(  # noqa: S603
        [sys.executable, manage, "create_access_key", "admin"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    key_id, secret = made.stdout.split()
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, manage, "serve", "--port", str(port), "--web-workers", "1"],
            cwd=settings.BASE_DIR,  # as bin/run does
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    credentials = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "aws_access_key_id": key_id,
        "aws_secret_access_key": secret,
    }
    try:
        yield process, credentials, var, lambda: log_path.read_text(errors="replace")[-6000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _ok_seal_runs_since(var: Path, since: datetime) -> int:
    with sqlite3.connect(var / "kmsweb.sqlite3", timeout=30) as db:
        row = db.execute(
            "SELECT count(*) FROM audit_jobrun WHERE name = 'seal_audit' AND outcome = 'ok' AND started_at > ?",
            (since.strftime("%Y-%m-%d %H:%M:%S.%f"),),
        ).fetchone()
    return int(row[0])


def test_it_restarts_a_killed_worker_while_the_api_keeps_serving(
    served: tuple[subprocess.Popen[bytes], dict[str, str], Path, Callable[[], str]],
) -> None:
    process, credentials, var, log = served
    kms = boto3.client(
        "kms",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
        **credentials,
    )

    def api_answers() -> bool:
        try:
            kms.list_keys()
        except Exception:
            return False
        return True

    _wait(api_answers, "the API answered", log)

    def worker_pid() -> int | None:
        return next((p for p in _children(process.pid) if " worker " in _cmdline(p) and _alive(p)), None)

    first = _wait(worker_pid, "a worker started", log)
    assert isinstance(first, int)
    _wait(lambda: _ok_seal_runs_since(var, datetime(2000, 1, 1)), "the worker ran seal_audit", log)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]

    os.kill(first, signal.SIGKILL)
    killed_at = datetime.now(UTC)
    # The API answers while the worker is down and coming back.
    for _ in range(5):
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"still serving")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"still serving"

    second = _wait(lambda: (p := worker_pid()) is not None and p != first and p, "a new worker started", log)
    assert second != first
    # The new worker works: beat's seal_audit runs again after the kill.
    _wait(lambda: _ok_seal_runs_since(var, killed_at), "the new worker ran seal_audit", log)
    assert f"worker (pid {first}) exited with status -9; restarting" in log()
    assert process.poll() is None and api_answers()

    children = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log()
    _wait(lambda: not any(_alive(p) for p in children), "every child stopped after SIGTERM", log, seconds=30)


def test_a_worker_rides_out_a_redis_outage(tmp_path: Path) -> None:
    """Redis stops and comes back: the worker reconnects, answers a ping, and never raises."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        if os.environ.get("KMSWEB_REQUIRE_SERVICES") == "true":
            pytest.fail("redis-server not found, and KMSWEB_REQUIRE_SERVICES=true")
        pytest.skip("needs redis-server")
    from celery import Celery

    port = _port_outside_the_ephemeral_range()
    redis_url = f"redis://127.0.0.1:{port}/0"
    redis_log = tmp_path / "redis.log"

    def start_redis() -> subprocess.Popen[bytes]:
        with redis_log.open("ab") as out:
            return subprocess.Popen(  # noqa: S603
                [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    redis = start_redis()
    var = tmp_path / "var"
    subprocess.run([sys.executable, "-m", "kmsweb.devsecrets", str(var)], cwd=settings.BASE_DIR, check=True)  # noqa: S603
    from kmsweb.management.commands.serve import commands

    node = f"pytest-{uuid.uuid4().hex[:12]}"
    argv = [*commands(host="127.0.0.1", port=0, web_workers=1)["worker"], "--hostname", f"{node}@%h"]
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(  # noqa: S603
            argv,
            cwd=settings.BASE_DIR,
            env=_clean_env(var, REDIS_URL=redis_url),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # Not this process's current app: later tests' tasks must not go to this Redis.
    probe = Celery("probe", broker=redis_url, set_as_current=False)

    def text() -> str:
        return log_path.read_text(errors="replace")

    def log() -> str:
        return text()[-6000:] + f"\n--- redis-server\n{redis_log.read_text(errors='replace')[-2000:]}"

    def pong() -> bool:
        assert worker.poll() is None, f"the worker exited:\n{log()}"
        assert redis.poll() is None, f"redis-server exited:\n{log()}"
        try:
            replies = probe.control.ping(timeout=1.0) or []
        except Exception:
            return False
        return any(name.startswith(f"{node}@") for reply in replies for name in reply)

    try:
        _wait(pong, "a pong from the worker", log)
        # Each wait reads the log from the step it waits on (a slow start has its own retries).
        outage = len(text())
        redis.terminate()
        redis.wait(timeout=30)
        _wait(lambda: "Trying again in" in text()[outage:], "the worker noticed the outage", log)
        # No retry limit: Celery's default (100 tries, about 50 minutes) ends with the worker exiting.
        assert re.search(r"Trying again in [\d.]+ seconds\.\.\. \(1/None\)", text()[outage:]), log()
        back = len(text())
        redis = start_redis()
        _wait(lambda: "Connected to redis://" in text()[back:], "the worker reconnected", log)
        _wait(pong, "a pong after the outage", log)
        assert worker.poll() is None
        assert "Traceback" not in log_path.read_text(errors="replace"), log()
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        redis.terminate()
        redis.wait(timeout=30)
