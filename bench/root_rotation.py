"""Root key rotation benchmark (issue 7), on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench_rootkey \\
        .venv/bin/python bench/root_rotation.py [--materials 20000] [--batch 200]

Seeds N key material versions (keys of one account, wrapped by the current
root key), then runs ``root_key_rotate(new_key=True)`` on a copy of the root
key file while a second thread keeps decrypting with one key's material
through the service layer. Prints rows re-wrapped per second, the longest
batch transaction, and the decrypt latency (median, p99, max) during the
re-wrap — what "no downtime" costs requests.

The database is created if missing and cleared of keys before seeding.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
os.environ.setdefault("DJANGO_SECRET_KEY_FILE", str(ROOT / "var" / "django_secret_key"))
os.environ.setdefault("KMSWEB_DB_CONN_MAX_AGE", "0")


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--materials", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("set DATABASE_URL=postgres://… (a scratch database)")
    ensure_database(url)
    # Rotate a copy: the benchmark must never touch the real root key file.
    scratch = Path(tempfile.mkdtemp(prefix="kmsweb-rootkey-"))
    source = Path(os.environ.get("KMSWEB_ROOT_KEY_FILE", ROOT / "var" / "root_key"))
    shutil.copy(source, scratch / "root_key")
    os.environ["KMSWEB_ROOT_KEY_FILE"] = str(scratch / "root_key")
    os.environ.pop("KMSWEB_ROOT_KEY", None)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    from keys import services as svc
    from keys.models import Key, KeyMaterial
    from keys.services import root_rotation
    from keys.services.material import material_create
    from kmsweb.lib.caller import Caller
    from policies.services import default_account

    with connection.cursor() as cursor:
        cursor.execute("UPDATE keys_key SET current_material_id = NULL")
    KeyMaterial.objects.all().delete()
    Key.objects.all().delete()
    account = default_account()
    caller = Caller.system("bench", account_id=account.id, region="us-east-1")
    now = timezone.now()
    started = time.perf_counter()
    per_key = 4
    for first in range(0, args.materials, 1000):
        with transaction.atomic():
            for _ in range(min(1000, args.materials - first) // per_key):
                key = Key.objects.create(account=account, region="us-east-1", created_at=now, policy="")
                for version in range(1, per_key + 1):
                    material = material_create(key=key, version=version, now=now)
                Key.objects.filter(pk=key.pk).update(current_material=material)
    seeded = KeyMaterial.objects.count()
    print(f"seeded {seeded} material versions in {time.perf_counter() - started:.1f} s")

    probe = Key.objects.select_related("current_material").first()
    assert probe is not None
    blob = svc.key_encrypt(caller=caller, key=probe, plaintext=b"probe").ciphertext
    latencies: list[float] = []
    stop = threading.Event()

    def decrypting() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            svc.key_decrypt(caller=caller, ciphertext=blob)
            latencies.append(time.perf_counter() - t0)
        connection.close()

    baseline: list[float] = []
    until = time.perf_counter() + 5
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        svc.key_decrypt(caller=caller, ciphertext=blob)
        baseline.append(time.perf_counter() - t0)
    base = sorted(baseline)

    batches: list[float] = []
    original = transaction.atomic

    class TimedAtomic:
        """The re-wrap's batch transactions, timed (only root_rotation's, not Django's own)."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            self.inner = original(*args, **kwargs)  # type: ignore[call-overload]

        def __enter__(self) -> None:
            self.t0 = time.perf_counter()
            self.inner.__enter__()

        def __exit__(self, *exc: object) -> None:
            self.inner.__exit__(*exc)
            batches.append(time.perf_counter() - self.t0)

    root_rotation.transaction = types.SimpleNamespace(atomic=TimedAtomic)  # type: ignore[assignment]
    reader = threading.Thread(target=decrypting)
    reader.start()
    t0 = time.perf_counter()
    result = root_rotation.root_key_rotate(caller=Caller.system("bench"), new_key=True, batch=args.batch)
    elapsed = time.perf_counter() - t0
    stop.set()
    reader.join()
    root_rotation.transaction = transaction  # type: ignore[assignment]
    shutil.rmtree(scratch)
    lat = sorted(latencies)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"load average after: {os.getloadavg()}")
    print(
        f"re-wrapped {result['rewrapped']} versions in {elapsed:.2f} s: {result['rewrapped'] / elapsed:,.0f} versions/s"
    )
    print(f"batches of {args.batch}: {len(batches)}, longest transaction {max(batches) * 1000:.1f} ms")
    print(
        f"decrypt alone (5 s before): {len(base)} calls, median {statistics.median(base) * 1000:.2f} ms, "
        f"p99 {base[int(len(base) * 0.99)] * 1000:.2f} ms, max {base[-1] * 1000:.2f} ms"
    )
    print(
        f"decrypt during the re-wrap: {len(lat)} calls, median {statistics.median(lat) * 1000:.2f} ms, "
        f"p99 {lat[int(len(lat) * 0.99)] * 1000:.2f} ms, max {lat[-1] * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
