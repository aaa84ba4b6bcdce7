"""The key page's rotation panel: the next rotation date (or why there is
none) and the rotation history, entry for entry what ListKeyRotations says."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client

from audit.services.jobs import job_run
from keys import services
from keys.models import Key, KeyManager, KeyOrigin, KeyState, RotationType
from keys.selectors import rotation_outlook
from keys.services.jobs import keys_rotate_due
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ROW = re.compile(r'<tr data-material="([^"]+)" data-rotation-type="([A-Z_]*)">')


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def admin_client(key_admin_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(key_admin_user)


def outlook_of(now: datetime = T0, **fields: Any) -> tuple[datetime | None, str]:
    defaults: dict[str, Any] = {
        "manager": KeyManager.CUSTOMER,
        "state": KeyState.ENABLED,
        "rotation_enabled": True,
        "rotation_period_days": 90,
        "next_rotation_at": T0 + 10 * DAY,
    }
    outlook = rotation_outlook(Key(**{**defaults, **fields}), now)
    return outlook.next_at, outlook.note


@pytest.mark.parametrize(
    ("fields", "next_at", "note"),
    [
        ({}, T0 + 10 * DAY, ""),
        ({"next_rotation_at": T0 - DAY}, T0 - DAY, "Due since 2025-02-28 12:00 UTC: the rotate_keys job"),
        ({"rotation_enabled": False, "next_rotation_at": None}, None, "Automatic rotation is off."),
        (
            {"state": KeyState.DISABLED},
            None,
            "Not rotated while the key is disabled: once enabled again it rotates on 2025-03-11 12:00 UTC.",
        ),
        (
            {"state": KeyState.DISABLED, "next_rotation_at": T0 - DAY},
            None,
            "Not rotated while the key is disabled: it was due on 2025-02-28 12:00 UTC, so once enabled again "
            "the rotate_keys job rotates it on its next run (hourly).",
        ),
        (
            {"state": KeyState.PENDING_DELETION},
            None,
            "Not rotated while the key is pending deletion: once its deletion",
        ),
        ({"deleted_at": T0}, None, "The key is deleted."),
        # Service managed keys rotate yearly whatever rotation_enabled says.
        ({"manager": KeyManager.AWS, "rotation_enabled": False}, T0 + 10 * DAY, ""),
        ({"origin": KeyOrigin.EXTERNAL}, None, "Keys with imported key material do not rotate automatically."),
        ({"key_spec": "RSA_2048"}, None, "Only symmetric encryption keys rotate automatically."),
    ],
)
def test_it_explains_the_next_rotation_or_why_there_is_none(
    fields: dict[str, Any], next_at: datetime | None, note: str
) -> None:
    got_next, got_note = outlook_of(**fields)
    assert got_next == next_at
    assert got_note.startswith(note) if note else got_note == ""


@pytest.mark.django_db
def test_the_key_page_shows_the_next_rotation_and_the_history_listkeyrotations_reports(
    admin_client: Client, key_admin: Persona, make_key: Callable[..., Key], clock: time_machine.Coordinates
) -> None:
    key = make_key(rotation_period_days=90)
    initial = key.current_material.material_id
    clock.move_to(T0 + 10 * DAY)
    services.key_rotate(caller=key_admin.caller(), key=key, rotation_type=RotationType.ON_DEMAND)
    clock.move_to(T0 + 90 * DAY)
    job_run("rotate_keys", keys_rotate_due)

    page = admin_client.get(f"/keys/{key.id}/").content.decode()
    assert 'id="key-next-rotation" data-next="2025-08-28T12:00:00+00:00"' in page  # 90 days after the automatic one
    assert "2025-08-28 12:00 UTC" in page
    listed = services.key_list_rotations(
        caller=key_admin.caller(), key=Key.objects.get(pk=key.pk), include_initial=True
    )
    expected = [(r["KeyMaterialId"], r.get("RotationType", "")) for r in reversed(listed["Rotations"])]
    assert ROW.findall(page) == expected  # newest first on the page
    assert [t for _, t in expected] == ["AUTOMATIC", "ON_DEMAND", ""] and expected[-1][0] == initial
    history = page.split('id="key-rotations"')[1]
    assert history.count("CURRENT</span>") == 3 and history.count("badge ok") == 1  # one CURRENT, two NON_CURRENT
    assert "2025-05-30 12:00:00 UTC" in history and "2025-03-11 12:00:00 UTC" in history


@pytest.mark.django_db
def test_the_key_page_says_a_disabled_key_is_skipped_until_enabled(
    admin_client: Client, key_admin: Persona, make_key: Callable[..., Key], clock: time_machine.Coordinates
) -> None:
    key = make_key(rotation_period_days=90)
    services.key_disable(caller=key_admin.caller(), key=key)
    clock.move_to(T0 + 100 * DAY)
    job_run("rotate_keys", keys_rotate_due)
    page = admin_client.get(f"/keys/{key.id}/").content.decode()
    assert 'data-next=""' in page
    assert "Not rotated while the key is disabled: it was due on 2025-05-30 12:00 UTC" in page
    assert len(ROW.findall(page)) == 1
