"""Does a second web node add throughput on one PostgreSQL? (issue 17)

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench_nodes \\
        python bench/two_nodes.py [--duration 10] [--workers 1] [--append docs/BENCHMARKS.md]

Starts kmsweb as ``bench/serve.py`` does (gunicorn, ``bench/gunicorn.conf.py``
with ``--workers``) on one port, drives Encrypt with wrk for ``--duration``
seconds (-t1 -c8), then starts a second node on another port and drives
both at once (one wrk each). For each phase: requests/s in all, and the CPU
the nodes' PostgreSQL backends took per request (from /proc; PostgreSQL
must run on this machine; the nodes keep their connections, so the backends
seen after the warm-up serve the whole run). The nodes share the machine with PostgreSQL and wrk, so
on a small machine the second node competes for the same cores.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime

BENCH_DIR = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR.parent), str(BENCH_DIR)]

import run  # noqa: E402
import serve  # noqa: E402
import sign  # noqa: E402
from floor.setup_db import ensure_database  # noqa: E402


def backends() -> list[int]:
    """The PostgreSQL backends connected to the benchmark's database (the nodes keep theirs open)."""
    import psycopg

    url = os.environ["DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres") as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [name]
        ).fetchall()
    return [row[0] for row in rows]


def postgres_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of the processes ``pids`` (from /proc; PostgreSQL on this machine)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def drive(urls: list[str], scripts: list[pathlib.Path], duration: int) -> tuple[float, int, float]:
    """Run one wrk per URL at once; (requests/s in all, requests, PostgreSQL CPU ms per request)."""
    pids = backends()
    cpu0 = postgres_cpu(pids)
    procs = [
        subprocess.Popen(
            run.wrk_command(url, script, duration, 1, 8, True, 0),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for url, script in zip(urls, scripts, strict=True)
    ]
    outputs = [p.communicate(timeout=duration + 60)[0] for p in procs]
    cpu = postgres_cpu(pids) - cpu0
    stats = [run.parse_wrk(out) for out in outputs]
    for s, out in zip(stats, outputs, strict=True):
        if s["non_2xx"] or any(s["socket_errors"].values()):
            raise SystemExit(f"errors during the run:\n{out}")
    requests = sum(s["requests"] for s in stats)
    return sum(s["requests_per_s"] for s in stats), requests, cpu / max(requests, 1) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per node")
    parser.add_argument("--append")
    args = parser.parse_args()
    os.environ["WEB_CONCURRENCY"] = str(args.workers)
    ensure_database(serve.DATABASE_URL)  # the setup commands need it to exist
    config = serve.CONFIGS["kmsweb"]
    config.command = lambda port: [  # type: ignore[method-assign]
        sys.executable,
        "-m",
        "gunicorn",
        "kmsweb.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(args.workers),
        "--log-level",
        "warning",
    ]
    ports = [serve.DEFAULT_PORT + 17, serve.DEFAULT_PORT + 18]
    procs = []
    results = []
    try:
        procs.append(serve.start(config, ports[0]))
        urls = [f"http://127.0.0.1:{port}/" for port in ports]
        target = run.Target(url=urls[0], access_key=config.access_key, secret=config.secret, label="kmsweb")
        run.prepare(target, ["Encrypt"])
        tmp = pathlib.Path(tempfile.mkdtemp())
        scripts = []
        for n, url in enumerate(urls):
            signed = sign.sign(
                url, "Encrypt", sign.request_body("Encrypt", target.key_id), target.access_key, target.secret
            )
            path = tmp / f"encrypt-{n}.lua"
            sign.write_lua(str(path), signed, strict=True)
            scripts.append(path)
        drive(urls[:1], scripts[:1], 3)  # warm-up
        results.append(("one node", *drive(urls[:1], scripts[:1], args.duration)))
        procs.append(serve.start(config, ports[1]))
        drive(urls[1:], scripts[1:], 3)  # warm-up
        results.append(("two nodes", *drive(urls, scripts, args.duration)))
    finally:
        for proc in procs:
            serve.stop(proc)
    for label, rps, requests, pg_ms in results:
        print(f"{label}: {rps:.0f} requests/s ({requests} requests), PostgreSQL {pg_ms:.3f} ms CPU/request")
    if args.append:
        lines = [
            "",
            "## A second web node on one PostgreSQL (issue 17)",
            "",
            f"`bench/two_nodes.py --duration {args.duration} --workers {args.workers}`, {datetime.now(UTC):%Y-%m-%d}: "
            f"Encrypt, wrk -t1 -c8 per node, {args.workers} gunicorn worker(s) per node, nodes, wrk and "
            f"PostgreSQL on one machine of {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}) "
            "shared with other work.",
            "",
            "| nodes | requests/s | PostgreSQL CPU per request |",
            "|---|---|---|",
        ]
        for label, rps, _, pg_ms in results:
            lines.append(f"| {label} | {rps:,.0f} | {pg_ms:.3f} ms |")
        lines.append("")
        with pathlib.Path(args.append).open("a", encoding="utf-8") as fh:
            fh.write("\n".join(lines))


if __name__ == "__main__":
    main()
