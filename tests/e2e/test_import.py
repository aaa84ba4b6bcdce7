"""A key for imported material in a real browser: create it from the form,
follow its page through the import, delete the material with a confirmation."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from playwright.sync_api import expect

from audit.models import AuditEvent
from keys import services
from keys.models import Key, KeyState
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser
from tests.e2e.test_dashboard import sign_in
from tests.importing import wrap

pytestmark = pytest.mark.usefixtures("transactional_db")


def test_it_creates_an_external_key_and_deletes_its_imported_material(
    page: Any, key_admin_user: DashboardUser, key_admin: Persona
) -> None:
    sign_in(page, key_admin_user)
    page.goto("/keys/new/")
    page.select_option("#id_origin", "EXTERNAL")
    page.fill("#id_description", "From the HSM")
    # Left ticked, rotation is refused inline for an external key, input kept.
    page.click("#key-create-form button[type=submit]")
    expect(page.locator("#key-create-form")).to_contain_text("cannot rotate automatically")
    expect(page.locator("#id_description")).to_have_value("From the HSM")
    page.uncheck("#id_rotation_enabled")
    page.click("#key-create-form button[type=submit]")

    expect(page.locator("#flash")).to_contain_text("Created key")
    key = Key.objects.get(description="From the HSM")
    expect(page).to_have_url(re.compile(f"/keys/{key.id}/$"))
    expect(page.locator("#key-state")).to_have_attribute("data-state", "PendingImport")
    expect(page.locator("#key-material-status")).to_have_text("Not imported yet")
    expect(page.locator("#key-import-commands")).to_contain_text(f"KEY_ID={key.id}")
    expect(page.locator("#key-delete-material")).to_have_count(0)

    # The material arrives through the API, as a client would import it.
    caller = key_admin.caller()
    params = services.key_get_parameters_for_import(
        caller=caller, key=key, wrapping_algorithm="RSA_AES_KEY_WRAP_SHA_256", wrapping_key_spec="RSA_2048"
    )
    services.key_import_material(
        caller=caller,
        key=key,
        import_token=params["ImportToken"],
        encrypted_key_material=wrap(params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256", os.urandom(32)),
        expiration_model="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    page.reload()
    expect(page.locator("#key-state")).to_have_attribute("data-state", "Enabled")
    expect(page.locator("#key-expiration-model")).to_have_text("KEY_MATERIAL_DOES_NOT_EXPIRE")

    page.click("#key-delete-material")
    page.fill("#key-delete-material-form input[name=confirm]", "not the id")
    page.click("#key-delete-material-confirm")
    expect(page.locator("#key-delete-material-form")).to_contain_text("That is not this key's id.")
    assert Key.objects.get(pk=key.pk).state == KeyState.ENABLED
    page.fill("#key-delete-material-form input[name=confirm]", str(key.id))
    page.click("#key-delete-material-confirm")
    expect(page.locator("#key-state")).to_have_attribute("data-state", "PendingImport")
    expect(page.locator("#key-material-status")).to_contain_text("Deleted or expired")
    assert Key.objects.get(pk=key.pk).state == KeyState.PENDING_IMPORT
    event = AuditEvent.objects.get(event_name="DeleteImportedKeyMaterial")
    assert (event.origin, event.principal_arn, event.error_code) == ("dashboard", key_admin_user.arn, "")
