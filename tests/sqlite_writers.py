"""One writer of the embedded default's SQLite file, run as its own process by
``tests/test_sqlite_concurrency.py``: ``python -m tests.sqlite_writers ROLE N``.

``api`` does what API calls do (CreateKey, Encrypt: reads, then writes, in one
transaction, and an audit row each); ``jobs`` runs the every-minute jobs
through ``job_run`` as the Celery worker does. Each prints one line per
failure and ``ok N`` at the end, and exits 1 if anything failed.
"""

from __future__ import annotations

import os
import sys


def main(role: str, rounds: int) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
    import django

    django.setup()
    from django.conf import settings

    from audit.services.jobs import job_run
    from keys import services as key_services
    from kmsweb.jobs import job_named
    from kmsweb.lib.caller import Caller
    from policies.models import Principal

    failures = 0
    done = 0
    admin = Principal.objects.get(account_id=settings.KMSWEB_ACCOUNT_ID, name="admin")
    caller = Caller(
        principal_arn=admin.arn,
        account_id=admin.account_id,
        region=settings.KMSWEB_DEFAULT_REGION,
        origin="api",
        principal_name=admin.name,
        principal_pk=admin.pk,
    )
    for i in range(rounds):
        try:
            if role == "api":
                key = key_services.key_create(caller=caller, description=f"writer {i}")
                for _ in range(3):
                    key_services.key_encrypt(caller=caller, key=key, plaintext=b"concurrent")
            else:
                for name in ("seal_audit", "rollup_usage", "expire_grants"):
                    job_run(name, job_named(name).function())
            done += 1
        except Exception as exc:
            failures += 1
            cause = exc.__cause__ or exc
            print(f"failed: {type(cause).__name__}: {cause}", flush=True)
    print(f"ok {done}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
