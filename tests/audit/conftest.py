"""Fixtures of the audit tests: a key, its callers, export directories, tampering."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from keys import services as key_services
from keys.models import Key
from kmsweb.lib.caller import Caller
from tests.conftest import Persona


@pytest.fixture(autouse=True)
def _audit_dirs(settings: Any, tmp_path: Path) -> None:
    settings.KMSWEB_AUDIT_ARCHIVE_DIR = tmp_path / "archive"
    settings.KMSWEB_AUDIT_EXPORT_DIR = tmp_path / "exports"


@pytest.fixture
def admin(key_admin: Persona) -> Caller:
    return key_admin.caller()


@pytest.fixture
def key(admin: Caller) -> Key:
    return key_services.key_create(caller=admin, description="audited")


@pytest.fixture
def activity(admin: Caller, key: Key) -> Callable[[int], None]:
    """``activity(n)``: n Encrypt calls (n events)."""

    def run(n: int = 3) -> None:
        for i in range(n):
            key_services.key_encrypt(caller=admin, key=key, plaintext=f"p{i}".encode())

    return run


@contextmanager
def tampering() -> Iterator[None]:
    """Act as someone with direct write access to the database (the PostgreSQL
    append-only triggers do not fire for a replication-role session)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SET session_replication_role = replica")
        try:
            yield
        finally:
            with connection.cursor() as cur:
                cur.execute("SET session_replication_role = DEFAULT")
    else:
        yield


def run_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()
