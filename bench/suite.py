"""Run every benchmark configuration, one after the other, and print the table.

    python bench/suite.py                      # all configurations, all operations
    python bench/suite.py --configs kmsweb     # just kmsweb (started here)
    python bench/suite.py --configs floor-parse --ops Encrypt --duration 5

For each configuration: start its server (bench/serve.py: gunicorn with
bench/gunicorn.conf.py, or moto_server), measure each operation with
bench/run.py's wrk driver, stop the server.  A configuration that cannot be
measured is reported as pending (kmsweb before it is wired) or FAILED, and a
failure makes the exit status 1.  Server logs go to bench/out/.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import runpy
import signal
import subprocess
import sys
import time

import run
import serve

ORDER = ["floor-parse", "floor-crypto-audit", "moto-server", "moto-gunicorn", "kmsweb"]


def machine() -> dict:
    def read(path: str) -> str:
        try:
            with open(path) as handle:
                return handle.read()
        except OSError:
            return ""

    cpu = next(
        (line.split(":", 1)[1].strip() for line in read("/proc/cpuinfo").splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    mem_kb = next(
        (int(line.split()[1]) for line in read("/proc/meminfo").splitlines() if line.startswith("MemTotal:")), 0
    )
    os_name = next(
        (
            line.split("=", 1)[1].strip().strip('"')
            for line in read("/etc/os-release").splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        platform.system(),
    )
    try:
        import psycopg

        with psycopg.connect(serve.DATABASE_URL, connect_timeout=3) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
            sync_commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
            fsync = conn.execute("SHOW fsync").fetchone()[0]
    except Exception as exc:  # the table is still worth printing without it
        pg, sync_commit, fsync = f"unknown ({exc.__class__.__name__})", "?", "?"
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
        wrk = " ".join(wrk.split()[:2])
    except OSError:
        wrk = "not installed"
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg,
        "synchronous_commit": sync_commit,
        "fsync": fsync,
        "wrk": wrk,
    }


def gunicorn_settings() -> dict:
    conf = runpy.run_path(str(serve.GUNICORN_CONF))
    return {k: conf[k] for k in ("workers", "worker_class", "threads", "keepalive", "preload_app")}


def check_targets(results: dict) -> list[str]:
    """The issue's targets for kmsweb Encrypt, when the references were measured."""
    lines = []
    kms = results.get(("kmsweb", "Encrypt"))
    if kms is None:
        return lines
    checks = [
        ("floor-crypto-audit", 1.5, ">= 1.5x floor (b)"),
        ("moto-gunicorn", 2.0, ">= 2x moto under gunicorn"),
    ]
    for config, factor, text in checks:
        ref = results.get((config, "Encrypt"))
        if ref is not None:
            ratio = kms.requests_per_s / ref.requests_per_s
            ok = ratio > factor if factor == 1.0 else ratio >= factor
            lines.append(f"- Encrypt {text}: {ratio:.2f}x of {ref.requests_per_s:,.0f} -> {'PASS' if ok else 'FAIL'}")
    lines.append(f"- Encrypt p99 < 25 ms: {kms.p99_ms:.2f} ms -> {'PASS' if kms.p99_ms < 25 else 'FAIL'}")
    pg_ms = kms.cpu.get("pg_backend_ms_per_request")
    if pg_ms is not None:
        lines.append(f"- Encrypt PostgreSQL CPU <= 0.05 ms: {pg_ms:.3f} ms -> {'PASS' if pg_ms <= 0.05 else 'FAIL'}")
    ecdsa = results.get(("kmsweb", "Sign-ECC_NIST_P256"))
    if ecdsa is not None:
        ratio = ecdsa.requests_per_s / kms.requests_per_s
        verdict = "PASS" if ratio >= 0.70 else "FAIL"
        lines.append(f"- Sign ECC_NIST_P256 >= 70% of Encrypt: {ratio:.0%} of {kms.requests_per_s:,.0f} -> {verdict}")
    return lines


def _target(name: str, port: int) -> run.Target:
    config = serve.CONFIGS[name]
    return run.Target(
        url=f"http://127.0.0.1:{port}/",
        access_key=config.access_key or "AKIAFLOORBENCH000001",
        secret=config.secret or "floor-bench-secret",
        preset=config.preset,
        label=name,
    )


