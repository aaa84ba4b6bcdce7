"""Authorization benchmark (issue 4): Encrypt authorized by an identity policy or a grant, against plain Encrypt.

    .venv/bin/python bench/authorization.py [--rounds 3] [--duration 10] [--append docs/BENCHMARKS.md]

Three scenarios, each an Encrypt of 4 KiB replayed by bench/run.py's wrk
driver (``wrk -t2 -c16``, signed by bench/sign.py) against kmsweb served by
bench/serve.py's ``kmsweb`` configuration (gunicorn with bench/gunicorn.conf.py,
PostgreSQL):

* ``plain``: the foundation's case. A key with AWS's default key policy (one
  statement: the account root may do ``kms:*``) and a caller whose one
  identity policy allows ``kms:*``.
* ``identity-policy``: a key whose policy has 20 statements, every one with
  conditions (encryption context, source IP, caller account, principal ARN,
  MFA, encryption algorithm, …), and a caller allowed by the key policy's
  account statement together with its identity policy scoped to that key.
* ``grant``: the same key; a caller with no identity policy at all, allowed
  by a grant (Encrypt, Decrypt). The policies are evaluated first and refuse,
  then the caller's grants on the key are read and decide.

The server runs on its own port and database (``kmsweb_bench_authz``, made
afresh each run) so that it disturbs no other benchmark's data. The
principals, keys, policies and grant are made with kmsweb's own services in
this process, on that database. Before measuring, each scenario is decided
once in-process with ``policies.authorization.authorize`` to check that it
takes the path it claims (reason ``identity-policy`` or ``grant``), and the
cost of that call alone is timed.

The rounds interleave the scenarios (in a rotating order), so a slow phase of
a shared machine hits all of them alike; the median round is reported. The
issue's target: each scenario within 15% of plain Encrypt's requests/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Any

BENCH_DIR = pathlib.Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# run.py reads its output directory at import: keep our Lua scripts and logs apart.
os.environ.setdefault("BENCH_OUT_DIR", str(BENCH_DIR / "out" / "authorization"))

import cpumeter  # noqa: E402
import run  # noqa: E402
import serve  # noqa: E402

DATABASE_URL = os.environ.get("BENCH_AUTHZ_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kmsweb_bench_authz")
PORT = int(os.environ.get("BENCH_AUTHZ_PORT", "8914"))
REGION = "us-east-1"
SCENARIOS = ("plain", "identity-policy", "grant")
TARGET_RATIO = 0.85  # "within 15% of plain Encrypt's requests/s"


# ---------------------------------------------------------------- the server


def kmsweb_config(database_url: str) -> serve.Config:
    """serve.py's kmsweb configuration on this benchmark's database; setup: migrate only."""
    base = serve.CONFIGS["kmsweb"]
    return dataclasses.replace(
        base,
        env={**base.env, "DATABASE_URL": database_url},
        setup=[serve.python_cmd("manage.py", "migrate", "--noinput")],
    )


def fresh_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def django_setup(config: serve.Config) -> None:
    """Django in this process, with the server's settings (same database, same root key)."""
    os.environ.update(config.env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
    os.environ["KMSWEB_DB_CONN_MAX_AGE"] = "0"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


# ---------------------------------------------------------------- the scenarios


@dataclasses.dataclass
class Scenario:
    name: str
    principal_arn: str
    principal_pk: int
    access_key: str
    secret: str
    key_id: str
    key_arn: str


def key_policy_20(account: str, admin_arn: str) -> str:
    """20 statements, each with conditions, in the shapes AWS's documentation shows.

    Most do not hold for the benchmark's callers, so evaluating them is the
    whole cost: statements naming other principals are skipped at the
    principal check; those naming ``*`` or the account are evaluated down to
    their conditions.
    """
    root = f"arn:aws:iam::{account}:root"
    crypto = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*"]
    statements: list[dict[str, Any]] = [
        {
            "Sid": "KeyAdministrators",
            "Effect": "Allow",
            "Principal": {"AWS": admin_arn},
            "Action": [
                "kms:Create*",
                "kms:Describe*",
                "kms:Enable*",
                "kms:List*",
                "kms:Put*",
                "kms:Update*",
                "kms:Revoke*",
                "kms:Disable*",
                "kms:Get*",
                "kms:Delete*",
                "kms:TagResource",
                "kms:UntagResource",
                "kms:ScheduleKeyDeletion",
                "kms:CancelKeyDeletion",
            ],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalAccount": account}},
        }
    ]
    for n in range(10):  # one per application role, each bound to its own context and network
        statements.append(
            {
                "Sid": f"App{n:02d}",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:role/app-{n:02d}"},
                "Action": crypto,
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"kms:EncryptionContext:app": f"app-{n:02d}", "kms:CallerAccount": account},
                    "IpAddress": {"aws:SourceIp": f"10.{n}.0.0/16"},
                },
            }
        )
    statements += [
        {
            "Sid": "ViaS3Only",
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Action": crypto,
            "Resource": "*",
            "Condition": {
                "StringEquals": {"kms:CallerAccount": "999988887777", "kms:ViaService": f"s3.{REGION}.amazonaws.com"}
            },
        },
        {
            "Sid": "CiRoles",
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Action": ["kms:Encrypt", "kms:Decrypt"],
            "Resource": "*",
            "Condition": {
                "StringLike": {"aws:PrincipalArn": f"arn:aws:iam::{account}:role/ci-*"},
                "DateLessThan": {"aws:CurrentTime": "2099-01-01T00:00:00Z"},
            },
        },
        {
            "Sid": "TenantContext",
            "Effect": "Allow",
            "Principal": {"AWS": root},
            "Action": crypto,
            "Resource": "*",
            "Condition": {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": ["tenant", "case"]}},
        },
        {
            "Sid": "DeleteWithMfa",
            "Effect": "Allow",
            "Principal": {"AWS": root},
            "Action": "kms:ScheduleKeyDeletion",
            "Resource": "*",
            "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}},
        },
        {
            "Sid": "SymmetricOnly",
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["kms:Encrypt", "kms:Decrypt"],
            "Resource": "*",
            "Condition": {"StringNotEquals": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}},
        },
        {
            "Sid": "KnownNetworks",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"NotIpAddress": {"aws:SourceIp": ["127.0.0.0/8", "10.0.0.0/8", "::1/128"]}},
        },
        {
            "Sid": "GrantsForAwsResourcesOnly",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "kms:CreateGrant",
            "Resource": "*",
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "false"}, "Null": {"kms:ViaService": "false"}},
        },
        {
            "Sid": "IdentityPoliciesForCrypto",
            "Effect": "Allow",
            "Principal": {"AWS": root},
            "Action": [*crypto, "kms:DescribeKey"],
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:CallerAccount": account}},
        },
        {
            "Sid": "IdentityPoliciesForTheRest",
            "Effect": "Allow",
            "Principal": {"AWS": root},
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalAccount": account}},
        },
    ]
    assert len(statements) == 20, len(statements)
    assert all("Condition" in st for st in statements)
    return json.dumps({"Version": "2012-10-17", "Id": "bench-20-statements", "Statement": statements}, indent=2)


