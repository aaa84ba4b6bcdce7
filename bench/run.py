"""Benchmark one running KMS endpoint with wrk replaying SigV4-signed requests.

For each operation (Encrypt of 4 KiB, Decrypt of that ciphertext,
GenerateDataKey AES_256) the runner signs a fresh request with botocore
(bench/sign.py), sends it once and checks the answer, runs a short wrk
warm-up, then

    wrk -t2 -c16 -d{duration}s --latency -s {script}.lua {url}

and reports requests/s, p50 and p99.  Any non-2xx answer or socket error
fails the scenario (exit status 1).

    python bench/run.py --url http://127.0.0.1:8000/ \\
        --access-key AKID --secret SECRET --key-id KEY [--label kmsweb]

Presets say how the key id and the Decrypt ciphertext are obtained:

* generic (default): the target is a KMS (kmsweb, AWS-compatible).  Without
  --key-id a key is made with CreateKey; the ciphertext comes from Encrypt,
  both through boto3 with the given credentials.
* moto: like generic, but an existing key (ListKeys) is used first and the
  credentials default to testing/testing.
* floor: the floor app (bench/floor): fixed key id, ciphertext built locally
  with the floor's key, so (a) and (b) get byte-identical request bodies.

Every option has an environment variable: BENCH_URL, BENCH_ACCESS_KEY_ID,
BENCH_SECRET_ACCESS_KEY, BENCH_KEY_ID, BENCH_REGION, BENCH_DURATION, ...
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import sign
from cpumeter import CpuMeter

BENCH_DIR = pathlib.Path(__file__).resolve().parent
OUT_DIR = pathlib.Path(os.environ.get("BENCH_OUT_DIR", BENCH_DIR / "out"))
FLOOR_KEY_ID = "floor-key"
MAX_DURATION = 20  # seconds: keep every run bounded


class BenchFailure(RuntimeError):
    """A scenario that must not be reported as a result."""


@dataclass
class Target:
    url: str
    access_key: str
    secret: str
    region: str = "us-east-1"
    key_id: str | None = None
    preset: str = "generic"
    label: str = "target"
    ciphertext_blob: bytes | None = None
    # Keys of other specs, by benchmark operation (Sign-ECC_NIST_P256, GenerateMac, ...).
    op_keys: dict[str, str] | None = None


@dataclass
class Result:
    config: str
    operation: str
    requests_per_s: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: dict
    connections: int
    threads: int
    command: str
    runs_requests_per_s: list
    runs_p50_ms: list
    runs_p99_ms: list
    runs_others_cpu: list
    runs_clean: list
    cpu: dict
    disturbed: bool
    clean_runs: int

    def runs_text(self) -> str:
        """Every run's requests/s; a disturbed run (other processes busy) marked with *."""
        text = " / ".join(
            f"{rps:,.0f}{'' if ok else '*'}" for rps, ok in zip(self.runs_requests_per_s, self.runs_clean, strict=True)
        )
        return text + (" (no clean run)" if self.disturbed else "")

    def row(self) -> str:
        return markdown_row(
            self.config,
            self.operation,
            f"{self.requests_per_s:,.0f}",
            f"{self.p50_ms:.2f}",
            f"{self.p99_ms:.2f}",
            f"{self.requests:,}",
            f"{self.cpu.get('server_ms_per_request', 0.0):.3f}",
            f"{self.cpu.get('pg_backend_ms_per_request', 0.0):.3f}",
            self.runs_text(),
        )


TABLE_HEADER = (
    "| Configuration | Operation | Requests/s | p50 (ms) | p99 (ms) | Requests | Server CPU (ms/req) "
    "| PostgreSQL CPU (ms/req) | Runs (req/s) |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
)


def markdown_row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


# ---------------------------------------------------------------- target set-up


def boto_client(target: Target):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "kms",
        endpoint_url=target.url,
        region_name=target.region,
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


