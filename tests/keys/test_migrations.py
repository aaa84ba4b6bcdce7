"""Data migrations of the keys app, run backwards and forwards on the test database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("keys", "0004_imported_material")]
AFTER = [("keys", "0005_owned_keys_rotate_yearly")]


def _migrate(targets: list[tuple[str, str]]):  # noqa: ANN202 (a historical app registry)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture(autouse=True)
def _latest_schema_afterwards() -> Iterator[None]:
    """Leave the test database at the latest migrations: the tests after these need every column."""
    yield
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_it_schedules_yearly_rotation_for_owned_keys_made_before_it_existed() -> None:
    apps = _migrate(BEFORE)
    Key = apps.get_model("keys", "Key")
    made = datetime(2025, 3, 1, tzinfo=UTC)
    rotated = datetime(2026, 1, 10, tzinfo=UTC)
    old = Key.objects.create(manager="OWNED", purpose="old-secrets", region="", created_at=made)
    rotated_once = Key.objects.create(
        manager="OWNED", purpose="rotated-secrets", region="", created_at=made, last_rotated_at=rotated
    )
    Account = apps.get_model("policies", "Account")
    account = Account.objects.first() or Account.objects.create(id="111122223333", name="test")
    customer = Key.objects.create(account=account, region="us-east-1", created_at=made)

    apps = _migrate(AFTER)
    Key = apps.get_model("keys", "Key")
    old, rotated_once, customer = (Key.objects.get(pk=k.pk) for k in (old, rotated_once, customer))
    assert old.rotation_enabled and old.rotation_period_days == 365
    assert old.next_rotation_at == made + timedelta(days=365)
    assert rotated_once.next_rotation_at == rotated + timedelta(days=365)
    # Customer managed keys keep their own choice (rotation off by default).
    assert not customer.rotation_enabled and customer.next_rotation_at is None
