"""Alarm evaluation benchmark (issue 6), on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench_alarms \\
        .venv/bin/python bench/alarms.py [--alarms 1000] [--events 200000] [--append docs/BENCHMARKS.md]

1. A fresh database with N audit events over the last 24 hours (the same
   generator as ``bench/rollup.py``), rolled up, plus a few thousand recent
   events left above the watermark (what readers count live).
2. ``--alarms`` alarms in one account: every metric kind, filters by key,
   operation, principal and error code, periods from 1 minute to 1 day,
   1 to 10 evaluation periods, every missing-data treatment.
3. ``alarms_evaluate`` over all of them, 5 times (the target: under 5 s);
   the first run changes states (and writes history), later ones mostly not.
   Reports each run's seconds and SQL query count.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rollup  # noqa: E402  (bench/rollup.py: database setup and seeding)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/kmsweb_bench_alarms"
METRICS = ["requests", "errors", "denials", "pending_deletion_use", "key_state_changes", "new_principal_use"]
PERIODS = [60, 60, 60, 300, 300, 900, 3600, 3600, 86400]
TREATMENTS = ["missing", "ignore", "breaching", "notBreaching"]
COMPARISONS = [
    "GreaterThanOrEqualToThreshold",
    "GreaterThanThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
]


def make_alarms(n: int, now: datetime) -> None:
    from audit.models import Alarm, AlarmSetup

    rng = random.Random(6)
    AlarmSetup.objects.create(account_id=rollup.ACCOUNT, created_at=now)
    rows = []
    for i in range(n):
        period = rng.choice(PERIODS)
        evaluation_periods = rng.randint(1, 10 if period < 86400 else 5)
        rows.append(
            Alarm(
                account_id=rollup.ACCOUNT,
                name=f"bench alarm {i}",
                metric=rng.choice(METRICS),
                key_id=f"00000000-0000-4000-8000-{rng.randrange(50):012d}" if rng.random() < 0.5 else "",
                operation=rng.choice(["Encrypt", "Decrypt", "GenerateDataKey"]) if rng.random() < 0.3 else "",
                principal_arn=f"arn:aws:iam::{rollup.ACCOUNT}:user/app-{rng.randrange(40)}"
                if rng.random() < 0.2
                else "",
                error_code="AccessDeniedException" if rng.random() < 0.1 else "",
                period=period,
                comparison=rng.choice(COMPARISONS),
                threshold=rng.choice([1, 5, 50, 500]),
                evaluation_periods=evaluation_periods,
                datapoints_to_alarm=rng.randint(1, evaluation_periods),
                treat_missing_data=rng.choice(TREATMENTS),
                state_updated_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    Alarm.objects.bulk_create(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alarms", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--append", type=Path)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    rollup.fresh_database(url)
    rollup.setup_django(url)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from audit.models import AlarmHistory
    from audit.services.alarm_evaluation import alarms_evaluate
    from audit.services.usage import usage_rollup
    from kmsweb.lib.caller import Caller
    from policies.models import Account

    now = datetime.now(tz=UTC)
    Account.objects.create(id=rollup.ACCOUNT)
    rollup.seed(args.events, end=now - timedelta(minutes=2))
    usage_rollup(caller=Caller.system("rollup_usage"), now=now)
    live = 5000
    rollup.seed(live, end=now - timedelta(seconds=1), span=timedelta(seconds=50), first=args.events + 1)
    make_alarms(args.alarms, now)
    load_before = os.getloadavg()
    timings: list[tuple[float, int, int]] = []
    for run in range(args.runs):
        at = now + timedelta(seconds=run)
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            counts = alarms_evaluate(caller=Caller.system("evaluate_alarms"), now=at)
            elapsed = time.perf_counter() - started
        timings.append((elapsed, len(queries.captured_queries), counts["transitions"]))
        assert counts["alarms"] == args.alarms, counts
    load_after = os.getloadavg()
    rows = "\n".join(f"| {i + 1} | {t:.2f} | {q} | {tr} |" for i, (t, q, tr) in enumerate(timings))
    median = statistics.median(t for t, _, _ in timings)
    block = f"""
### Alarm evaluation (`bench/alarms.py`, {datetime.now(tz=UTC):%Y-%m-%d})

Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL
(loopback). Load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (the machine is shared).
Command: `DATABASE_URL=postgres://…/kmsweb_bench_alarms python bench/alarms.py --alarms {args.alarms}
--events {args.events}`. {args.events:,} events rolled up over 24 h plus {live:,} above the watermark;
{args.alarms:,} alarms mixing every metric, filter, period (1 min … 1 day), M of N and missing-data
treatment. History rows written: {AlarmHistory.objects.count():,}.

| run | seconds | SQL queries | transitions |
| ---: | ---: | ---: | ---: |
{rows}

**Median {median:.2f} s for {args.alarms:,} alarms** (target < 5 s). The first run writes a transition
(history row, audit event, conditional update) for most alarms; later runs only re-read and compare.
"""
    print(block)
    if args.append:
        with args.append.open("a") as fh:
            fh.write(block)


if __name__ == "__main__":
    main()