def prepare(target: Target, operations: list[str]) -> None:
    """Fill in target.key_id and, if Decrypt is measured, target.ciphertext_blob."""
    plaintext = sign.bench_plaintext()
    if target.preset == "floor":
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from floor.keys import floor_key, seal

        target.key_id = target.key_id or FLOOR_KEY_ID
        if target.ciphertext_blob is None:
            # A fixed nonce, so that every run sends the same bytes.
            target.ciphertext_blob = seal(AESGCM(floor_key()), target.key_id, plaintext, bytes(12))
        return
    special = [op for op in operations if op in sign.KEY_OPERATIONS]
    if special and target.preset == "floor":
        raise BenchFailure(f"the floor app implements only {', '.join(sign.OPERATIONS)}, not {', '.join(special)}")
    if special:
        target.op_keys = target.op_keys or {}
        client = boto_client(target)
        for op in special:
            if op not in target.op_keys:
                key_spec, key_usage = sign.KEY_OPERATIONS[op][:2]
                made = client.create_key(Description=f"kmsweb bench {op}", KeySpec=key_spec, KeyUsage=key_usage)
                target.op_keys[op] = made["KeyMetadata"]["KeyId"]
                print(f"# created {key_spec} key {target.op_keys[op]} for {op}", file=sys.stderr)
    if target.key_id and (target.ciphertext_blob is not None or "Decrypt" not in operations):
        return
    client = boto_client(target)
    if not target.key_id and target.preset == "moto":
        keys = client.list_keys().get("Keys", [])
        if keys:
            target.key_id = keys[0]["KeyId"]
    if not target.key_id:
        target.key_id = client.create_key(Description="kmsweb bench key")["KeyMetadata"]["KeyId"]
        print(f"# created key {target.key_id}", file=sys.stderr)
    if "Decrypt" in operations and target.ciphertext_blob is None:
        answer = client.encrypt(KeyId=target.key_id, Plaintext=plaintext)
        target.ciphertext_blob = answer["CiphertextBlob"]


def signed_request(target: Target, op: str) -> sign.SignedRequest:
    key_id = (target.op_keys or {}).get(op, target.key_id)
    body = sign.request_body(op, key_id, target.ciphertext_blob)
    return sign.sign(target.url, op, body, target.access_key, target.secret, target.region)


def preflight(target: Target, op: str, signed: sign.SignedRequest) -> None:
    """Send the exact request wrk will replay once, and check the answer."""
    parts = urlsplit(target.url)
    conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_class(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(signed.method, signed.path, body=signed.body.encode(), headers=signed.headers)
        response = conn.getresponse()
        text = response.read().decode(errors="replace")
    except OSError as exc:
        raise BenchFailure(f"{target.label} {op}: cannot reach {target.url}: {exc}") from exc
    finally:
        conn.close()
    if not 200 <= response.status < 300:
        raise BenchFailure(f"{target.label} {op}: preflight answered {response.status}: {text[:500]}")
    try:
        answer = json.loads(text)
    except ValueError as exc:
        raise BenchFailure(f"{target.label} {op}: preflight answer is not JSON: {text[:200]}") from exc
    wanted = {
        "Encrypt": ["CiphertextBlob"],
        "Decrypt": ["Plaintext"],
        "GenerateDataKey": ["CiphertextBlob", "Plaintext"],
        "Sign": ["Signature"],
        "GenerateMac": ["Mac"],
    }[sign.kms_operation(op)]
    missing = [field for field in wanted if field not in answer]
    if missing:
        raise BenchFailure(f"{target.label} {op}: answer lacks {missing}: {text[:300]}")
    if target.preset != "floor":  # the floor's parse mode only echoes
        if op == "Decrypt" and base64.b64decode(answer["Plaintext"]) != sign.bench_plaintext():
            raise BenchFailure(f"{target.label} Decrypt: plaintext does not round-trip")
        if op == "GenerateDataKey" and len(base64.b64decode(answer["Plaintext"])) != 32:
            raise BenchFailure(f"{target.label} GenerateDataKey: data key is not 32 bytes")


# ---------------------------------------------------------------- wrk

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"unreadable latency {text!r}")
    return float(match.group(1)) * UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> dict:
    def find(pattern: str) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchFailure(f"wrk output lacks {pattern!r}:\n{output}")
        return match.group(1)

    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    stats = {
        "requests_per_s": float(find(r"^Requests/sec:\s+([0-9.]+)")),
        "requests": int(find(r"^\s*(\d+) requests in ")),
        "seconds": to_ms(find(r"^\s*\d+ requests in ([0-9.]+[a-z]+)")) / 1000,
        "max_ms": to_ms(find(r"^[ \t]*Latency[ \t]+\S+[ \t]+\S+[ \t]+(\S+)")),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }
    for pct in (50, 75, 90, 99):
        stats[f"p{pct}_ms"] = to_ms(find(rf"^\s*{pct}%\s+(\S+)"))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    stats["socket_errors"] = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True)) if errors else {}
    )
    strict = re.search(r"^BENCH_NON2XX (\d+)", output, re.MULTILINE)
    if strict:
        stats["non_2xx"] = max(stats["non_2xx"], int(strict.group(1)))
    return stats


