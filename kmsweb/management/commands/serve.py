"""``manage.py serve``: web server, Celery worker and beat, as one command.

Used by ``make run``. Starts the three processes and supervises them
(``kmsweb.lib.supervise``): one that exits is logged and restarted with
backoff while the others keep running, so the API keeps serving through a
worker's death. SIGINT (Ctrl-C) or SIGTERM stops them all.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from kmsweb.lib.supervise import Supervisor


def commands(*, host: str, port: int, web_workers: int, web_threads: int = 8) -> dict[str, list[str]]:
    """The supervised commands: gunicorn, one Celery worker, Celery beat.

    The web workers are threaded (gthread): the read-only API calls of one
    process commit their audit events together (``audit.services.writer``),
    which needs calls in flight side by side in a process.
    """
    python = sys.executable
    return {
        "web": [
            python,
            "-m",
            "gunicorn",
            "kmsweb.wsgi",
            "--bind",
            f"{host}:{port}",
            "--workers",
            str(web_workers),
            "--worker-class",
            "gthread",
            "--threads",
            str(web_threads),
            "--access-logfile",
            "-",
        ],
        # No gossip or mingle: kmsweb's workers do not coordinate, and
        # gossip's restart after a broker outage is where Celery raises
        # AttributeError ('NoneType' object has no attribute 'connection_errors').
        "worker": [
            python,
            "-m",
            "celery",
            "-A",
            "kmsweb",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
            "--without-gossip",
            "--without-mingle",
        ],
        "beat": [python, "-m", "celery", "-A", "kmsweb", "beat", "--loglevel", "INFO"],
    }


class Command(BaseCommand):
    help = "Run the web server (gunicorn), a Celery worker and Celery beat, restarting any that exits, until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--web-threads", type=int, default=8)

    def handle(self, *args: Any, **options: Any) -> None:
        transport = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for folder in ("data_folder_in", "processed_folder", "control_folder"):
            if folder in transport:
                Path(str(transport[folder])).mkdir(parents=True, exist_ok=True)
        # prometheus_client's multiprocess mode: each web worker writes its
        # samples under this folder, emptied at start, and /metrics adds them up.
        metrics_dir = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or Path(settings.VAR_DIR) / "prometheus")
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        supervisor = Supervisor(
            commands(
                host=options["host"],
                port=options["port"],
                web_workers=options["web_workers"],
                web_threads=options["web_threads"],
            ),
            log=lambda line: self.stderr.write(f"serve: {line}"),
            # The children import kmsweb from the same checkout as this command.
            cwd=str(settings.BASE_DIR),
        )
        signal.signal(signal.SIGINT, supervisor.stop)
        signal.signal(signal.SIGTERM, supervisor.stop)
        supervisor.run()
