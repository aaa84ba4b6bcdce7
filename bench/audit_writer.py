"""The group writer alone: audit events per second and PostgreSQL CPU per event, by concurrency.

N threads of one process each record read-only events (``audit_record``)
as fast as they can, once handed to the group writer (``grouped``) and once
as one INSERT each, against the PostgreSQL database of ``DATABASE_URL``
(default ``kmsweb_bench``). For each run: events/s, the CPU the database's
backends used per event (/proc), transactions and the mean events per
transaction. No HTTP, no crypto: what the writer changes, isolated.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench \\
        .venv/bin/python bench/audit_writer.py --threads 1,8,16,32 --events 3000
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kmsweb_bench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "kmsweb-bench-django-secret-key")
os.environ.setdefault("KMSWEB_ROOT_KEY", "a21zd2ViLWJlbmNoLXJvb3Qta2V5LTMyLWJ5dGVzISE=")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402

from audit.services import recording  # noqa: E402
from audit.services.writer import group_writer  # noqa: E402
from kmsweb.lib.caller import Caller  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def backend_seconds(dbname: str) -> float:
    """CPU seconds used so far by the backends connected to ``dbname``."""
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                words = handle.read().replace(b"\0", b" ").decode(errors="replace").split()
            if not words or words[0] != "postgres:":
                continue
            words = words[2:] if words[1].endswith(":") else words[1:]  # a cluster name ("15/main:")
            if len(words) < 3 or words[1] != dbname or "(" not in words[2]:
                continue
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks / TICKS


def run(threads: int, events: int, grouped: bool) -> dict[str, float]:
    caller = Caller.system("bench-audit-writer")
    each = max(1, events // threads)
    start = threading.Barrier(threads + 1)
    done = threading.Barrier(threads + 1)
    measured = threading.Barrier(threads + 1)

    def work() -> None:
        # One warm-up event opens this thread's connection before the clock starts.
        recording.audit_record(caller=caller, event_name="Encrypt", read_only=True, grouped=grouped)
        start.wait()
        for i in range(each):
            recording.audit_record(
                caller=caller,
                event_name="Encrypt",
                request_parameters={"KeyId": "bench", "EncryptionContext": {"n": str(i)}},
                read_only=True,
                grouped=grouped,
            )
        done.wait()
        measured.wait()  # the backends' CPU is read before their connections close
        connections.close_all()

    writer = group_writer(connection.alias)
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    batches, written = writer.state.batches, writer.state.events
    cpu, began = backend_seconds(connection.settings_dict["NAME"]), time.perf_counter()
    done.wait()
    elapsed = time.perf_counter() - began
    cpu = backend_seconds(connection.settings_dict["NAME"]) - cpu
    measured.wait()
    for worker in workers:
        worker.join()
    total = each * threads
    commits = (writer.state.batches - batches) if grouped else total
    return {
        "threads": threads,
        "grouped": grouped,
        "events_per_s": total / elapsed,
        "pg_ms_per_event": cpu * 1000 / total,
        "transactions": commits,
        "events_per_transaction": (writer.state.events - written) / commits if grouped and commits else 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,8,16,32", help="comma-separated thread counts")
    parser.add_argument("--events", type=int, default=3000, help="events per run")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        raise SystemExit("bench/audit_writer.py measures PostgreSQL: set DATABASE_URL=postgres://...")
    call_command("migrate", verbosity=0)
    print("| threads | writer | events/s | PostgreSQL CPU (ms/event) | events per transaction |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for threads in [int(t) for t in args.threads.split(",")]:
        for grouped in (False, True):
            r = run(threads, args.events, grouped)
            print(
                f"| {threads} | {'grouped' if grouped else 'one INSERT each'} | {r['events_per_s']:,.0f} "
                f"| {r['pg_ms_per_event']:.3f} | {r['events_per_transaction']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
