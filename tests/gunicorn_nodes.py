"""Real gunicorn servers on the test's database, for tests of several kmsweb nodes at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url() -> str:
    """The test database (PostgreSQL) as a DATABASE_URL for a child process."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    return f"postgres://{quote(db['USER'])}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # polling a process's start, not waiting for a clock
    raise AssertionError(f"gunicorn did not listen on {port}: {log.read_text()[-2000:]}")


@contextmanager
def gunicorn_nodes(count: int, env: dict[str, str], tmp_path: Path) -> Iterator[list[str]]:
    """``count`` gunicorn servers of one worker each (their own processes and caches) on the
    test database, with ``env`` on top of this process's environment; their URLs."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        # No connection outlives a request, so the test database can be flushed and dropped.
        "KMSWEB_DB_CONN_MAX_AGE": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        **env,
    }
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for n in range(count):
            port = free_port()
            log = tmp_path / f"gunicorn-{n}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                    [sys.executable, "-m", "gunicorn", "kmsweb.wsgi:application"]
                    + ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning"],
                    cwd=settings.BASE_DIR,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            processes.append(process)
            wait_listening(port, process, log)
            urls.append(f"http://127.0.0.1:{port}/")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
