"""Automatic rotation benchmark (issue 6): ``keys_rotate_due`` on N due keys.

    .venv/bin/python bench/rotation.py [--keys 10000]                  # SQLite (a scratch file)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench_rotation \\
        .venv/bin/python bench/rotation.py [--keys 10000] [--profile out.html]

Seeds N customer managed keys with rotation on and their date passed (bulk
inserts, each with its own wrapped material), then times one run of the
rotation job exactly as beat runs it (``job_run("rotate_keys", ...)``): due
keys claimed 100 at a time with SKIP LOCKED, one commit per batch; per key a
savepoint, a new wrapped material version, the key row moved on and one
RotateKey audit event. Checks afterwards that every key rotated once and that
there is one RotateKey event per key.

``--profile FILE`` wraps the job in pyinstrument (slower; for finding where
the time goes, not for the figure). The target is under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
os.environ.setdefault("DJANGO_SECRET_KEY_FILE", str(ROOT / "var" / "django_secret_key"))
os.environ.setdefault("KMSWEB_ROOT_KEY_FILE", str(ROOT / "var" / "root_key"))

BATCH = 1000


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'DROP DATABASE "{name}"')  # a fresh database per run: same starting point
        conn.execute(f'CREATE DATABASE "{name}"')


def seed(n: int) -> float:
    """N due keys, each with one wrapped material version; returns seconds."""
    from django.db import transaction
    from django.utils import timezone

    from keys.crypto import generate_material
    from keys.models import Key, KeyMaterial
    from keys.services.common import default_key_policy
    from keys.services.material import _aad, new_material_id, root_key_provider
    from policies.services import default_account

    started = time.perf_counter()
    account = default_account()
    provider = root_key_provider()
    policy = default_key_policy(account.id)
    # Rotated last 400 days ago with a 365-day period: 35 days overdue.
    created = timezone.now() - timedelta(days=400)
    for offset in range(0, n, BATCH):
        with transaction.atomic():
            keys = [
                Key(
                    id=uuid.uuid4(),
                    account=account,
                    region="us-east-1",
                    description=f"bench {offset + i}",
                    policy=policy,
                    created_at=created,
                    rotation_enabled=True,
                    rotation_period_days=365,
                    next_rotation_at=created + timedelta(days=365),
                )
                for i in range(min(BATCH, n - offset))
            ]
            Key.objects.bulk_create(keys)
            KeyMaterial.objects.bulk_create(
                [
                    KeyMaterial(
                        key=key,
                        version=1,
                        material_id=new_material_id(),
                        wrapped=provider.wrap(generate_material(), _aad(key.id, 1)),
                        root_key_id=provider.key_id,
                        created_at=created,
                    )
                    for key in keys
                ]
            )
            by_key = dict(KeyMaterial.objects.filter(key__in=keys).values_list("key_id", "pk"))
            for key in keys:
                key.current_material_id = by_key[key.id]
            Key.objects.bulk_update(keys, ["current_material"])
    return time.perf_counter() - started


def rotate(profile: str | None) -> tuple[float, dict[str, int]]:
    from audit.services.jobs import job_run
    from keys.services.jobs import keys_rotate_due

    started = time.perf_counter()
    if profile:
        from pyinstrument import Profiler

        with Profiler() as profiler:
            run = job_run("rotate_keys", keys_rotate_due)
        Path(profile).write_text(profiler.output_html())
    else:
        run = job_run("rotate_keys", keys_rotate_due)
    return time.perf_counter() - started, run.counts


def check(n: int) -> None:
    from audit.models import AuditEvent
    from keys.models import Key, KeyMaterial

    assert KeyMaterial.objects.filter(version=2, rotation_type="AUTOMATIC").count() == n
    assert not KeyMaterial.objects.filter(version__gt=2).exists()
    assert Key.objects.filter(current_material__version=2).count() == n
    assert AuditEvent.objects.filter(event_name="RotateKey", error_code="").count() == n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--profile", help="write a pyinstrument HTML profile of the job to this file")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    scratch = None
    if url.startswith("postgres"):
        ensure_database(url)
        backend = "PostgreSQL"
    else:
        scratch = tempfile.TemporaryDirectory(prefix="kmsweb-bench-rotation-")
        os.environ["DATABASE_URL"] = f"sqlite:///{scratch.name}/bench.sqlite3"
        backend = "SQLite (file)"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    seconds_seed = seed(args.keys)
    seconds, counts = rotate(args.profile)
    check(args.keys)
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"backend: {backend}; keys: {args.keys}; seeded in {seconds_seed:.1f} s")
    print(f"rotate_keys: {seconds:.1f} s, {args.keys / seconds:,.0f} keys/s; counts {counts}")
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
