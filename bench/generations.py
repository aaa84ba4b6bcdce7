"""What the per-request generation check costs (kmsweb.generations).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench \\
        .venv/bin/python bench/generations.py [--n 20000] [--rounds 5]
    .venv/bin/python bench/generations.py                 # SQLite (a scratch file)

Every API request reads the cache generations once, before its first cache
lookup. This times that read alone, in a loop, as ``generations_read()``
makes it, and, for comparison, the same query through a psycopg cursor
(what the ORM's cursor would add). Reported per read: this process's CPU
time and, on PostgreSQL, the CPU time of the backend serving it (from
/proc), the median of ``--rounds`` rounds; process CPU time does not count
what other processes take, so the figures hold on a busy machine better
than wall time does. The database is migrated first.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "kmsweb-bench-django-secret-key")
os.environ.setdefault("KMSWEB_ROOT_KEY", "a21zd2ViLWJlbmNoLXJvb3Qta2V5LTMyLWJ5dGVzISE=")


def _rounds(read: Callable[[], object], n: int, rounds: int, backend: int | None) -> tuple[float, float]:
    from profile_api import _proc_cpu

    client, server = [], []
    for _ in range(rounds):
        pg0, cpu0 = _proc_cpu(backend), time.process_time()
        for _ in range(n):
            read()
        client.append((time.process_time() - cpu0) / n * 1e6)
        server.append((_proc_cpu(backend) - pg0) / n * 1e6)
    return statistics.median(client), statistics.median(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="reads per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp(prefix='kmsweb-bench-')}/generations.sqlite3"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from profile_api import _pg_backend

    from kmsweb.generations import _READ_SQL, generations_read

    call_command("migrate", verbosity=0)
    backend = _pg_backend()
    print(f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, {connection.vendor}")
    results = {"generations_read()": _rounds(generations_read, args.n, args.rounds, backend)}
    with connection.cursor() as cursor:

        def through_a_cursor() -> object:
            cursor.execute(_READ_SQL)
            return cursor.fetchall()

        results["the same SELECT through Django's cursor"] = _rounds(through_a_cursor, args.n, args.rounds, backend)
    for label, (client, server) in results.items():
        print(
            f"{label}: {client:.1f} µs CPU per read in this process"
            + (f" + {server:.1f} µs in PostgreSQL" if backend else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
