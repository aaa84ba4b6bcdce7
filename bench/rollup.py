"""Usage roll-up benchmark (issue 6), on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench_rollup \\
        .venv/bin/python bench/rollup.py [--events 1000000] [--append docs/BENCHMARKS.md]

1. A fresh database (dropped and re-created: audit rows are append-only),
   migrated, then N audit events inserted with one INSERT ... SELECT over
   generate_series: a realistic mix over the last 24 hours (50 keys, 40
   principals, 6 operations, 3% denials, 1% other errors, 0.2% use of a
   key pending deletion).
2. ``usage_rollup`` over all of them (the target: under 30 s on 2 cores),
   then again with nothing new (the idle beat run), then 50,000 new events
   (a busy minute's catch-up).
3. Checks: the minute, hour and day roll-ups each sum to N, and match a
   GROUP BY over the raw events.

Prints a markdown block; ``--append`` adds it to a file.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
os.environ.setdefault("DJANGO_SECRET_KEY_FILE", str(ROOT / "var" / "django_secret_key"))
os.environ.setdefault("KMSWEB_ROOT_KEY_FILE", str(ROOT / "var" / "root_key"))
os.environ.setdefault("KMSWEB_DB_CONN_MAX_AGE", "0")
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/kmsweb_bench_rollup"
ACCOUNT = "111122223333"


def fresh_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(n: int, *, end: datetime, span: timedelta = timedelta(hours=24), first: int = 1) -> float:
    """Insert ``n`` events spread over ``span`` before ``end`` in one statement; returns seconds."""
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO audit_auditevent (
                event_id, event_time, event_version, event_source, event_name, event_type, aws_region,
                source_ip, user_agent, user_identity, request_parameters, response_elements,
                additional_event_data, error_code, error_message, request_id, read_only, resources,
                management_event, event_category, recipient_account_id, origin, key_id, principal_arn)
            SELECT gen_random_uuid(),
                   %(end)s::timestamptz - (%(span)s::float8 * (g - %(first)s) / %(n)s) * interval '1 second',
                   '1.08', 'kms.amazonaws.com',
                   (ARRAY['Encrypt','Decrypt','GenerateDataKey','Encrypt','Decrypt','DescribeKey'])[1 + g %% 6],
                   'AwsApiCall', 'us-east-1', '10.0.' || (g %% 250) || '.' || (g %% 7), 'bench', '{}'::jsonb,
                   NULL, NULL, NULL,
                   CASE WHEN g %% 100 < 3 THEN 'AccessDeniedException'
                        WHEN g %% 100 = 3 THEN 'ThrottlingException'
                        WHEN g %% 500 = 4 THEN 'KMSInvalidStateException' ELSE '' END,
                   CASE WHEN g %% 500 = 4 THEN 'arn:aws:kms:us-east-1:111122223333:key/x is pending deletion.'
                        ELSE '' END,
                   md5(g::text), (g %% 6 = 5), '[]'::jsonb, true, 'Management', %(account)s, 'api',
                   '00000000-0000-4000-8000-' || lpad((g %% 50)::text, 12, '0'),
                   'arn:aws:iam::111122223333:user/app-' || (g %% 40)
            FROM generate_series(%(first)s, %(first)s + %(n)s - 1) AS g
            """,
            {"end": end, "span": span.total_seconds(), "n": n, "first": first, "account": ACCOUNT},
        )
    return time.perf_counter() - started


def check(n_expected: int) -> dict[str, int]:
    from django.db import connection
    from django.db.models import Sum

    from audit.models import DAY, HOUR, MINUTE, UsageRollup

    sums = {
        res: UsageRollup.objects.filter(resolution=res).aggregate(s=Sum("count"))["s"] or 0
        for res in (MINUTE, HOUR, DAY)
    }
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM (SELECT date_trunc('minute', event_time) b, key_id, event_name, error_code,"
            " principal_arn, count(*) n FROM audit_auditevent WHERE event_source = 'kms.amazonaws.com'"
            " AND NOT (origin = 'dashboard' AND read_only) GROUP BY 1, 2, 3, 4, 5) raw"
            " FULL JOIN (SELECT bucket b, key_id, event_name, error_code, principal_arn, sum(count) n"
            " FROM audit_usagerollup WHERE resolution = 60 GROUP BY 1, 2, 3, 4, 5) r"
            " USING (b, key_id, event_name, error_code, principal_arn) WHERE raw.n IS DISTINCT FROM r.n"
        )
        mismatches = cur.fetchone()[0]
    assert all(s == n_expected for s in sums.values()), (sums, n_expected)
    assert mismatches == 0, mismatches
    return {
        "minute_rows": UsageRollup.objects.filter(resolution=MINUTE).count(),
        **{str(k): v for k, v in sums.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--append", type=Path)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    fresh_database(url)
    setup_django(url)
    from audit.services.usage import usage_rollup
    from kmsweb.lib.caller import Caller

    now = datetime.now(tz=UTC)
    caller = Caller.system("rollup_usage")
    load_before = os.getloadavg()
    seeded = seed(args.events, end=now - timedelta(minutes=1))
    started = time.perf_counter()
    first = usage_rollup(caller=caller, now=now)
    full = time.perf_counter() - started
    started = time.perf_counter()
    idle = usage_rollup(caller=caller, now=now)
    idle_s = time.perf_counter() - started
    extra = 50_000
    seed(extra, end=now - timedelta(seconds=20), span=timedelta(seconds=60), first=args.events + 1)
    started = time.perf_counter()
    busy = usage_rollup(caller=caller, now=now)
    busy_s = time.perf_counter() - started
    facts = check(args.events + extra)
    load_after = os.getloadavg()
    assert first["event_ids"] == args.events and idle["event_ids"] == 0 and busy["event_ids"] == extra
    block = f"""
### Usage roll-ups (`bench/rollup.py`, {datetime.now(tz=UTC):%Y-%m-%d})

Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL
(loopback). Load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (the machine is shared).
Command: `DATABASE_URL=postgres://…/kmsweb_bench_rollup python bench/rollup.py --events {args.events}`

| step | events | seconds |
| --- | ---: | ---: |
| seed (one INSERT … SELECT generate_series) | {args.events:,} | {seeded:.1f} |
| **roll up all of them** (minute + hour + day, first uses) | {args.events:,} | **{full:.2f}** (target < 30) |
| roll up again, nothing new (idle beat run) | 0 | {idle_s:.3f} |
| roll up a busy minute's new events | {extra:,} | {busy_s:.2f} |

Checked: minute, hour and day roll-ups each sum to {args.events + extra:,}; the minute roll-ups equal a
GROUP BY over the raw events ({facts["minute_rows"]:,} minute rows).
"""
    print(block)
    if args.append:
        with args.append.open("a") as fh:
            fh.write(block)


if __name__ == "__main__":
    main()
