"""Keep a few child processes running: restart any that exits, with backoff.

``manage.py serve`` runs the web server, a Celery worker and beat this way:
a worker that dies (killed, out of memory, a broker outage it could not
ride out) is logged and started again, and the web server keeps serving
meanwhile. Only a signal to the supervisor stops them all.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger("kmsweb.supervise")


@dataclass
class Child:
    """One supervised command and the state of its current process."""

    name: str
    argv: Sequence[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    # Consecutive quick exits; the backoff doubles with each.
    failures: int = 0
    next_start: float = 0.0
    history: list[int] = field(default_factory=list)


class Supervisor:
    """Start ``commands`` ({name: argv}); restart each on exit after a growing delay.

    The delay is ``backoff_start * 2**(n-1)`` seconds after the n-th exit in
    a row that came within ``healthy_after`` seconds of its start, capped at
    ``backoff_max``; a child that ran longer starts again at once. Each
    child runs in its own process group, so what it forked (a worker's pool)
    goes with it.
    """

    def __init__(
        self,
        commands: Mapping[str, Sequence[str]],
        *,
        backoff_start: float = 1.0,
        backoff_max: float = 60.0,
        healthy_after: float = 30.0,
        poll_seconds: float = 0.5,
        stop_timeout: float = 15.0,
        log: Callable[[str], None] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.children = [Child(name, list(argv)) for name, argv in commands.items()]
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.healthy_after = healthy_after
        self.poll_seconds = poll_seconds
        self.stop_timeout = stop_timeout
        self.log = log or logger.warning
        self.cwd = cwd
        self.stopping = False

    def _start(self, child: Child) -> None:
        # Fixed argv built by the caller from sys.executable, no shell.
        child.process = subprocess.Popen(child.argv, cwd=self.cwd, start_new_session=True)  # noqa: S603
        child.started_at = time.monotonic()

    def _reap_group(self, child: Child, sig: int = signal.SIGKILL) -> None:
        if child.process is None:
            return
        try:
            os.killpg(child.process.pid, sig)
        except ProcessLookupError:
            pass

    def check(self) -> None:
        """One round: note the children that exited and start those whose delay is over."""
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is not None and process.poll() is not None:
                code = process.returncode
                child.history.append(code)
                self._reap_group(child)  # leftovers of the dead process (pool workers)
                ran = now - child.started_at
                child.failures = child.failures + 1 if ran < self.healthy_after else 0
                delay = 0.0
                if child.failures:
                    delay = min(self.backoff_start * 2 ** (child.failures - 1), self.backoff_max)
                child.next_start = now + delay
                child.process = None
                self.log(f"{child.name} (pid {process.pid}) exited with status {code}; restarting in {delay:g} s")
            if child.process is None and now >= child.next_start:
                if child.history:
                    child.restarts += 1
                self._start(child)

    def stop(self, *_: object) -> None:
        """Ask the loop to end (a signal handler)."""
        self.stopping = True

    def run(self) -> None:
        """Supervise until ``stop`` is called, then stop every child (SIGTERM, then SIGKILL)."""
        try:
            while not self.stopping:
                self.check()
                time.sleep(self.poll_seconds)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        # The main processes stop their own children (gunicorn's workers, the
        # worker's pool) cleanly; whatever is left afterwards is killed.
        for child in running:
            assert child.process is not None
            child.process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in self.children:
            self._reap_group(child)
            if child.process is not None:
                child.process.wait()