def identity_policy_for(key_arn: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ListAndDescribe",
                    "Effect": "Allow",
                    "Action": ["kms:List*", "kms:Describe*"],
                    "Resource": "*",
                },
                {
                    "Sid": "UseThePaymentsKey",
                    "Effect": "Allow",
                    "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"],
                    "Resource": key_arn,
                    "Condition": {"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}},
                },
            ],
        }
    )


def make_scenarios() -> dict[str, Scenario]:
    """Principals, access keys, keys, policies and the grant, through kmsweb's services."""
    from django.conf import settings

    from keys import services as key_services
    from kmsweb.lib.caller import Caller
    from policies import services

    account, _ = services.account_get_or_create(account_id=settings.KMSWEB_ACCOUNT_ID, name="bench")
    system = Caller.system("bench-authorization", account_id=account.id, region=REGION)

    def principal(name: str, policy: str | None) -> tuple[Any, str, str]:
        who = services.principal_create(caller=system, account=account, name=name, type="user")
        if policy is not None:
            services.identity_policy_put(caller=system, account=account, name="Bench", document=policy, principal=who)
        access_key, secret = services.access_key_create(caller=system, principal=who)
        return who, access_key.access_key_id, secret

    admin, _, _ = principal("bench-admin", services.FULL_ACCESS_POLICY)
    plain_key = key_services.key_create(caller=system, description="bench: default key policy")
    shared_key = key_services.key_create(
        caller=system, description="bench: 20-statement key policy", policy=key_policy_20(account.id, admin.arn)
    )
    plain, plain_id, plain_secret = principal("bench-plain", services.FULL_ACCESS_POLICY)
    scoped, scoped_id, scoped_secret = principal("bench-identity", identity_policy_for(shared_key.arn))
    grantee, grantee_id, grantee_secret = principal("bench-grantee", None)
    services.grant_create(
        caller=system, key=shared_key, grantee_principal=grantee.arn, operations=["Encrypt", "Decrypt"], name="bench"
    )

    def scenario(name: str, who: Any, access_key: str, secret: str, key: Any) -> Scenario:
        return Scenario(name, who.arn, who.pk, access_key, secret, str(key.id), key.arn)

    return {
        "plain": scenario("plain", plain, plain_id, plain_secret, plain_key),
        "identity-policy": scenario("identity-policy", scoped, scoped_id, scoped_secret, shared_key),
        "grant": scenario("grant", grantee, grantee_id, grantee_secret, shared_key),
    }