def wrk_command(
    url: str, script: pathlib.Path, duration: int, threads: int, connections: int, latency: bool, nice: int
) -> list[str]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchFailure("wrk not found: apt-get install -y wrk")
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s"]
    if latency:
        cmd.append("--latency")
    cmd += ["-s", str(script), url]
    return (["nice", "-n", str(nice)] + cmd) if nice else cmd


def run_wrk(cmd: list[str], duration: int, label: str) -> tuple[str, dict]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise BenchFailure(f"{label}: wrk exited {done.returncode}:\n{output}")
    stats = parse_wrk(output)
    if stats["non_2xx"]:
        raise BenchFailure(f"{label}: {stats['non_2xx']} non-2xx answers:\n{output}")
    if any(stats["socket_errors"].values()):
        raise BenchFailure(f"{label}: socket errors {stats['socket_errors']}:\n{output}")
    return output, stats


def display_command(cmd: list[str]) -> str:
    """The command as a person would type it (no absolute path to wrk)."""
    return " ".join(pathlib.Path(part).name if part == shutil.which("wrk") else part for part in cmd)


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over the next ``seconds`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return 0.0
    total = total1 - total0
    return 1.0 - (idle1 - idle0) / total if total else 0.0


def wait_quiet(threshold: float, timeout: float) -> float:
    """Wait (at most ``timeout`` s) until the machine is idle enough to measure.

    Driver, server and PostgreSQL share the machine: anything else running
    (a test suite, a build) would be measured too.  Returns the last busy
    fraction seen; the caller records it next to the result.
    """
    deadline = time.monotonic() + timeout
    busy = cpu_busy()
    while busy > threshold and time.monotonic() < deadline:
        busy = cpu_busy(2.0)
    if busy > threshold:
        print(f"# warning: machine still {busy:.0%} busy before the run", file=sys.stderr)
    return busy


def bench_operation(
    target: Target,
    op: str,
    duration: int = 10,
    warmup: int = 2,
    threads: int = 2,
    connections: int = 16,
    nice: int = 0,
    strict: bool = False,
    verbose: bool = False,
    repeat: int = 1,
    quiet: float = 0.15,
    quiet_timeout: float = 120,
    max_others: float = 0.05,
    extra_attempts: int = 4,
) -> Result:
    """Measure one operation; report the median (by requests/s) of ``repeat`` clean runs.

    A run is clean when processes other than wrk, the server and PostgreSQL
    took at most ``max_others`` of the machine during it (bench/cpumeter.py).
    Disturbed runs are repeated, at most ``extra_attempts`` times in all; the
    median is taken over the clean runs, and over all runs (the result then
    marked ``disturbed``) only when none was clean.
    """
    if not 1 <= duration <= MAX_DURATION or not 0 <= warmup <= MAX_DURATION:
        raise BenchFailure(f"durations must be at most {MAX_DURATION} s")
    if not 1 <= repeat <= 5:
        raise BenchFailure("repeat must be between 1 and 5")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    script = OUT_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', target.label)}-{op}.lua"
    label = f"{target.label} {op}"
    parts = urlsplit(target.url)
    dbname = urlsplit(os.environ.get("DATABASE_URL") or "postgres:///kmsweb_bench").path.lstrip("/")
    meter = CpuMeter(parts.port or (443 if parts.scheme == "https" else 80) if is_local(target.url) else None, dbname)
    clean, disturbed = [], []
    attempts = 0
    while len(clean) < repeat and attempts < repeat + extra_attempts:
        attempts += 1
        signed = signed_request(target, op)  # signed now: valid for the next 15 minutes
        preflight(target, op, signed)
        sign.write_lua(str(script), signed, strict)
        if warmup and attempts == 1:
            run_wrk(
                wrk_command(target.url, script, warmup, threads, connections, True, nice), warmup, label + " warm-up"
            )
        if quiet < 1:
            wait_quiet(quiet, quiet_timeout)
        cmd = wrk_command(target.url, script, duration, threads, connections, True, nice)
        meter.start()
        output, stats = run_wrk(cmd, duration, label)
        stats["cpu"] = meter.stop()
        if verbose:
            print(output, file=sys.stderr)
        if stats["cpu"]["others"] + stats["cpu"]["steal"] > max_others:
            print(
                f"# {label}: run disturbed (others took {stats['cpu']['others']:.0%} of the machine,"
                f" steal {stats['cpu']['steal']:.0%}), again",
                file=sys.stderr,
            )
            disturbed.append((stats, cmd))
        else:
            clean.append((stats, cmd))
    # The median of the clean runs; only when no run was clean, of all of them.
    chosen = clean or disturbed
    stats, cmd = sorted(chosen, key=lambda run: run[0]["requests_per_s"])[(len(chosen) - 1) // 2]
    stats = dict(stats)
    cpu = dict(stats.pop("cpu"))
    if stats.get("requests"):
        # PostgreSQL backend CPU per answered request (milliseconds), for the chosen run.
        cpu["pg_backend_ms_per_request"] = round(cpu.get("pg_backend_seconds", 0.0) * 1000 / stats["requests"], 4)
        # The server's own CPU per answered request (all its processes), milliseconds.
        cpu["server_ms_per_request"] = round(cpu.get("server_seconds", 0.0) * 1000 / stats["requests"], 4)
    runs = [(run, True) for run in clean] + [(run, False) for run in disturbed]
    return Result(
        config=target.label,
        operation=op,
        connections=connections,
        threads=threads,
        command=display_command(cmd),
        runs_requests_per_s=[round(r[0]["requests_per_s"], 1) for r, _ in runs],
        runs_p50_ms=[round(r[0]["p50_ms"], 2) for r, _ in runs],
        runs_p99_ms=[round(r[0]["p99_ms"], 2) for r, _ in runs],
        runs_others_cpu=[round(r[0]["cpu"]["others"] + r[0]["cpu"]["steal"], 3) for r, _ in runs],
        runs_clean=[ok for _, ok in runs],
        cpu=cpu,
        disturbed=not clean,
        clean_runs=len(clean),
        **stats,
    )


def is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


# ---------------------------------------------------------------- command line


def add_run_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--ops",
        default=env("BENCH_OPS", ",".join(sign.OPERATIONS)),
        help="comma-separated, from: " + ",".join(sign.ALL_OPERATIONS),
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=int(env("BENCH_DURATION", "10")),
        help=f"seconds per measured run (at most {MAX_DURATION})",
    )
    parser.add_argument(
        "--warmup", type=int, default=int(env("BENCH_WARMUP", "2")), help="seconds of wrk warm-up before each run"
    )
    parser.add_argument("--connections", "-c", type=int, default=int(env("BENCH_CONNECTIONS", "16")))
    parser.add_argument("--threads", "-t", type=int, default=int(env("BENCH_THREADS_WRK", "2")))
    parser.add_argument(
        "--nice",
        type=int,
        default=int(env("BENCH_NICE", "0")),
        help="run wrk under nice -n N (driver and server share the cores)",
    )
    parser.add_argument("--strict", action="store_true", help="count non-2xx answers in Lua too (costs driver CPU)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=int(env("BENCH_REPEAT", "1")),
        help="measured runs per operation (1-5); the clean run with the median requests/s is reported",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=float(env("BENCH_QUIET", "0.15")),
        help="before each run, wait until the machine is at most this busy (0-1; 1 = do not wait)",
    )
    parser.add_argument(
        "--max-others",
        type=float,
        default=float(env("BENCH_MAX_OTHERS", "0.05")),
        help="a run during which other processes took more than this share of the machine is run again",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--verbose", "-v", action="store_true", help="print wrk's own output")


def run_options(args: argparse.Namespace) -> dict:
    """bench_operation's keyword arguments from add_run_options' options."""
    return {
        "duration": args.duration,
        "warmup": args.warmup,
        "threads": args.threads,
        "connections": args.connections,
        "nice": args.nice,
        "strict": args.strict,
        "verbose": args.verbose,
        "repeat": args.repeat,
        "quiet": args.quiet,
        "max_others": args.max_others,
    }


def parse_ops(text: str) -> list[str]:
    return [sign.canonical_op(op) for op in text.split(",") if op.strip()]


def write_json(path: str, results: list[Result], extra: dict | None = None) -> None:
    document = {"results": [asdict(r) for r in results], **(extra or {})}
    pathlib.Path(path).write_text(json.dumps(document, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=env("BENCH_URL", "http://127.0.0.1:8000/"))
    parser.add_argument("--access-key", default=env("BENCH_ACCESS_KEY_ID"))
    parser.add_argument("--secret", default=env("BENCH_SECRET_ACCESS_KEY"))
    parser.add_argument("--region", default=env("BENCH_REGION", "us-east-1"))
    parser.add_argument("--key-id", default=env("BENCH_KEY_ID"), help="key to use (default: made with CreateKey)")
    parser.add_argument(
        "--ciphertext-blob",
        default=env("BENCH_CIPHERTEXT_BLOB"),
        help="base64 ciphertext for Decrypt (default: from Encrypt)",
    )
    parser.add_argument("--preset", choices=("generic", "moto", "floor"), default=env("BENCH_PRESET", "generic"))
    parser.add_argument("--label", default=env("BENCH_LABEL"), help="configuration name in the table")
    add_run_options(parser)
    args = parser.parse_args(argv)

    if args.preset == "moto":
        args.access_key = args.access_key or "testing"
        args.secret = args.secret or "testing"
    if args.preset == "floor":
        args.access_key = args.access_key or "AKIAFLOORBENCH000001"
        args.secret = args.secret or "floor-bench-secret"
    if not (args.access_key and args.secret):
        parser.error("--access-key and --secret (or BENCH_ACCESS_KEY_ID / BENCH_SECRET_ACCESS_KEY) are required")
    target = Target(
        url=args.url,
        access_key=args.access_key,
        secret=args.secret,
        region=args.region,
        key_id=args.key_id,
        preset=args.preset,
        label=args.label or args.preset,
        ciphertext_blob=base64.b64decode(args.ciphertext_blob) if args.ciphertext_blob else None,
    )
    ops = parse_ops(args.ops)
    results = []
    try:
        prepare(target, ops)
        print(TABLE_HEADER, flush=True)
        for op in ops:
            result = bench_operation(target, op, **run_options(args))
            results.append(result)
            print(result.row(), flush=True)
    except BenchFailure as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.json and results:
            write_json(
                args.json,
                results,
                {
                    "url": target.url,
                    "key_id": target.key_id,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
