"""Compliance evaluation benchmark (issue 13), on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench_compliance \\
        .venv/bin/python bench/compliance.py [--append docs/BENCHMARKS.md]

1. Seed (once; reused while the counts match): 10,000 customer managed
   keys (a mix of key policies: the default, a named non-administrator with
   kms:*, Principal "*", another account; rotation on for 70%; 3% disabled,
   2% pending deletion, 2% imported material; half tagged), 1,000
   principals with inline and attached identity policies, 50,000 grants
   (5% to other accounts), one access key per principal, and 1,000,000
   audit events over 120 days (COPY; the audit table's trigger refuses only
   UPDATE and DELETE).
2. ``compliance_evaluate`` twice, each timed whole: the first run writes a
   finding row for every judged (rule, resource) pair, the second is the
   steady state (only changes written). Then the phases alone: loading the
   snapshot, and running the rules on it.

Reports wall time, this process's CPU time, its peak RSS, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
os.environ.setdefault("DJANGO_SECRET_KEY_FILE", str(ROOT / "var" / "django_secret_key"))
os.environ.setdefault("KMSWEB_ROOT_KEY_FILE", str(ROOT / "var" / "root_key"))
os.environ.setdefault("KMSWEB_DB_CONN_MAX_AGE", "0")
os.environ.setdefault("KMSWEB_COMPLIANCE_REQUIRED_TAGS", "owner,env")

ACCOUNT = "111122223333"
FOREIGN = [f"99988877766{i}" for i in range(5)]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OPERATIONS = [("Encrypt", 50), ("Decrypt", 30), ("GenerateDataKey", 12), ("DescribeKey", 5), ("ReEncrypt", 3)]


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def setup() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def doc(*statements: dict[str, object]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def seed(args: argparse.Namespace, rng: random.Random) -> float:
    """Insert the facts; returns seconds."""
    from django.db import connection, transaction

    from audit.canonical import EVENT_COLUMNS
    from keys.models import Key, KeyManager, KeyOrigin, KeyState, Tag
    from policies.models import AccessKey, Account, Grant, IdentityPolicy, PolicyAttachment, Principal

    started = time.perf_counter()
    with transaction.atomic():
        for account in [ACCOUNT, *FOREIGN]:
            Account.objects.get_or_create(id=account)
        principals = Principal.objects.bulk_create(
            [
                Principal(account_id=ACCOUNT, name=f"app-{i:04d}", type="role" if i % 10 == 9 else "user")
                for i in range(args.principals)
            ]
        )
        admins = IdentityPolicy.objects.create(
            account_id=ACCOUNT, name="KeyAdmins", document=doc({"Effect": "Allow", "Action": "kms:*", "Resource": "*"})
        )
        crypto = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncrypt*", "kms:DescribeKey"]
        inline, attach = [], []
        for i, p in enumerate(principals):
            kind = i % 20
            if kind < 14:  # 70%: crypto on every key
                inline.append(
                    IdentityPolicy(
                        account_id=ACCOUNT,
                        principal=p,
                        name="crypto",
                        document=doc({"Effect": "Allow", "Action": crypto, "Resource": "*"}),
                    )
                )
            elif kind < 18:  # 20%: crypto on this account's keys in one region (a wildcard ARN)
                arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/*"
                inline.append(
                    IdentityPolicy(
                        account_id=ACCOUNT,
                        principal=p,
                        name="crypto-region",
                        document=doc({"Effect": "Allow", "Action": crypto, "Resource": arn}),
                    )
                )
            elif kind == 18:  # 5%: administrators
                attach.append(PolicyAttachment(principal=p, policy=admins))
            # 5%: no policy at all
        IdentityPolicy.objects.bulk_create(inline, batch_size=1000)
        PolicyAttachment.objects.bulk_create(attach)

        root = doc(
            {
                "Sid": "Root",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        )
        users = [p for p in principals if p.type == "user"]
        keys = []
        for _ in range(args.keys):
            roll = rng.random()
            if roll < 0.05:
                who = f"arn:aws:iam::{ACCOUNT}:user/{rng.choice(users).name}"
                policy = doc(
                    json.loads(root)["Statement"][0],
                    {"Sid": "App", "Effect": "Allow", "Principal": {"AWS": who}, "Action": "kms:*", "Resource": "*"},
                )
            elif roll < 0.08:
                policy = doc(
                    json.loads(root)["Statement"][0],
                    {"Sid": "Open", "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"},
                )
            elif roll < 0.10:
                other = rng.choice(FOREIGN)
                policy = doc(
                    json.loads(root)["Statement"][0],
                    {
                        "Sid": "Partner",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{other}:root"},
                        "Action": ["kms:Encrypt", "kms:Decrypt"],
                        "Resource": "*",
                    },
                )
            else:
                policy = root
            state = rng.choices([KeyState.ENABLED, KeyState.DISABLED, KeyState.PENDING_DELETION], [95, 3, 2])[0]
            external = rng.random() < 0.02
            created = NOW - timedelta(days=rng.randrange(1, 1200))
            rotation = not external and rng.random() < 0.7
            keys.append(
                Key(
                    id=uuid.UUID(int=rng.getrandbits(128)),
                    account_id=ACCOUNT,
                    region="us-east-1",
                    manager=KeyManager.CUSTOMER,
                    origin=KeyOrigin.EXTERNAL if external else KeyOrigin.AWS_KMS,
                    state=state,
                    policy=policy,
                    created_at=created,
                    rotation_enabled=rotation,
                    rotation_period_days=rng.choice([365, 365, 730, 1000]) if rotation else None,
                    last_rotated_at=NOW - timedelta(days=rng.randrange(1, 400)) if rotation else None,
                    deletion_date=NOW + timedelta(days=10) if state == KeyState.PENDING_DELETION else None,
                    expiration_model="KEY_MATERIAL_EXPIRES" if external else "",
                    valid_to=NOW + timedelta(days=rng.randrange(1, 400)) if external else None,
                )
            )
        Key.objects.bulk_create(keys, batch_size=2000)
        Tag.objects.bulk_create(
            [Tag(key=k, tag_key=t, tag_value="x") for k in keys if rng.random() < 0.5 for t in ("owner", "env")],
            batch_size=5000,
        )
        grants = []
        for _ in range(args.grants):
            key = rng.choice(keys)
            grantee = (
                f"arn:aws:iam::{rng.choice(FOREIGN)}:role/partner"
                if rng.random() < 0.05
                else (lambda p: f"arn:aws:iam::{ACCOUNT}:{p.type}/{p.name}")(rng.choice(principals))
            )
            grants.append(
                Grant(
                    grant_id=f"{rng.getrandbits(256):064x}",
                    key=key,
                    grantee_principal=grantee,
                    operations=rng.choice([["Encrypt", "Decrypt"], ["Decrypt"], ["GenerateDataKey", "Decrypt"]]),
                    issuing_account=ACCOUNT,
                    created_by=f"arn:aws:iam::{ACCOUNT}:user/app-0000",
                    created_at=NOW - timedelta(days=rng.randrange(1, 300)),
                )
            )
        Grant.objects.bulk_create(grants, batch_size=5000)
        AccessKey.objects.bulk_create(
            [
                AccessKey(access_key_id=f"AKIA{i:016d}", principal=p, secret_ciphertext=b"\0")
                for i, p in enumerate(principals)
            ]
        )
        with connection.cursor() as cur:
            cur.execute(
                "UPDATE policies_accesskey SET created_at = %s - (random() * interval '200 days'), "
                "last_used_at = %s - (random() * interval '150 days')",
                [NOW, NOW],
            )

    # The audit trail: COPY, outside the transaction above.
    names = [name for name, weight in OPERATIONS for _ in range(weight)]
    arns = [f"arn:aws:iam::{ACCOUNT}:{p.type}/{p.name}" for p in principals]
    key_ids = [str(k.id) for k in keys]
    # Each principal uses a few keys (as applications do), not all of them.
    habits = {arn: rng.sample(key_ids, 12) for arn in arns}
    span = timedelta(days=120)
    step = span / args.events
    start = NOW - span
    with (
        connection.cursor() as cur,
        cur.cursor.copy(f"COPY audit_auditevent ({', '.join(EVENT_COLUMNS[1:])}) FROM STDIN") as copy,
    ):
        for i in range(args.events):
            principal = rng.choice(arns)
            key = rng.choice(habits[principal])
            name = rng.choice(names)
            error = "AccessDeniedException" if rng.random() < 0.03 else ""
            copy.write_row(
                (
                    str(uuid.uuid4()),
                    start + step * i,
                    "1.08",
                    "kms.amazonaws.com",
                    name,
                    "AwsApiCall",
                    "us-east-1",
                    "10.0.0.1",
                    "aws-sdk-java/2.25",
                    json.dumps({"type": "IAMUser", "arn": principal, "accountId": ACCOUNT}),
                    json.dumps({"keyId": key}),
                    None,
                    None,
                    error,
                    "",
                    str(uuid.uuid4()),
                    name == "DescribeKey",
                    json.dumps(
                        [
                            {
                                "accountId": ACCOUNT,
                                "type": "AWS::KMS::Key",
                                "ARN": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key}",
                            }
                        ]
                    ),
                    True,
                    "Management",
                    ACCOUNT,
                    "api",
                    key,
                    principal,
                )
            )
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    return time.perf_counter() - started


def seeded(args: argparse.Namespace) -> bool:
    from audit.models import AuditEvent
    from keys.models import Key
    from policies.models import Grant, Principal

    return (
        Key.objects.count() == args.keys
        and Principal.objects.count() == args.principals
        and Grant.objects.count() == args.grants
        and AuditEvent.objects.filter(event_source="kms.amazonaws.com").count() >= args.events
    )


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: object) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn()  # type: ignore[operator]
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def row(label: str, wall: float, cpu: float, counts: dict[str, int]) -> str:
    judged, failing, changes = counts["evaluated"], counts["nonCompliant"], counts["changes"]
    return f"| {label} | {wall:.1f} | {cpu:.1f} | {judged:,} | {failing:,} | {changes:,} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--principals", type=int, default=1_000)
    parser.add_argument("--grants", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--append", help="append the results section to this Markdown file")
    parser.add_argument("--seed-only", action="store_true", help="seed (if needed) and stop: measure later")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("DATABASE_URL must point at PostgreSQL (…/kmsweb_bench_compliance)")
    ensure_database(url)
    setup()
    from django.core.management import call_command

    from compliance.models import Finding
    from compliance.rules import RULES
    from compliance.services import compliance_evaluate
    from compliance.snapshot import snapshot_load
    from kmsweb.lib.caller import Caller

    seed_s = None
    if not seeded(args):
        call_command("flush", interactive=False, verbosity=0)
        print("seeding…", flush=True)
        seed_s = seed(args, random.Random(13))
        print(f"seeded in {seed_s:.0f} s", flush=True)
    if args.seed_only:
        return
    Finding.objects.all().delete()
    load_before = os.getloadavg()
    caller = Caller.system("evaluate_compliance")
    first, first_wall, first_cpu = timed(lambda: compliance_evaluate(caller=caller, now=NOW))
    print(f"first run {first_wall:.1f} s wall, {first_cpu:.1f} s CPU: {first}", flush=True)
    second, second_wall, second_cpu = timed(lambda: compliance_evaluate(caller=caller, now=NOW + timedelta(hours=1)))
    print(f"second run {second_wall:.1f} s wall, {second_cpu:.1f} s CPU: {second}", flush=True)
    snap, load_wall, load_cpu = timed(lambda: snapshot_load(now=NOW))
    _, rules_wall, rules_cpu = timed(lambda: [list(r.evaluate(snap)) for r in RULES.values()])  # type: ignore[arg-type]
    load_after = os.getloadavg()
    rows = Finding.objects.count()
    facts = (
        f"{len(snap.keys):,} keys, {len(snap.principals):,} principals, {len(snap.grants):,} live grants, "  # type: ignore[attr-defined]
        f"{len(snap.access_keys):,} access keys, {len(snap.usage):,} (key, principal, operation) usage rows"  # type: ignore[attr-defined]
    )
    report = f"""
