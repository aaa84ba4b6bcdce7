"""The key page of a multi-Region key: its type, its primary and replicas, and the states only they have."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from keys import services
from keys.models import Key, RotationType
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser

pytestmark = pytest.mark.django_db

EU = "eu-west-1"
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def admin_client(key_admin_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(key_admin_user)


def page(client: Client, key: Key) -> str:
    response = client.get(f"/keys/{key.id}/")
    assert response.status_code == 200
    return response.content.decode()


def test_it_shows_the_primary_and_its_replicas(admin_client: Client, key_admin: Persona) -> None:
    caller = key_admin.caller()
    primary = services.key_create(caller=caller, multi_region=True)
    replica = services.key_replicate(caller=caller, key=primary, replica_region=EU)
    html = page(admin_client, primary)
    assert "Multi-Region" in html and 'data-field="multi-region-type">primary<' in html
    assert primary.key_id in html
    assert f'<tr data-region="{EU}"><td>Replica</td>' in html and replica.arn in html
    assert f"/keys/{primary.id}/rotate/" in html
    single = page(admin_client, services.key_create(caller=caller))
    assert "Single-Region" in single and 'id="key-related"' not in single


def test_a_replica_has_no_rotate_button(admin_client: Client, key_admin: Persona) -> None:
    caller = key_admin.caller()
    primary = services.key_create(caller=caller, multi_region=True)
    services.key_replicate(caller=caller, key=primary, replica_region=EU)
    services.key_update_primary_region(caller=caller, key=primary, primary_region=EU)
    html = page(admin_client, primary)
    assert 'data-field="multi-region-type">replica<' in html
    assert f"/keys/{primary.id}/rotate/" not in html
    # A forged post is refused by the service, and the material does not change.
    response = admin_client.post(f"/keys/{primary.id}/rotate/", **HX)
    assert response.status_code == 200 and "UnsupportedOperationException" in response.content.decode()
    assert primary.materials.count() == 1
    assert RotationType.ON_DEMAND not in primary.materials.values_list("rotation_type", flat=True)


def test_it_shows_a_primary_waiting_for_its_replicas(admin_client: Client, key_admin: Persona) -> None:
    caller = key_admin.caller()
    primary = services.key_create(caller=caller, multi_region=True)
    services.key_replicate(caller=caller, key=primary, replica_region=EU)
    response: Any = admin_client.post(
        f"/keys/{primary.id}/schedule-deletion/", {"pending_window_days": "9", "confirm": str(primary.id)}, **HX
    )
    assert "the 9-day waiting period begins when the last replica is deleted" in response.content.decode()
    html = page(admin_client, primary)
    assert 'data-state="PendingReplicaDeletion"' in html and "Pending replica deletion" in html
    assert "9-day waiting period begins when its last replica is deleted" in html
    assert f"/keys/{primary.id}/cancel-deletion/" in html
    assert 'id="key-deletion-form"' not in html
    overview = admin_client.get("/").content.decode()
    assert "after its replicas (9 days)" in overview


def test_it_creates_a_multi_region_key_from_the_form(admin_client: Client) -> None:
    response = admin_client.post(
        "/keys/new/",
        {"description": "global orders", "multi_region": "on", "rotation_enabled": "on", "rotation_period_days": "365"},
    )
    key = Key.objects.get(description="global orders")
    assert response.status_code == 302 and response["Location"] == f"/keys/{key.id}/"
    assert (key.multi_region_id, key.multi_region_type, key.rotation_enabled) == (key.id, "PRIMARY", True)
    assert 'data-field="multi-region-type">primary<' in page(admin_client, key)
    plain = admin_client.post("/keys/new/", {"description": "local", "rotation_period_days": "365"})
    assert plain.status_code == 302
    assert Key.objects.get(description="local").multi_region_id is None
    assert 'name="multi_region"' in admin_client.get("/keys/new/").content.decode()
