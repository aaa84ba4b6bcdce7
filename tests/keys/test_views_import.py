"""The dashboard for keys with imported material: creating an external key,
the key page's import panel, and deleting imported material."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from keys import services
from keys.models import Key, KeyMaterial, KeyState
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser
from tests.importing import wrap

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def admin_client(key_admin_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(key_admin_user)


@pytest.fixture
def viewer_client(viewer_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(viewer_user)


def html(response: Any) -> str:
    return str(response.content.decode())


def imported_key(persona: Persona, make_key: Callable[..., Key], *, valid_to: Any = None) -> Key:
    key = make_key(origin="EXTERNAL", description="from the hsm")
    caller = persona.caller()
    params = services.key_get_parameters_for_import(
        caller=caller, key=key, wrapping_algorithm="RSAES_OAEP_SHA_256", wrapping_key_spec="RSA_2048"
    )
    services.key_import_material(
        caller=caller,
        key=key,
        import_token=params["ImportToken"],
        encrypted_key_material=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32)),
        expiration_model="KEY_MATERIAL_EXPIRES" if valid_to else "KEY_MATERIAL_DOES_NOT_EXPIRE",
        valid_to=valid_to,
    )
    return Key.objects.get(pk=key.pk)


def test_it_creates_an_external_key_from_the_form_and_shows_how_to_import(admin_client: Client) -> None:
    page = html(admin_client.get("/keys/new/"))
    assert "External (import your own material)" in page
    form = {"origin": "EXTERNAL", "description": "byok", "tags": "", "rotation_period_days": "365"}
    response = admin_client.post("/keys/new/", form)
    key = Key.objects.get(description="byok")
    assert response.status_code == 302 and response["Location"] == f"/keys/{key.id}/"
    assert (key.origin, key.state, key.rotation_enabled) == ("EXTERNAL", KeyState.PENDING_IMPORT, False)
    assert not KeyMaterial.objects.filter(key=key).exists()

    page = html(admin_client.get(f"/keys/{key.id}/"))
    assert 'data-state="PendingImport"' in page and "Pending import" in page
    assert 'id="key-import"' in page and "Not imported yet" in page
    assert f"KEY_ID={key.id}" in page
    assert "kms get-parameters-for-import" in page and "rsa_mgf1_md:sha256" in page
    assert "kms import-key-material" in page
    # Nothing to delete yet, and no rotation for imported material.
    assert f"/keys/{key.id}/delete-imported-material/" not in page
    assert f"/keys/{key.id}/rotation/" not in page and f"/keys/{key.id}/rotate/" not in page


def test_it_refuses_rotation_for_an_external_key_inline_keeping_the_input(admin_client: Client) -> None:
    response = admin_client.post(
        "/keys/new/",
        {"origin": "EXTERNAL", "description": "keep me", "rotation_enabled": "on", "rotation_period_days": "365"},
    )
    page = html(response)
    assert response.status_code == 200
    assert "cannot rotate automatically" in page
    assert 'value="keep me"' in page and 'value="EXTERNAL" selected' in page
    assert not Key.objects.filter(description="keep me").exists()
    assert not AuditEvent.objects.filter(event_name="CreateKey", origin="dashboard").exists()


def test_it_shows_the_expiration_and_deletes_material_after_confirmation(
    admin_client: Client, key_admin_user: DashboardUser, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    valid_to = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
    key = imported_key(key_admin, make_key, valid_to=valid_to)
    page = html(admin_client.get(f"/keys/{key.id}/"))
    assert "KEY_MATERIAL_EXPIRES" in page and valid_to.strftime("%Y-%m-%d %H:%M:%S") in page
    assert 'data-present="true"' in page
    assert f"/keys/{key.id}/delete-imported-material/" in page

    wrong = admin_client.post(f"/keys/{key.id}/delete-imported-material/", {"confirm": "not-it"}, **HX)
    assert wrong.status_code == 200 and "That is not this key&#x27;s id." in html(wrong)
    assert Key.objects.get(pk=key.pk).state == KeyState.ENABLED
    assert not AuditEvent.objects.filter(event_name="DeleteImportedKeyMaterial").exists()

    done = admin_client.post(f"/keys/{key.id}/delete-imported-material/", {"confirm": str(key.id)}, **HX)
    body = html(done)
    assert done.status_code == 200 and "<html" not in body and "keyChanged" in done["HX-Trigger"]
    assert 'data-state="PendingImport"' in body and "Deleted or expired" in body
    assert Key.objects.get(pk=key.pk).state == KeyState.PENDING_IMPORT
    assert bytes(KeyMaterial.objects.get(key=key).wrapped) == b""
    event = AuditEvent.objects.get(event_name="DeleteImportedKeyMaterial")
    assert (event.origin, event.principal_arn, event.error_code, event.key_id) == (
        "dashboard",
        key_admin_user.arn,
        "",
        str(key.id),
    )


def test_it_refuses_and_audits_a_forged_delete_from_a_viewer(
    viewer_client: Client, viewer_user: DashboardUser, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    key = imported_key(key_admin, make_key)
    page = html(viewer_client.get(f"/keys/{key.id}/"))
    assert 'id="key-import"' in page and f"/keys/{key.id}/delete-imported-material/" not in page

    response = viewer_client.post(f"/keys/{key.id}/delete-imported-material/", {"confirm": str(key.id)}, **HX)
    assert response.status_code == 200 and response["HX-Retarget"] == "#flash"
    assert "AccessDeniedException" in html(response)
    assert Key.objects.get(pk=key.pk).state == KeyState.ENABLED
    assert bytes(KeyMaterial.objects.get(key=key).wrapped) != b""
    denial = AuditEvent.objects.get(event_name="DeleteImportedKeyMaterial")
    assert (denial.error_code, denial.principal_arn, denial.origin) == (
        "AccessDeniedException",
        viewer_user.arn,
        "dashboard",
    )


def test_it_refuses_to_delete_material_of_a_key_that_is_not_external(
    admin_client: Client, make_key: Callable[..., Key]
) -> None:
    key = make_key()
    assert 'id="key-import"' not in html(admin_client.get(f"/keys/{key.id}/"))
    response = admin_client.post(f"/keys/{key.id}/delete-imported-material/", {"confirm": str(key.id)}, **HX)
    assert response["HX-Retarget"] == "#flash" and "UnsupportedOperationException" in html(response)
    assert Key.objects.get(pk=key.pk).state == KeyState.ENABLED
    assert AuditEvent.objects.get(event_name="DeleteImportedKeyMaterial").error_code == "UnsupportedOperationException"


def test_it_rotates_to_imported_material_pending_rotation_from_the_key_page(
    admin_client: Client, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    key = imported_key(key_admin, make_key)
    assert "Rotate now" not in html(admin_client.get(f"/keys/{key.id}/"))
    caller = key_admin.caller()
    params = services.key_get_parameters_for_import(
        caller=caller, key=key, wrapping_algorithm="RSAES_OAEP_SHA_256", wrapping_key_spec="RSA_2048"
    )
    pending = services.key_import_material(
        caller=caller,
        key=Key.objects.get(pk=key.pk),
        import_token=params["ImportToken"],
        encrypted_key_material=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32)),
        expiration_model="KEY_MATERIAL_DOES_NOT_EXPIRE",
        import_type="NEW_KEY_MATERIAL",
    )["KeyMaterialId"]
    page = html(admin_client.get(f"/keys/{key.id}/"))
    assert "PENDING_ROTATION" in page and "Rotate now" in page and "imported key material pending rotation" in page

    done = admin_client.post(f"/keys/{key.id}/rotate/", **HX)
    assert done.status_code == 200 and "<html" not in html(done)
    key = Key.objects.select_related("current_material").get(pk=key.pk)
    assert key.current_material is not None and key.current_material.material_id == pending
    assert "PENDING_ROTATION" not in html(admin_client.get(f"/keys/{key.id}/"))
    event = AuditEvent.objects.filter(event_name="RotateKeyOnDemand").get()
    assert (event.origin, event.error_code) == ("dashboard", "")
