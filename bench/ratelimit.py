"""What request quotas cost when they are not hit (issue 17).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench REDIS_URL=redis://127.0.0.1:6379/0 \\
        python bench/ratelimit.py [--n 2000] [--rounds 3] [--append docs/BENCHMARKS.md]

Runs ``bench/profile_api.py`` (signed Encrypt requests handed to kmsweb's WSGI
application in one process, no HTTP) in three configurations, in turn, for
``--rounds`` rounds, and reports the median of each:

- off: ``KMSWEB_RATE_LIMITS=off``;
- Redis: account and principal quotas far above the load, counted in Redis
  (one Lua script call per request);
- per process: the same quotas without ``REDIS_URL`` (counted in memory).

Each figure is wall time and process CPU per request of one process; the
requests/s of that process is 1000 / wall ms. Then the limiter alone: the
CPU and wall time of one check (an account and a principal counter) against
Redis and in memory, over 20,000 checks far below their quotas.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
HIGH = "symmetric=1000000,asymmetric=1000000,random=1000000,management=1000000"
LINE = re.compile(r"([\d.]+) ms CPU/request in the server process.*\(([\d.]+) ms wall\)")


def run(env: dict[str, str], n: int, setup: bool) -> tuple[float, float]:
    cmd = [sys.executable, str(BENCH_DIR / "profile_api.py"), "--op", "Encrypt", "--n", str(n)]
    if not setup:
        cmd.append("--no-setup")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    match = LINE.search(done.stdout)
    if match is None:
        raise SystemExit(f"no figure in profile_api's output:\n{done.stdout}\n{done.stderr}")
    return float(match[1]), float(match[2])


def limiter_alone(redis_url: str, checks: int = 20_000) -> dict[str, tuple[float, float]]:
    """Microseconds of CPU and wall per check, far below the quotas: Redis (leases) and per process."""
    import time

    sys.path.insert(0, str(BENCH_DIR.parent))
    from kmsweb.ratelimit import LocalCounter, RedisCounter

    out = {}
    for name, counter in (("Redis", RedisCounter(redis_url)), ("per process", LocalCounter())):
        keys, limits = ["bench:acct", "bench:principal"], [1_000_000, 1_000_000]
        for _ in range(1000):
            counter.take(keys, limits, int(time.time()))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(checks):
            counter.take(keys, limits, int(time.time()))
        out[name] = ((time.process_time() - cpu0) / checks * 1e6, (time.perf_counter() - wall0) / checks * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--append")
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        sys.exit("bench/ratelimit.py needs REDIS_URL (a Redis it may write counters to)")
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KMSWEB_RATE_LIMITS")}
    configs = {
        "off": {**base, "REDIS_URL": redis_url, "KMSWEB_RATE_LIMITS": "off"},
        "Redis": {**base, "REDIS_URL": redis_url, "KMSWEB_RATE_LIMITS": HIGH, "KMSWEB_PRINCIPAL_RATE_LIMITS": HIGH},
        "per process": {**base, "KMSWEB_RATE_LIMITS": HIGH, "KMSWEB_PRINCIPAL_RATE_LIMITS": HIGH},
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    setup = True
    for round_ in range(args.rounds):
        for name, env in configs.items():
            results[name].append(run(env, args.n, setup))
            setup = False
            cpu, wall = results[name][-1]
            print(f"round {round_ + 1} {name}: {cpu:.3f} ms CPU, {wall:.3f} ms wall", flush=True)
    medians = {
        name: (statistics.median(c for c, _ in rows), statistics.median(w for _, w in rows))
        for name, rows in results.items()
    }
    off_wall = medians["off"][1]
    for name, (cpu, wall) in medians.items():
        change = off_wall / wall - 1
        print(f"{name}: {cpu:.3f} ms CPU/request, {wall:.3f} ms wall, {1000 / wall:.0f} requests/s ({change:+.1%})")
    alone = limiter_alone(redis_url)
    for name, (cpu_us, wall_us) in alone.items():
        print(f"one check, {name}: {cpu_us:.1f} µs CPU, {wall_us:.1f} µs wall")
    if args.append:
        lines = [
            "",
            "## Request quotas when not hit (issue 17)",
            "",
            f"`bench/ratelimit.py --n {args.n} --rounds {args.rounds}`, {datetime.now(UTC):%Y-%m-%d}: Encrypt "
            f"through kmsweb's WSGI application in one process (`bench/profile_api.py`, no HTTP), PostgreSQL, "
            f"Redis on loopback, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}) shared with "
            f"other work, Python {platform.python_version()}; median of {args.rounds} rounds of {args.n} requests, "
            "the configurations taking turns. Quotas set to 1,000,000 requests/s for every class, per account "
            "and per principal.",
            "",
            "| quotas | CPU per request | wall per request | requests/s (one process) | against off |",
            "|---|---|---|---|---|",
        ]
        for name, (cpu, wall) in medians.items():
            lines.append(f"| {name} | {cpu:.3f} ms | {wall:.3f} ms | {1000 / wall:,.0f} | {off_wall / wall - 1:+.1%} |")
        lines += ["", "| one check (account + principal counters) | CPU | wall |", "|---|---|---|"]
        for name, (cpu_us, wall_us) in alone.items():
            lines.append(f"| {name} | {cpu_us:.1f} µs | {wall_us:.1f} µs |")
        lines.append("")
        with Path(args.append).open("a", encoding="utf-8") as fh:
            fh.write("\n".join(lines))


if __name__ == "__main__":
    main()
