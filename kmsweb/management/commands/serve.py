"""``manage.py serve``: web server, Celery worker and beat, as one command.

Used by ``make run``. Starts the three processes, prints nothing secret, and
stops them all when one of them exits or on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run the web server (gunicorn), a Celery worker and Celery beat until interrupted."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args: Any, **options: Any) -> None:
        transport = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for folder in ("data_folder_in", "processed_folder", "control_folder"):
            if folder in transport:
                Path(str(transport[folder])).mkdir(parents=True, exist_ok=True)
        python = sys.executable
        commands = {
            "web": [
                python,
                "-m",
                "gunicorn",
                "kmsweb.wsgi",
                "--bind",
                f"{options['host']}:{options['port']}",
                "--workers",
                str(options["web_workers"]),
                "--access-logfile",
                "-",
            ],
            "worker": [python, "-m", "celery", "-A", "kmsweb", "worker", "--loglevel", "INFO", "--concurrency", "2"],
            "beat": [python, "-m", "celery", "-A", "kmsweb", "beat", "--loglevel", "INFO"],
        }
        # Fixed argv built above from sys.executable, no shell: nothing untrusted.
        children = {name: subprocess.Popen(cmd) for name, cmd in commands.items()}  # noqa: S603
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    self.stderr.write(f"{name} exited with status {child.returncode}; stopping")
                    exit_code = child.returncode or 1
                    stopping = True
            time.sleep(0.5)
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(exit_code)
