"""Creating an asymmetric key in a real browser: the usage menu follows the
chosen key spec (an HTMX swap), and the new key's page shows its public key."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import expect

from keys.models import Key
from tests.dashboard_fixtures import DashboardUser
from tests.e2e.test_dashboard import sign_in

pytestmark = pytest.mark.usefixtures("transactional_db")


def usage_options(page: Any) -> list[str]:
    return page.locator("#id_key_usage option").evaluate_all("options => options.map(o => o.value)")


def test_it_creates_a_key_agreement_key_with_the_usages_its_spec_allows(
    page: Any, key_admin_user: DashboardUser
) -> None:
    sign_in(page, key_admin_user)
    page.goto("/keys/new/")
    assert usage_options(page) == ["ENCRYPT_DECRYPT"]
    page.select_option("#id_key_spec", "HMAC_384")
    expect(page.locator('#id_key_usage option[value="GENERATE_VERIFY_MAC"]')).to_have_count(1)
    assert usage_options(page) == ["GENERATE_VERIFY_MAC"]
    page.select_option("#id_key_spec", "ECC_NIST_P384")
    expect(page.locator('#id_key_usage option[value="KEY_AGREEMENT"]')).to_have_count(1)
    assert usage_options(page) == ["SIGN_VERIFY", "KEY_AGREEMENT"]
    page.select_option("#id_key_usage", "KEY_AGREEMENT")
    page.fill("#id_description", "Partner key exchange")
    # Rotation is for symmetric keys only: left ticked, the form says so and keeps the input.
    page.click("#key-create-form button[type=submit]")
    expect(page.locator("#key-create-form")).to_contain_text("Automatic rotation is available only for symmetric")
    expect(page.locator("#id_description")).to_have_value("Partner key exchange")
    assert usage_options(page) == ["SIGN_VERIFY", "KEY_AGREEMENT"]
    page.uncheck("#id_rotation_enabled")
    page.click("#key-create-form button[type=submit]")

    expect(page.locator("#flash")).to_contain_text("Created key")
    key = Key.objects.get(description="Partner key exchange")
    assert (key.key_spec, key.key_usage) == ("ECC_NIST_P384", "KEY_AGREEMENT")
    expect(page).to_have_url(re.compile(f"/keys/{key.id}/$"))
    expect(page.locator("#key-spec")).to_have_text("ECC_NIST_P384")
    expect(page.locator(".key-algorithms")).to_have_text("ECDH")
    pem = page.locator("#key-public-key-pem").inner_text()
    public = serialization.load_pem_public_key(pem.encode())
    assert public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == bytes(
        key.current_material.public_key
    )
    with page.expect_download() as info:
        page.click("#key-public-key-download")
    assert info.value.suggested_filename == f"{key.id}.pem"
