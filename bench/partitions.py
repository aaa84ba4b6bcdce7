"""Partitioned audit table benchmark (issue 17), on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench_partitions \\
        .venv/bin/python bench/partitions.py [--events 100000000] [--minutes 12] [--append docs/BENCHMARKS.md]

The database is dropped and created anew. Then:

1. ``key_encrypt`` calls/s (the service: authorize, encrypt, one audit
   INSERT) on the empty event table: median of 3 rounds.
2. Events are COPYed in, spread over the 12 months before now (one
   partition each), until ``--events`` or until ``--minutes`` of seeding
   have passed, whichever comes first; then ANALYZE and sealing.
3. ``key_encrypt`` calls/s again, on the filled table.
4. The Audit page and its searches through the whole Django stack, as in
   ``bench/audit.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.audit import api_caller, page_timings, seed, setup  # noqa: E402  (needs the repo on sys.path)

BATCH = 250_000
MONTHS = 12


def recreate_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _backend_cpu() -> float:
    """CPU seconds of this process's PostgreSQL backend (from /proc; PostgreSQL on this machine)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def encrypt_rate(calls: int) -> tuple[float, float, float]:
    """key_encrypt calls/s, and CPU ms per call in this process and in its PostgreSQL backend (medians of 3)."""
    from keys import services

    caller = api_caller("bench-partitions")
    key = services.key_create(caller=caller, description="bench-partitions")
    rates, cpus, pgs = [], [], []
    for _ in range(3):
        pg0, cpu0, started = _backend_cpu(), time.process_time(), time.perf_counter()
        for _ in range(calls):
            services.key_encrypt(caller=caller, key=key, plaintext=b"x" * 64)
        rates.append(calls / (time.perf_counter() - started))
        cpus.append((time.process_time() - cpu0) / calls * 1000)
        pgs.append((_backend_cpu() - pg0) / calls * 1000)
    return statistics.median(rates), statistics.median(cpus), statistics.median(pgs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--minutes", type=float, default=12.0, help="seeding stops after this long")
    parser.add_argument("--calls", type=int, default=2000, help="key_encrypt calls per round")
    parser.add_argument("--reuse", action="store_true", help="measure an already seeded database: no drop, no seeding")
    parser.add_argument("--append", help="append the results as Markdown to this file (e.g. docs/BENCHMARKS.md)")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("bench/partitions.py needs DATABASE_URL=postgres://... (a database it may drop)")
    # The database's own audit anchor, begun anew with the database.
    anchor = Path(tempfile.gettempdir()) / f"kmsweb-bench-{url.rsplit('/', 1)[1]}-anchor.log"
    os.environ["KMSWEB_AUDIT_ANCHOR_FILE"] = str(anchor)
    if not args.reuse:
        recreate_database(url)
        anchor.unlink(missing_ok=True)
    setup()
    from django.conf import settings
    from django.db import connection

    from audit.models import AuditEvent
    from audit.services.partitions import add_months, audit_partition_create, audit_partitions, month_start
    from audit.services.sealing import audit_seal_all
    from kmsweb.lib.caller import Caller

    now = datetime.now(UTC)
    for n in range(MONTHS, 0, -1):
        audit_partition_create(month=add_months(month_start(now), -n))
    before = AuditEvent.objects.count()
    empty = encrypt_rate(args.calls)
    print(
        f"key_encrypt on {before:,} events: {empty[0]:.0f} calls/s, "
        f"{empty[1]:.3f} ms CPU + {empty[2]:.3f} ms PostgreSQL CPU",
        flush=True,
    )

    account = settings.KMSWEB_ACCOUNT_ID
    rng = random.Random(17)
    start = month_start(now) - timedelta(days=MONTHS * 30)
    span = now - timedelta(hours=1) - start
    # Each batch covers its slice of the year, so a run cut short by --minutes
    # still spreads its events over every month.
    seeded, seed_seconds = 0, 0.0
    deadline = time.monotonic() + (0 if args.reuse else args.minutes * 60)
    batches = max(1, args.events // BATCH)
    order = list(range(batches))
    rng.shuffle(order)
    for i in order:
        if time.monotonic() > deadline:
            break
        n = min(BATCH, args.events - seeded)
        seed_seconds += seed(n, account=account, start=start + span * i / batches, span=span / batches, rng=rng)
        seeded += n
        print(f"  seeded {seeded:,} events ({seeded / seed_seconds:,.0f}/s)", flush=True)
    started = time.perf_counter()
    sealed = sum(d.event_count for d in audit_seal_all(caller=Caller.system("bench-seal"), budget_seconds=1800))
    seal_seconds = time.perf_counter() - started
    total = AuditEvent.objects.count()
    print(f"{total:,} events in {len(audit_partitions())} partitions; sealed {sealed:,} in {seal_seconds:.0f} s")

    filled = encrypt_rate(args.calls)
    print(
        f"key_encrypt on {total:,} events: {filled[0]:.0f} calls/s ({filled[0] / empty[0] - 1:+.1%}), "
        f"{filled[1]:.3f} ms CPU + {filled[2]:.3f} ms PostgreSQL CPU",
        flush=True,
    )
    # The page measurement samples the 5,000th newest event.
    pages = page_timings(account) if total > 10_000 else {}
    for label, ms in pages.items():
        print(f"  {label}: {ms:.1f} ms", flush=True)
    with connection.cursor() as cur:
        cur.execute("SHOW server_version")
        pg = cur.fetchone()[0]
        cur.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cur.fetchone()[0]
    if args.append:
        lines = [
            "",
            "## Partitioned audit table (issue 17)",
            "",
            f"`bench/partitions.py --events {args.events} --minutes {args.minutes:g}`, {now:%Y-%m-%d}: "
            f"PostgreSQL {pg}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}) shared with "
            f"other work, Python {platform.python_version()}. {total:,} events COPYed over {MONTHS} monthly "
            f"partitions ({seeded / seed_seconds:,.0f} events/s, database {size}); the run stops seeding after "
            f"{args.minutes:g} minutes. key_encrypt: the service called in-process, median of 3 rounds of "
            f"{args.calls}; CPU per call is this process's and its PostgreSQL backend's, which other work on "
            "the machine does not inflate as it does wall time. Pages: the Django test Client signed in as an "
            "auditor, median of 20 requests.",
            "",
            "| measurement | result | target |",
            "|---|---|---|",
            f"| key_encrypt, {before:,} events | {empty[0]:,.0f} calls/s; CPU {empty[1]:.3f} ms + PostgreSQL "
            f"{empty[2]:.3f} ms | — |",
            f"| key_encrypt, {total:,} events | {filled[0]:,.0f} calls/s; CPU {filled[1]:.3f} ms + PostgreSQL "
            f"{filled[2]:.3f} ms | within 10% |",
        ]
        for label, ms in pages.items():
            lines.append(f"| Audit page, {label} | {ms:.1f} ms median | < 200 ms |")
        lines.append("")
        with Path(args.append).open("a", encoding="utf-8") as fh:
            fh.write("\n".join(lines))


if __name__ == "__main__":
    main()
