"""Settings a deployment behind PgBouncer needs (docs/DEPLOYMENT.md)."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings

from tests.secret_files import secret_files_env

PROBE = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.DATABASES['default'].get('DISABLE_SERVER_SIDE_CURSORS', False))"
)


def _probe(**extra: str) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "kmsweb.settings",
        "KMSWEB_VAR_DIR": str(settings.VAR_DIR),
        "DATABASE_URL": "postgres://kmsweb@pgbouncer.invalid:6432/kmsweb",
        **secret_files_env(),
        **extra,
    }
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", PROBE], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_it_turns_server_side_cursors_off_for_transaction_pooling() -> None:
    assert _probe() == "False"
    assert _probe(KMSWEB_DB_DISABLE_SERVER_SIDE_CURSORS="true") == "True"
    # A typo fails at start-up rather than leaving cursors on.
    env_typo = _probe_error(KMSWEB_DB_DISABLE_SERVER_SIDE_CURSORS="yes")
    assert "KMSWEB_DB_DISABLE_SERVER_SIDE_CURSORS" in env_typo


def _probe_error(**extra: str) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "kmsweb.settings",
        "KMSWEB_VAR_DIR": str(settings.VAR_DIR),
        **secret_files_env(),
        **extra,
    }
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", PROBE], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    return done.stderr
