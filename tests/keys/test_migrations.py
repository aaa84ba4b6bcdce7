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
def _back_to_the_latest_migrations() -> Iterator[None]:
    # Migrating back to 0004 unapplies every later migration of the app and of
    # the apps that depend on it: the tests that follow need them all again.
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


@pytest.mark.django_db(transaction=True)
def test_it_gives_the_current_imported_material_its_keys_expiration() -> None:
    apps = _migrate(AFTER)
    Key = apps.get_model("keys", "Key")
    KeyMaterial = apps.get_model("keys", "KeyMaterial")
    Account = apps.get_model("policies", "Account")
    account = Account.objects.first() or Account.objects.create(id="111122223333", name="test")
    made = datetime(2025, 3, 1, tzinfo=UTC)
    valid_to = made + timedelta(days=30)
    key = Key.objects.create(
        account=account,
        region="us-east-1",
        created_at=made,
        origin="EXTERNAL",
        expiration_model="KEY_MATERIAL_EXPIRES",
        valid_to=valid_to,
    )
    material = KeyMaterial.objects.create(
        key=key, version=1, material_id="a" * 64, wrapped=b"w", root_key_id="r", created_at=made
    )
    Key.objects.filter(pk=key.pk).update(current_material=material)

    apps = _migrate([("keys", "0007_key_material_versions")])
    material = apps.get_model("keys", "KeyMaterial").objects.get(pk=material.pk)
    assert (material.expiration_model, material.valid_to) == ("KEY_MATERIAL_EXPIRES", valid_to)
