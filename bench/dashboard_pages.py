"""Server time of the dashboard's heavy pages on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench_pages \
        python bench/dashboard_pages.py [--runs 30]

Seeds (once) 10,000 customer managed keys (half with an alias, a third
tagged) and 100,000 audit events over 30 days behind one key, then times each
page through Django's test client in this process: the view, its queries,
the template — what a browser waits for minus the network. Prints median and
p95 in milliseconds and the number of SQL queries per page.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
os.environ.setdefault("DJANGO_SECRET_KEY_FILE", str(REPO / "var" / "django_secret_key"))
os.environ.setdefault("KMSWEB_ROOT_KEY_FILE", str(REPO / "var" / "root_key"))

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_otp import DEVICE_ID_SESSION_KEY  # noqa: E402

from audit.models import AuditEvent  # noqa: E402
from keys.models import Alias, Key, KeyManager, Tag  # noqa: E402
from keys.services.material import material_create  # noqa: E402
from kmsweb.lib.caller import Caller  # noqa: E402
from policies.models import TotpDevice  # noqa: E402
from policies.services import default_account, totp_device_enrol, user_create  # noqa: E402

N_KEYS = 10_000
N_EVENTS = 100_000
OPS = ["Encrypt", "Decrypt", "GenerateDataKey", "DescribeKey", "ReEncrypt"]


def seed() -> Key:
    account = default_account()
    region = settings.KMSWEB_DEFAULT_REGION
    hot = Key.objects.filter(description="bench hot key").first()
    if hot is not None and Key.objects.count() >= N_KEYS:
        return hot
    print(f"seeding {N_KEYS} keys and {N_EVENTS} audit events…", flush=True)
    now = timezone.now()
    rng = random.Random(7)
    keys = [
        Key(
            id=uuid.uuid4(),
            account=account,
            region=region,
            description=f"bench key {i} for service-{i % 97}",
            manager=KeyManager.CUSTOMER,
            state=rng.choice(["Enabled"] * 8 + ["Disabled", "PendingDeletion"]),
            created_at=now - timedelta(minutes=i),
            rotation_enabled=i % 3 == 0,
        )
        for i in range(N_KEYS)
    ]
    Key.objects.bulk_create(keys, batch_size=2000)
    Alias.objects.bulk_create(
        [
            Alias(account=account, region=region, name=f"alias/service-{i}", key=k, created_at=now, updated_at=now)
            for i, k in enumerate(keys)
            if i % 2 == 0
        ],
        batch_size=2000,
    )
    Tag.objects.bulk_create(
        [Tag(key=k, tag_key="team", tag_value=f"team-{i % 5}") for i, k in enumerate(keys) if i % 3 == 0],
        batch_size=2000,
    )
    hot = keys[0]
    Key.objects.filter(pk=hot.pk).update(description="bench hot key", state="Enabled")
    hot.refresh_from_db()
    hot.current_material = material_create(key=hot, version=1, now=now)
    hot.save(update_fields=["current_material"])
    identity = {"type": "IAMUser", "arn": f"arn:aws:iam::{account.id}:user/app"}
    batch = []
    for _ in range(N_EVENTS):
        batch.append(
            AuditEvent(
                event_time=now - timedelta(seconds=rng.randrange(30 * 86400)),
                event_name=rng.choice(OPS),
                aws_region=region,
                source_ip="10.0.0.1",
                user_agent="bench",
                user_identity=identity,
                request_parameters={"keyId": str(hot.id)},
                error_code=rng.choice([""] * 48 + ["AccessDeniedException", "InvalidCiphertextException"]),
                recipient_account_id=account.id,
                origin="api",
                key_id=str(hot.id),
                principal_arn=identity["arn"],
            )
        )
        if len(batch) == 5000:
            AuditEvent.objects.bulk_create(batch)
            batch = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ANALYZE")
    return hot


def client_for_admin() -> Client:
    user = user_create_once()
    device = TotpDevice.objects.get(user=user, confirmed=True)
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


def user_create_once():  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username="bench-admin").first()
    if user is None:
        caller = Caller.system("bench")
        user = user_create(
            caller=caller, username="bench-admin", password="bench-admin-password-42", roles=["key-admin"]
        )
        totp_device_enrol(caller=caller, user=user)
    return user


def measure(client: Client, url: str, runs: int) -> tuple[float, float, int]:
    for _ in range(3):
        assert client.get(url).status_code == 200, url
    times = []
    queries = 0
    for _ in range(runs):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(ctx.captured_queries)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    hot = seed()
    client = client_for_admin()
    pages = [
        ("Key table, first page", "/keys/"),
        ("Key table, filtered (search + state + tag)", "/keys/?q=service-1&state=Enabled&tag=team%3Dteam-1"),
        ("Key table, sorted by alias, page 40", "/keys/?sort=alias&page=40"),
        ("Key table, HTMX partial, sorted by state", "/keys/?sort=-state&page=3"),
        ("Key page (100k events behind its chart)", f"/keys/{hot.id}/"),
        ("Key chart data, 30 days (100k events)", f"/usage/data/?key={hot.id}&range=month"),
        ("Key chart data, 24 hours", f"/usage/data/?key={hot.id}&range=day"),
        ("Overview", "/"),
    ]
    print(f"database: {connection.vendor}, keys: {Key.objects.count()}, events: {AuditEvent.objects.count()}")
    print("| page | median ms | p95 ms | SQL queries |")
    print("|---|---:|---:|---:|")
    for title, url in pages:
        median, p95, queries = measure(client, url, args.runs)
        print(f"| {title} (`{url.split('?')[0]}`) | {median:.1f} | {p95:.1f} | {queries} |", flush=True)


if __name__ == "__main__":
    main()