EXPECTED_REASON = {"plain": "identity-policy", "identity-policy": "identity-policy", "grant": "grant"}


def check_and_time_decisions(scenarios: dict[str, Scenario], calls: int) -> dict[str, dict[str, Any]]:
    """Decide each scenario's Encrypt in-process: the path it takes, and what authorize() alone costs."""
    from keys.models import Key
    from kmsweb.lib.caller import Caller
    from kmsweb.lib.errors import AccessDenied
    from policies.authorization import authorize

    out: dict[str, dict[str, Any]] = {}
    for name, sc in scenarios.items():
        caller = Caller(
            principal_arn=sc.principal_arn,
            account_id=sc.principal_arn.split(":")[4],
            region=REGION,
            origin="api",
            principal_type="user",
            principal_name=sc.principal_arn.rsplit("/", 1)[1],
            principal_pk=sc.principal_pk,
            source_ip="127.0.0.1",
        )
        key = Key.objects.get(id=sc.key_id)
        context = {"EncryptionContext": {}, "kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
        decision = authorize(caller=caller, action="kms:Encrypt", key=key, context=context)
        if decision.reason != EXPECTED_REASON[name]:
            raise run.BenchFailure(f"{name}: decided by {decision.reason}, expected {EXPECTED_REASON[name]}")
        try:  # the grant gives Encrypt and Decrypt only, and the policies give the grantee nothing
            if name == "grant":
                authorize(caller=caller, action="kms:DescribeKey", key=key)
                raise run.BenchFailure("grant: the grantee may DescribeKey; the scenario is not what it claims")
        except AccessDenied:
            pass
        started = time.perf_counter()
        for _ in range(calls):
            authorize(caller=caller, action="kms:Encrypt", key=key, context=context)
        per_call_us = (time.perf_counter() - started) / calls * 1e6
        statement = decision.statement
        out[name] = {
            "reason": decision.reason,
            "statement": None if statement is None else {"source": statement.source, "sid": statement.sid},
            "supporting": None if decision.supporting is None else decision.supporting.sid,
            "authorize_us": round(per_call_us, 1),
        }
    return out


# ---------------------------------------------------------------- measuring


def measure(scenarios: dict[str, Scenario], url: str, args: argparse.Namespace) -> dict[str, list[run.Result]]:
    """``args.rounds`` rounds; in each, every scenario once, in a rotating order."""
    targets = {
        name: run.Target(
            url=url,
            access_key=sc.access_key,
            secret=sc.secret,
            region=REGION,
            key_id=sc.key_id,
            label=f"authz-{name}",
        )
        for name, sc in scenarios.items()
    }
    results: dict[str, list[run.Result]] = {name: [] for name in scenarios}
    order = list(scenarios)
    for round_no in range(args.rounds):
        shift = round_no % len(order)
        for name in order[shift:] + order[:shift]:
            result = run.bench_operation(
                targets[name],
                "Encrypt",
                duration=args.duration,
                warmup=args.warmup,
                threads=args.threads,
                connections=args.connections,
                repeat=1,
                quiet=args.quiet,
                max_others=args.max_others,
                extra_attempts=args.extra_attempts,
            )
            results[name].append(result)
            print(
                f"# round {round_no + 1} {name}: {result.requests_per_s:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms, others {result.runs_others_cpu}",
                file=sys.stderr,
                flush=True,
            )
    return results


def median_run(runs: list[run.Result]) -> run.Result:
    ordered = sorted(runs, key=lambda r: r.requests_per_s)
    return ordered[(len(ordered) - 1) // 2]


def report(
    results: dict[str, list[run.Result]], decisions: dict[str, dict[str, Any]], info: dict[str, Any]
) -> tuple[str, bool]:
    plain = statistics.median(r.requests_per_s for r in results["plain"])
    lines = [
        "| Scenario | Decided by | Requests/s (median) | vs plain | p50 (ms) | p99 (ms) | Runs (req/s) "
        "| authorize() alone (µs) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    ok = True
    for name in SCENARIOS:
        runs = results[name]
        rps = statistics.median(r.requests_per_s for r in runs)
        mid = median_run(runs)
        ratio = rps / plain
        if name != "plain" and ratio < TARGET_RATIO:
            ok = False
        d = decisions[name]
        source = d["statement"]["source"] if d["statement"] else "-"
        if source.startswith("grant:"):
            source = f"grant {source[6:14]}… (Encrypt, Decrypt), after the policies refuse"
        sid = f" `{d['statement']['sid']}`" if d["statement"] and d["statement"]["sid"] else ""
        support = f" + key policy `{d['supporting']}`" if d["supporting"] else ""
        disturbed = " (disturbed)" if any(r.disturbed for r in runs) else ""
        lines.append(
            run.markdown_row(
                name,
                f"{source}{sid}{support}",
                f"{rps:,.0f}",
                "1.00" if name == "plain" else f"{ratio:.2f}",
                f"{mid.p50_ms:.2f}",
                f"{mid.p99_ms:.2f}",
                " / ".join(f"{r.requests_per_s:,.0f}" for r in runs) + disturbed,
                f"{d['authorize_us']:.0f}",
            )
        )
    checks = []
    for name in SCENARIOS[1:]:
        ratio = statistics.median(r.requests_per_s for r in results[name]) / plain
        checks.append(
            f"- Encrypt through {name} within 15% of plain Encrypt: {ratio:.2f}x -> "
            f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'}"
        )
    return "\n".join(lines) + "\n\n" + "\n".join(checks), ok


def machine(config: serve.Config) -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
        cursor.execute("SHOW synchronous_commit")
        sync_commit = cursor.fetchone()[0]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import runpy

    conf = runpy.run_path(str(serve.GUNICORN_CONF))
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "postgresql": pg,
        "synchronous_commit": sync_commit,
        "gunicorn": {k: conf[k] for k in ("workers", "worker_class", "threads", "preload_app")},
        "server": config.display(PORT),
    }


def markdown_section(table: str, info: dict[str, Any], args: argparse.Namespace) -> str:
    when = time.strftime("%Y-%m-%d", time.gmtime())
    gconf = info["gunicorn"]
    return f"""
## Authorization (issue 4)

Measured {when} with `python bench/authorization.py --rounds {args.rounds} --duration {args.duration}`:
kmsweb under gunicorn ({gconf["workers"]} {gconf["worker_class"]} workers, bench/gunicorn.conf.py) on
PostgreSQL {info["postgresql"]} (synchronous_commit={info["synchronous_commit"]}), {info["cpus"]} CPUs
({info["cpu"]}), Python {info["python"]}. Each run is bench/run.py's
`wrk -t{args.threads} -c{args.connections} -d{args.duration}s` replaying one SigV4-signed Encrypt of 4 KiB
(no encryption context) after a {args.warmup} s warm-up; the scenarios take turns within each of the
{args.rounds} rounds, and the table gives the median round. "plain" is the foundation's case (AWS's
default key policy, a caller with a `kms:*` identity policy); "identity-policy" and "grant" use a key
policy of 20 statements, each with conditions (listed in the script). "authorize() alone" is the
in-process cost of the authorization call for the same request: policies are compiled once per process
(cached by text), identity policies are cached per process for `KMSWEB_AUTH_CACHE_SECONDS`, and on the
grant path the caller's grants on the key are read from the database on every call.

{table}
"""


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", "3")), help="1-5")
    parser.add_argument("--duration", type=int, default=int(env("BENCH_DURATION", "10")))
    parser.add_argument("--warmup", type=int, default=int(env("BENCH_WARMUP", "2")))
    parser.add_argument("--threads", "-t", type=int, default=2)
    parser.add_argument("--connections", "-c", type=int, default=16)
    parser.add_argument(
        "--quiet",
        type=float,
        default=float(env("BENCH_QUIET", "0.15")),
        help="before each run, wait (at most 2 min) until the machine is at most this busy (1 = do not wait)",
    )
    parser.add_argument(
        "--max-others",
        type=float,
        default=float(env("BENCH_MAX_OTHERS", "0.05")),
        help="a run during which other processes took more of the machine than this is run again",
    )
    parser.add_argument("--extra-attempts", type=int, default=2)
    parser.add_argument("--authorize-calls", type=int, default=2000)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--json", default=str(run.OUT_DIR / "results.json"))
    parser.add_argument("--append", metavar="FILE", help="append the section to this file (docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 5:
        parser.error("--rounds must be between 1 and 5")

    run.OUT_DIR.mkdir(parents=True, exist_ok=True)
    # CpuMeter counts the benchmark's own PostgreSQL backends by database name.
    run.CpuMeter = functools.partial(cpumeter.CpuMeter, dbname=DATABASE_URL.rsplit("/", 1)[1])
    config = kmsweb_config(DATABASE_URL)
    fresh_database(DATABASE_URL)
    proc = None
    try:
        proc = serve.start(config, args.port, run.OUT_DIR / "kmsweb.log")
        django_setup(config)
        scenarios = make_scenarios()
        decisions = check_and_time_decisions(scenarios, args.authorize_calls)
        for name, d in decisions.items():
            print(f"# {name}: {d}", file=sys.stderr)
        info = machine(config)
        results = measure(scenarios, f"http://127.0.0.1:{args.port}/", args)
    except run.BenchFailure as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            serve.stop(proc)
    table, ok = report(results, decisions, info)
    print(table)
    pathlib.Path(args.json).write_text(
        json.dumps(
            {
                "machine": info,
                "decisions": decisions,
                "results": {name: [dataclasses.asdict(r) for r in runs] for name, runs in results.items()},
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
        + "\n"
    )
    if args.append:
        with open(args.append, "a", encoding="utf-8") as handle:
            handle.write(markdown_section(table, info, args))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
