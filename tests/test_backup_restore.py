"""Backups (docs/DEPLOYMENT.md): a ``pg_dump`` of a live kmsweb database,
restored into a new database, still passes ``manage.py verify_audit``: the
partitioned event table, the digests, the signing keys and the id sequence
all come back as they were. A restored copy that someone changed fails it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from audit.services.sealing import audit_seal
from keys import services as key_services
from kmsweb.lib.caller import Caller
from tests.conftest import Persona
from tests.gunicorn_nodes import database_url as _database_url
from tests.secret_files import secret_files_env

pytestmark = pytest.mark.postgres


def _pg_env() -> dict[str, str]:
    db = connection.settings_dict
    env = {**os.environ, "PGHOST": db["HOST"] or "127.0.0.1", "PGPORT": str(db["PORT"] or 5432)}
    env["PGUSER"] = db["USER"]
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = db["PASSWORD"]
    return env


def _psql(sql: str, database: str = "postgres") -> None:
    subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-qd", database, "-c", sql], env=_pg_env(), check=True)  # noqa: S603, S607


def _verify_audit(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": database_url,
        "KMSWEB_VAR_DIR": str(settings.VAR_DIR),
        "KMSWEB_AUDIT_ANCHOR_FILE": str(settings.KMSWEB_AUDIT_ANCHOR_FILE),
        **secret_files_env(),
    }
    manage = str(settings.BASE_DIR / "manage.py")
    return subprocess.run(  # noqa: S603
        [sys.executable, manage, "verify_audit"], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True
    )


def test_a_restored_dump_still_verifies(transactional_db: None, key_admin: Persona, tmp_path: Path) -> None:
    admin = key_admin.caller()
    for n in range(3):
        key = key_services.key_create(caller=admin, description=f"backed up {n}")
        key_services.key_encrypt(caller=admin, key=key, plaintext=b"x")
        assert audit_seal(caller=Caller.system("tests-backup")) is not None
    key_services.key_encrypt(caller=admin, key=key, plaintext=b"unsealed tail")
    source = connection.settings_dict["NAME"]
    copy = f"{source}_restored_{uuid.uuid4().hex[:8]}"
    dump = tmp_path / "kmsweb.dump"
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), source], env=_pg_env(), check=True)  # noqa: S603, S607
    _psql(f'CREATE DATABASE "{copy}"')
    try:
        subprocess.run(["pg_restore", "--exit-on-error", "-d", copy, str(dump)], env=_pg_env(), check=True)  # noqa: S603, S607
        restored_url = _database_url().rsplit("/", 1)[0] + f"/{copy}"
        done = _verify_audit(restored_url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("OK: 3 digests"), done.stdout
        # The restored events are the ones the digests sealed: a changed copy fails.
        _psql(
            "SET session_replication_role = replica; "
            "UPDATE audit_auditevent SET source_ip = '203.0.113.7' "
            "WHERE id = (SELECT min(id) FROM audit_auditevent WHERE event_name = 'Encrypt')",
            copy,
        )
        done = _verify_audit(restored_url)
        assert done.returncode != 0
        assert "audit trail verification FAILED" in done.stderr
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
