"""The dashboard's asymmetric, HMAC and key agreement keys: the create form's
spec and usage menus, their server-side checks, and the public key on the key page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from django.test import Client

from audit.models import AuditEvent
from keys.models import Key
from tests.dashboard_fixtures import DashboardUser

HX = {"HTTP_HX_REQUEST": "true"}


def html(response: Any) -> str:
    return response.content.decode()


@pytest.fixture
def admin_client(key_admin_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(key_admin_user)


@pytest.fixture
def viewer_client(viewer_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(viewer_user)


def test_it_creates_a_signing_key_from_the_form(admin_client: Client, key_admin_user: DashboardUser) -> None:
    response = admin_client.post(
        "/keys/new/",
        {
            "description": "release signing",
            "key_spec": "ECC_NIST_P256",
            "key_usage": "SIGN_VERIFY",
            "rotation_period_days": "365",
        },
    )
    key = Key.objects.get(description="release signing")
    assert response.status_code == 302 and response["Location"] == f"/keys/{key.id}/"
    assert (key.key_spec, key.key_usage, key.rotation_enabled) == ("ECC_NIST_P256", "SIGN_VERIFY", False)
    event = AuditEvent.objects.get(event_name="CreateKey", key_id=str(key.id))
    assert event.origin == "dashboard" and event.error_code == ""


@pytest.mark.parametrize(
    ("data", "field_error"),
    [
        ({"key_spec": "ECC_NIST_P256", "key_usage": "ENCRYPT_DECRYPT"}, "Select a valid choice."),
        ({"key_spec": "HMAC_256", "key_usage": "SIGN_VERIFY"}, "Select a valid choice."),
        ({"key_spec": "RSA_2048"}, "You must specify a KeyUsage value"),
        (
            {"key_spec": "RSA_2048", "key_usage": "SIGN_VERIFY", "rotation_enabled": "on"},
            "Automatic rotation is available only for symmetric encryption keys",
        ),
    ],
)
def test_it_refuses_a_spec_and_usage_that_do_not_go_together_inline(
    admin_client: Client, data: dict[str, str], field_error: str
) -> None:
    before = Key.objects.count()
    response = admin_client.post("/keys/new/", {"description": "typed text", "rotation_period_days": "365", **data})
    assert response.status_code == 200
    body = html(response)
    assert field_error in body
    assert 'value="typed text"' in body
    # The chosen spec stays selected, and the usage menu offers that spec's usages.
    assert f'<option value="{data["key_spec"]}" selected>' in body
    assert Key.objects.count() == before


def test_it_offers_only_the_usages_of_the_chosen_spec(admin_client: Client) -> None:
    menus = {
        "HMAC_256": ["GENERATE_VERIFY_MAC"],
        "RSA_3072": ["ENCRYPT_DECRYPT", "SIGN_VERIFY"],
        "ECC_NIST_P384": ["SIGN_VERIFY", "KEY_AGREEMENT"],
        "ECC_SECG_P256K1": ["SIGN_VERIFY"],
        "ML_DSA_65": ["SIGN_VERIFY"],
        "SYMMETRIC_DEFAULT": ["ENCRYPT_DECRYPT"],
    }
    for spec, usages in menus.items():
        response = admin_client.get(f"/keys/new/usage/?key_spec={spec}", **HX)
        body = html(response)
        assert "<html" not in body and 'id="key-create-usage"' in body
        offered = [
            u
            for u in ("ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT")
            if f'value="{u}"' in body
        ]
        assert offered == usages, spec
    page = html(admin_client.get("/keys/new/"))
    assert 'hx-get="/keys/new/usage/"' in page and 'value="ML_DSA_87"' in page


def test_it_shows_the_public_key_and_algorithms_of_an_asymmetric_key(
    admin_client: Client, viewer_client: Client, make_key: Callable[..., Key], viewer_user: DashboardUser
) -> None:
    key = make_key(key_spec="RSA_2048", key_usage="SIGN_VERIFY")
    public_der = bytes(key.current_material.public_key)
    pem = (
        serialization.load_der_public_key(public_der)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    page = html(admin_client.get(f"/keys/{key.id}/"))
    assert pem.strip() in page
    assert "RSASSA_PSS_SHA_256, RSASSA_PSS_SHA_384" in page and "Signing algorithms" in page
    assert f"/keys/{key.id}/public-key.pem" in page
    assert "Rotate now" not in page and "Key rotation is available only for symmetric" in page

    download = viewer_client.get(f"/keys/{key.id}/public-key.pem")
    assert download.status_code == 200
    assert download["Content-Disposition"] == f'attachment; filename="{key.id}.pem"'
    assert (
        serialization.load_pem_public_key(download.content).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == public_der
    )
    event = AuditEvent.objects.get(event_name="GetPublicKey", key_id=str(key.id))
    assert event.origin == "dashboard" and event.principal_arn == viewer_user.arn and event.error_code == ""


def test_it_shows_no_public_key_for_symmetric_and_hmac_keys(admin_client: Client, make_key: Callable[..., Key]) -> None:
    for key in (make_key(), make_key(key_spec="HMAC_512", key_usage="GENERATE_VERIFY_MAC")):
        page = html(admin_client.get(f"/keys/{key.id}/"))
        assert 'id="key-public-key"' not in page and "BEGIN PUBLIC KEY" not in page
    assert "HMAC_SHA_512" in page


def test_it_filters_the_key_table_by_every_key_spec(admin_client: Client, make_key: Callable[..., Key]) -> None:
    symmetric = make_key()
    ecc = make_key(key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY")
    hmac_key = make_key(key_spec="HMAC_256", key_usage="GENERATE_VERIFY_MAC")
    page = html(admin_client.get("/keys/"))
    for spec in ("SYMMETRIC_DEFAULT", "RSA_4096", "ECC_NIST_P256", "HMAC_256", "ML_DSA_65"):
        assert f'<option value="{spec}"' in page, spec
    table = html(admin_client.get("/keys/?kind=customer&spec=ECC_NIST_P256", **HX))
    assert str(ecc.id) in table
    assert str(symmetric.id) not in table and str(hmac_key.id) not in table
    chosen = html(admin_client.get("/keys/?kind=customer&spec=HMAC_256"))
    assert '<option value="HMAC_256" selected>' in chosen


def test_it_creates_ml_kem_and_ed25519_keys_from_the_form(admin_client: Client) -> None:
    menu = html(admin_client.get("/keys/new/usage/?key_spec=ML_KEM_512", **HX))
    assert 'value="ENCAPSULATE_DECAPSULATE"' in menu and 'value="SIGN_VERIFY"' not in menu
    page = html(admin_client.get("/keys/new/"))
    assert 'value="ML_KEM_1024"' in page and 'value="ECC_NIST_EDWARDS25519"' in page
    for spec, usage in (("ML_KEM_512", "ENCAPSULATE_DECAPSULATE"), ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY")):
        response = admin_client.post(
            "/keys/new/",
            {"description": spec, "key_spec": spec, "key_usage": usage, "rotation_period_days": "365"},
        )
        key = Key.objects.get(description=spec)
        assert response.status_code == 302 and (key.key_spec, key.key_usage) == (spec, usage)
        body = html(admin_client.get(f"/keys/{key.id}/"))
        # ML-KEM-512's DER is one cryptography cannot load: the page still shows its PEM.
        assert "-----BEGIN PUBLIC KEY-----" in body
        assert ("Encapsulation algorithms" in body) == (spec == "ML_KEM_512")
    response = admin_client.post(
        "/keys/new/",
        {"description": "wrong", "key_spec": "ML_KEM_768", "key_usage": "SIGN_VERIFY", "rotation_period_days": "365"},
    )
    assert response.status_code == 200 and "Select a valid choice." in html(response)
    assert not Key.objects.filter(description="wrong").exists()
