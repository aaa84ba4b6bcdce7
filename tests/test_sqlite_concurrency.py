"""The embedded default under its own load: several processes writing one
SQLite file at once (API calls, the worker's jobs, a management command
beside them) never fail with "database is locked".

The suite's own database may be in memory or PostgreSQL; this test builds a
file database under a temporary var/ and runs each writer as a process, as
``make run`` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from tests.secret_files import secret_files_env

PROCESS_SECONDS = 240
# Each round: a CreateKey and three Encrypts per API writer, three jobs for the worker.
ROUNDS = 25


def _env(var: Path) -> dict[str, str]:
    """A clean environment on a file database in ``var``: no DATABASE_URL, no Redis."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if name in os.environ}
    env.update(secret_files_env())
    env.update(KMSWEB_VAR_DIR=str(var), DJANGO_SETTINGS_MODULE="kmsweb.settings", KMSWEB_AUTH_CACHE_SECONDS="0")
    return env


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    # Fixed argv, no shell.
    return subprocess.Popen(  # noqa: S603
        [sys.executable, *args],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, _ = process.communicate(timeout=PROCESS_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return process.returncode, out


def test_it_runs_api_writes_jobs_and_a_command_at_once_on_sqlite_without_locking(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    env = _env(var)
    setup = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=settings.BASE_DIR, env=env, capture_output=True
    )
    assert setup.returncode == 0, setup.stderr.decode(errors="replace")[-3000:]
    password = tmp_path / "password"
    password.write_text("correct horse battery staple\n", encoding="utf-8")
    boot = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "bootstrap", "--password-file", str(password)],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
    )
    assert boot.returncode == 0, boot.stderr.decode(errors="replace")[-3000:]

    writers = [
        _start(["-m", "tests.sqlite_writers", "api", str(ROUNDS)], env),
        _start(["-m", "tests.sqlite_writers", "api", str(ROUNDS)], env),
        _start(["-m", "tests.sqlite_writers", "jobs", str(ROUNDS)], env),
        _start(["manage.py", "run_job", "seal_audit"], env),
    ]
    results = [_finish(p) for p in writers]
    report = "\n".join(
        f"--- {p.args[1:4]} exit {code}\n{out[-2000:]}" for p, (code, out) in zip(writers, results, strict=True)
    )
    assert "database is locked" not in report, report
    assert all(code == 0 for code, _ in results), report
    assert [out.strip().splitlines()[-1] for _, out in results[:3]] == [f"ok {ROUNDS}"] * 3, report
    assert results[3][1].startswith("seal_audit: "), report