## Compliance evaluation (issue 13)

Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL on
loopback, one process. Load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (the machine
is shared with other sessions). Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.

### Command

```sh
DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench_compliance \\
  .venv/bin/python bench/compliance.py --append docs/BENCHMARKS.md
```

Data: {args.keys:,} customer managed keys, {args.principals:,} principals, {args.grants:,} grants,
{args.events:,} audit events over 120 days (seeded once{f" in {seed_s:.0f} s" if seed_s else ""}; see the
script's docstring for the mix). The snapshot held {facts}.
Required tags: owner, env. {len(RULES)} rules.

### Results

| Run | Wall (s) | CPU of the process (s) | Judged | Non-compliant | Changes written |
| --- | ---: | ---: | ---: | ---: | ---: |
{row("First run (every finding row inserted)", first_wall, first_cpu, first)}
{row("Second run (steady state)", second_wall, second_cpu, second)}

Phases alone: loading the snapshot {load_wall:.1f} s wall ({load_cpu:.1f} s CPU in Python; the rest is
PostgreSQL, mostly the grouped scan of the audit events); the {len(RULES)} rules on it {rules_wall:.1f} s
({rules_cpu:.1f} s CPU). Finding rows: {rows:,}. Peak RSS of the process: {peak_rss_mib():.0f} MiB.

Target: under 60 s on 2 cores → {"PASS" if max(first_wall, second_wall) < 60 else "FAIL"}.
"""
    print(report)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as fh:
            fh.write(report)


if __name__ == "__main__":
    main()
