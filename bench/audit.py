"""Audit trail benchmark (issue 5), on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench_audit \\
        .venv/bin/python bench/audit.py [--events 1000000] [--append docs/BENCHMARKS.md]

1. Seed N events with COPY (a realistic mix: operations, principals, keys,
   source IPs, 5% denials, 1% errors, over 30 days), then seal them.
2. The Audit page through the whole Django stack (test Client, signed in as
   an auditor with password + TOTP): median server time of the first page
   and of filtered pages (21 requests each, the first discarded).
3. A JSON Lines export of every event, in a child process: events/s and the
   process's peak RSS (VmHWM), which includes Django itself.
4. Sealing 100,000 new events: one ``audit_seal``.

``--phase recording-ab`` (on a scratch database) compares ``key_encrypt``
calls/s with and without this issue's indexes and append-only trigger.

The database is created if missing and reseeded only when it holds fewer
events than asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
os.environ.setdefault("DJANGO_SECRET_KEY_FILE", str(ROOT / "var" / "django_secret_key"))
os.environ.setdefault("KMSWEB_ROOT_KEY_FILE", str(ROOT / "var" / "root_key"))
os.environ.setdefault("KMSWEB_DB_CONN_MAX_AGE", "0")

from audit.canonical import EVENT_COLUMNS  # noqa: E402  (needs the repo on sys.path)

if TYPE_CHECKING:
    from kmsweb.lib.caller import Caller

# The columns the seeder COPYs: every stored column but the primary key.
COLUMNS = EVENT_COLUMNS[1:]
OPERATIONS = [("Encrypt", 60), ("Decrypt", 25), ("GenerateDataKey", 10), ("DescribeKey", 3), ("ReEncrypt", 2)]


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def setup(*, migrate: bool = True) -> None:
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def seed(n: int, *, account: str, start: datetime, span: timedelta, rng: random.Random) -> float:
    """COPY ``n`` events; returns seconds."""
    from django.db import connection

    names = [name for name, weight in OPERATIONS for _ in range(weight)]
    principals = [f"arn:aws:iam::{account}:user/app-{i:02d}" for i in range(50)]
    keys = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(200)]
    ips = [f"10.{i // 250}.{i % 250}.{rng.randrange(1, 250)}" for i in range(100)]
    step = span / n
    started = time.perf_counter()
    with connection.cursor() as cur:
        raw = cur.cursor
        with raw.copy(f"COPY audit_auditevent ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for i in range(n):
                name = rng.choice(names)
                principal = rng.choice(principals)
                key = rng.choice(keys)
                roll = rng.random()
                error = "AccessDeniedException" if roll < 0.05 else ("KMSInvalidStateException" if roll < 0.06 else "")
                arn = f"arn:aws:kms:us-east-1:{account}:key/{key}"
                copy.write_row(
                    (
                        str(uuid.uuid4()),
                        start + step * i,
                        "1.08",
                        "kms.amazonaws.com",
                        name,
                        "AwsApiCall",
                        "us-east-1",
                        rng.choice(ips),
                        "aws-sdk-java/2.25 Linux/6.1",
                        json.dumps(
                            {
                                "type": "IAMUser",
                                "principalId": principal.rsplit("/", 1)[1],
                                "arn": principal,
                                "accountId": account,
                                "accessKeyId": f"AKIA{i % 50:016d}",
                            }
                        ),
                        json.dumps(
                            {
                                "keyId": key,
                                "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
                                "encryptionContext": {"order": f"o-{i}"},
                            }
                        ),
                        None,
                        json.dumps({"keyMaterialId": f"{rng.getrandbits(256):064x}"}) if not error else None,
                        error,
                        "User is not authorized to perform: kms:" + name if error == "AccessDeniedException" else "",
                        str(uuid.uuid4()),
                        name in ("Encrypt", "Decrypt", "GenerateDataKey", "DescribeKey", "ReEncrypt"),
                        json.dumps([{"accountId": account, "type": "AWS::KMS::Key", "ARN": arn}]),
                        True,
                        "Management",
                        account,
                        "api",
                        key,
                        principal,
                    )
                )
        cur.execute("ANALYZE audit_auditevent")
    return time.perf_counter() - started


def median_ms(client: object, url: str, headers: dict[str, str], runs: int = 21) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url, **headers)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(times[1:])


def page_timings(account: str) -> dict[str, float]:
    from django.conf import settings
    from django.test import Client

    from audit.models import AuditEvent
    from policies.models import Principal
    from tests.dashboard_fixtures import create_dashboard_user, dashboard_login

    settings.ALLOWED_HOSTS = ["*"]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    name = f"bench-auditor-{uuid.uuid4().hex[:6]}"
    who = create_dashboard_user(name, "auditor")
    assert Principal.objects.filter(user=who.user).exists()
    client = Client()
    dashboard_login(client, who, next="/audit/")
    hx = {"HTTP_HX_REQUEST": "true"}
    sample = AuditEvent.objects.filter(recipient_account_id=account).order_by("-id")[5000]
    newest = AuditEvent.objects.order_by("-event_time").values_list("event_time", flat=True).first()
    day_ago = (newest - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    urls = {
        "first page (full HTML)": ("/audit/", {}),
        "first page (HTMX partial)": ("/audit/", hx),
        "event=Decrypt & outcome=denied": ("/audit/?event=Decrypt&outcome=denied", hx),
        "principal + last 24 h": (f"/audit/?principal={sample.principal_arn}&since={day_ago}", hx),
        "key + outcome=error": (f"/audit/?key={sample.key_id}&outcome=error", hx),
        "source IP": (f"/audit/?ip={sample.source_ip}", hx),
    }
    # The key filter checks that the key exists in the account: make the sampled one real.
    _ensure_key(sample.key_id, account)
    return {label: median_ms(client, url, headers) for label, (url, headers) in urls.items()}


def _ensure_key(key_id: str, account: str) -> None:
    from keys.models import Key
    from policies.models import Account

    Account.objects.get_or_create(id=account)
    Key.objects.get_or_create(
        id=uuid.UUID(key_id), defaults={"account_id": account, "region": "us-east-1", "created_at": datetime.now(UTC)}
    )


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: ru_maxrss survives exec,
    so a child would report the (larger) parent it was forked from."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def export_child() -> None:
    """Run in a child process: export every event to JSON Lines, print figures.

    No migrate here: its project-state rendering would inflate the peak RSS
    this process reports."""
    setup(migrate=False)
    baseline = peak_rss_mib()
    from audit.filters import AuditFilter
    from audit.models import AuditEvent
    from audit.services.exporting import audit_export_write
    from kmsweb.lib.caller import Caller

    count = AuditEvent.objects.count()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        bundle = audit_export_write(
            caller=Caller.system("bench-export"), fmt="jsonl", flt=AuditFilter(), out_dir=Path(tmp) / "bundle"
        )
        seconds = time.perf_counter() - started
        size = (Path(tmp) / "bundle" / "events.jsonl").stat().st_size
    peak = peak_rss_mib()
    print(
        json.dumps(
            {
                "events": bundle.stats.count,
                "in_db": count,
                "seconds": seconds,
                "events_per_s": bundle.stats.count / seconds,
                "peak_rss_mib": peak,
                "rss_after_django_setup_mib": baseline,
                "bytes": size,
            }
        )
    )


def api_caller(name: str) -> Caller:
    """An API caller for a user ``name`` of account 111122223333 with a ``kms:*`` identity policy (made once)."""
    from kmsweb.lib.caller import Caller
    from policies.models import Account, Principal
    from policies.services import FULL_ACCESS_POLICY, identity_policy_put

    account, _ = Account.objects.get_or_create(id="111122223333")
    principal, created = Principal.objects.get_or_create(account=account, name=name, type="user")
    if created:
        identity_policy_put(
            caller=Caller.system("bench", account_id=account.id),
            account=account,
            name="FullKmsAccess",
            document=FULL_ACCESS_POLICY,
            principal=principal,
        )
    return Caller(
        principal_arn=principal.arn,
        account_id=account.id,
        region="us-east-1",
        origin="api",
        principal_name=principal.name,
        principal_pk=principal.pk,
        source_ip="127.0.0.1",
        user_agent="bench",
    )


def recording_ab(calls: int = 3000) -> None:
    """``--phase recording-ab``: key_encrypt calls/s with this issue's audit indexes and
    trigger, without them (dropped), and with them again (re-migrated). Use a scratch database."""
    setup()
    from django.core.management import call_command
    from django.db import connection

    from keys import services

    caller = api_caller("bench-ab")
    key = services.key_create(caller=caller, description="bench-ab")

    def rate() -> float:
        rates = []
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(calls):
                services.key_encrypt(caller=caller, key=key, plaintext=b"x" * 64)
            rates.append(calls / (time.perf_counter() - started))
        return statistics.median(rates)

    with_audit = rate()
    with connection.cursor() as cur:
        cur.execute(
            "DROP INDEX IF EXISTS audit_time_id_idx, audit_name_time_idx, audit_principal_time_idx, "
            "audit_ip_time_idx, audit_error_time_idx; "
            "DROP TRIGGER IF EXISTS audit_event_append_only ON audit_auditevent"
        )
    without = rate()
    call_command("migrate", "audit", "0002", verbosity=0)
    call_command("migrate", verbosity=0)
    again = rate()
    print(f"key_encrypt calls/s: with {with_audit:.0f}, without {without:.0f}, with again {again:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--new-events", type=int, default=100_000)
    parser.add_argument("--append", help="append the results as Markdown to this file (e.g. docs/BENCHMARKS.md)")
    parser.add_argument("--phase", choices=["all", "export-child", "recording-ab"], default="all")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("bench/audit.py needs DATABASE_URL=postgres://... (a database it may fill)")
    ensure_database(url)
    if args.phase == "export-child":
        export_child()
        return
    if args.phase == "recording-ab":
        recording_ab()
        return
    setup()
    from django.conf import settings
    from django.db import connection

    from audit.models import AuditEvent
    from audit.services.sealing import audit_seal, audit_seal_all
    from kmsweb.lib.caller import Caller

    account = settings.KMSWEB_ACCOUNT_ID
    rng = random.Random(5)
    results: dict[str, object] = {}
    have = AuditEvent.objects.count()
    if have < args.events:
        start = datetime.now(UTC) - timedelta(days=30)
        seconds = seed(args.events - have, account=account, start=start, span=timedelta(days=29), rng=rng)
        results["seed"] = f"{args.events - have} events in {seconds:.1f} s (COPY)"
    started = time.perf_counter()
    backlog = audit_seal_all(caller=Caller.system("bench-seal"), budget_seconds=3600)
    results["backlog_seal"] = (sum(d.event_count for d in backlog), time.perf_counter() - started)
    total = AuditEvent.objects.count()
    print(f"{total} events in the database; backlog sealed: {results['backlog_seal']}", flush=True)

    results["pages"] = page_timings(account)
    for label, ms in results["pages"].items():  # type: ignore[union-attr]
        print(f"  {label}: {ms:.1f} ms", flush=True)

    child = subprocess.run(
        [sys.executable, __file__, "--phase", "export-child"], capture_output=True, text=True, check=True
    )
    results["export"] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"  export: {results['export']}", flush=True)

    # Sealing 100,000 new events (the newest, so one digest takes them all).
    seed(args.new_events, account=account, start=datetime.now(UTC), span=timedelta(minutes=1), rng=rng)
    started = time.perf_counter()
    digest = audit_seal(caller=Caller.system("bench-seal"))
    seal_seconds = time.perf_counter() - started
    assert digest is not None
    results["seal"] = (digest.event_count, seal_seconds)
    print(f"  seal: {digest.event_count} events in {seal_seconds:.2f} s", flush=True)
    with connection.cursor() as cur:
        cur.execute("SHOW server_version")
        pg = cur.fetchone()[0]
    if args.append:
        write_markdown(Path(args.append), results, total=total, pg=pg)


def write_markdown(path: Path, results: dict[str, object], *, total: int, pg: str) -> None:
    pages: dict[str, float] = results["pages"]  # type: ignore[assignment]
    export: dict[str, float] = results["export"]  # type: ignore[assignment]
    sealed, seal_s = results["seal"]  # type: ignore[misc]
    backlog_n, backlog_s = results["backlog_seal"]  # type: ignore[misc]
    lines = [
        "",
        "## Audit (issue 5)",
        "",
        f"`bench/audit.py`, {datetime.now(UTC):%Y-%m-%d}: {total:,} events in PostgreSQL {pg}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python {platform.python_version()}. "
        "Server time = the Django test Client through every middleware, signed in as an auditor; "
        "median of 20 requests.",
        "",
        "| measurement | result | target |",
        "|---|---|---|",
    ]
    for label, ms in pages.items():
        lines.append(f"| Audit page, {label} | {ms:.1f} ms median | < 200 ms |")
    lines += [
        f"| JSON Lines export of {export['events']:,.0f} events | {export['events_per_s']:,.0f} events/s "
        f"({export['seconds']:.1f} s, {export['bytes'] / 2**20:,.0f} MiB) | ≥ 50,000 events/s |",
        f"| … its peak memory (whole process RSS; {export['rss_after_django_setup_mib']:.0f} MiB of it is Django "
        f"before the export starts) | {export['peak_rss_mib']:.0f} MiB | < 200 MiB |",
        f"| Sealing {sealed:,} new events (one digest) | {seal_s:.2f} s | < 10 s |",
        f"| (Sealing the seeded backlog: {backlog_n:,} events) | {backlog_s:.1f} s | — |",
        "",
    ]
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