def merge(rounds: list[run.Result]) -> run.Result:
    """One result from one run per round: the median clean run, with every run listed."""
    clean = [r for r in rounds if not r.disturbed] or rounds
    chosen = sorted(clean, key=lambda r: r.requests_per_s)[(len(clean) - 1) // 2]
    merged = dataclasses.replace(chosen)
    for field in ("runs_requests_per_s", "runs_p50_ms", "runs_p99_ms", "runs_others_cpu", "runs_clean"):
        setattr(merged, field, [value for r in rounds for value in getattr(r, field)])
    merged.clean_runs = sum(r.clean_runs for r in rounds)
    merged.disturbed = all(r.disturbed for r in rounds)
    return merged


def interleaved(names: list[str], ops: list[str], args: argparse.Namespace, results, table, by_key) -> bool:
    """Measure every configuration in turns (``--interleave``); True when something failed."""
    procs = []
    targets: dict[str, run.Target] = {}
    failed = False
    try:
        for offset, name in enumerate(names):
            config = serve.CONFIGS[name]
            ok, reason = config.available()
            if not ok:
                print(f"#   {name}: {reason}", file=sys.stderr)
                continue
            port = args.port + offset
            procs.append(serve.start(config, port, run.OUT_DIR / f"{name}.log"))
            targets[name] = _target(name, port)
            run.prepare(targets[name], ops)
        rounds: dict[tuple[str, str], list[run.Result]] = {}
        options = {**run.run_options(args), "repeat": 1}
        for number in range(args.repeat):
            order = list(targets) if number % 2 == 0 else list(reversed(targets))
            for name in order:
                for op in ops:
                    result = run.bench_operation(targets[name], op, **options)
                    rounds.setdefault((name, op), []).append(result)
                    print(f"#   round {number + 1}: {result.row()}", file=sys.stderr, flush=True)
        for name in targets:
            for op in ops:
                result = merge(rounds[(name, op)])
                results.append(result)
                by_key[(name, op)] = result
                table.append(result.row())
                print(result.row(), flush=True)
    except Exception as exc:  # a failed run, a botocore error while preparing, ...
        failed = True
        print(f"\nBENCHMARK FAILED: {exc.__class__.__name__}: {exc} (server logs in {run.OUT_DIR})", file=sys.stderr)
    finally:
        for proc in procs:
            serve.stop(proc)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs",
        default=os.environ.get("BENCH_CONFIGS", ",".join(ORDER)),
        help="comma-separated, from: " + ", ".join(ORDER),
    )
    parser.add_argument("--port", type=int, default=serve.DEFAULT_PORT)
    parser.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="start every configuration at once (on --port, --port+1, ...) and take turns: each of the "
        "--repeat rounds measures each configuration once, in alternating order, so that a machine "
        "that slows down or speeds up during the session weighs on all of them alike",
    )
    run.add_run_options(parser)
    args = parser.parse_args(argv)

    # Stopped with SIGTERM: still run the `finally` that stops the server.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    names = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = [name for name in names if name not in serve.CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {ORDER}")
    ops = run.parse_ops(args.ops)
    run.OUT_DIR.mkdir(parents=True, exist_ok=True)

    info = machine()
    gconf = gunicorn_settings()
    print(
        f"# machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory_gib']} GiB, {info['os']}, "
        f"Python {info['python']}, PostgreSQL {info['postgresql']} "
        f"(synchronous_commit={info['synchronous_commit']}, fsync={info['fsync']}), {info['wrk']}"
    )
    print(
        f"# gunicorn: {gconf}; wrk -t{args.threads} -c{args.connections} -d{args.duration}s "
        f"(warm-up {args.warmup}s){f', nice -n {args.nice}' if args.nice else ''}; "
        "driver, servers and PostgreSQL share the machine's cores"
    )
    print(run.TABLE_HEADER, flush=True)

    results: list[run.Result] = []
    table: list[str] = []
    by_key: dict = {}
    failed = False
    if args.interleave:
        failed = interleaved(names, ops, args, results, table, by_key)
        names = []
    for name in names:
        config = serve.CONFIGS[name]
        ok, reason = config.available()
        if not ok:
            for op in ops:
                row = run.markdown_row(name, op, "pending", "", "", "", "", "", "")
                table.append(row)
                print(row, flush=True)
            print(f"#   {name}: {reason}", file=sys.stderr)
            continue
        log_path = run.OUT_DIR / f"{name}.log"
        proc = None
        try:
            proc = serve.start(config, args.port, log_path)
            target = run.Target(
                url=f"http://127.0.0.1:{args.port}/",
                access_key=config.access_key or "AKIAFLOORBENCH000001",
                secret=config.secret or "floor-bench-secret",
                preset=config.preset,
                label=name,
            )
            run.prepare(target, ops)
            for op in ops:
                result = run.bench_operation(target, op, **run.run_options(args))
                results.append(result)
                by_key[(name, op)] = result
                table.append(result.row())
                print(result.row(), flush=True)
        except (run.BenchFailure, RuntimeError, OSError, subprocess.SubprocessError) as exc:
            failed = True
            row = run.markdown_row(name, "-", "FAILED", "", "", "", "", "", "")
            table.append(row)
            print(row, flush=True)
            print(f"\nBENCHMARK FAILED: {name}: {exc}\n(server log: {log_path})", file=sys.stderr)
        except Exception as exc:  # botocore errors while preparing the key, etc.
            failed = True
            row = run.markdown_row(name, "-", "FAILED", "", "", "", "", "", "")
            table.append(row)
            print(row, flush=True)
            print(
                f"\nBENCHMARK FAILED: {name}: {exc.__class__.__name__}: {exc}\n(server log: {log_path})",
                file=sys.stderr,
            )
        finally:
            if proc is not None:
                serve.stop(proc)
                time.sleep(1)

    checks = check_targets(by_key)
    if checks:
        print("\nTargets (kmsweb Encrypt):\n" + "\n".join(checks))
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(run.TABLE_HEADER + "\n" + "\n".join(table) + "\n")
            if checks:
                handle.write("\n" + "\n".join(checks) + "\n")
    if args.json:
        run.write_json(
            args.json,
            results,
            {"machine": info, "gunicorn": gconf, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
