"""The dashboard's custom key store list: read through DescribeCustomKeyStores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from audit.models import AuditEvent
from keys import services as svc
from keys.crypto import pkcs11
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser
from tests.softhsm import LIBRARY, Token, cloudhsm_params, init_token, softhsm_dir

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[Token]:
    softhsm_dir(tmp_path, monkeypatch)
    settings.KMSWEB_PKCS11_LIBRARY = LIBRARY
    yield init_token()
    pkcs11.forget_all()


def test_a_viewer_sees_the_stores_their_state_and_key_counts_and_no_pin(
    token: Token,
    key_admin: Persona,
    viewer_user: DashboardUser,
    signed_in: Callable[..., Client],
) -> None:
    admin = key_admin.caller()
    store = svc.custom_key_store_create(caller=admin, params=cloudhsm_params(token, name="vault-hsm"))
    failed = svc.custom_key_store_create(
        caller=admin, params=cloudhsm_params(init_token(), name="bad-pin", KeyStorePassword="wrong-pin-1")
    )
    svc.custom_key_store_connect(caller=admin, store_id=store.id)
    svc.custom_key_store_connect(caller=admin, store_id=failed.id)
    svc.key_create(caller=admin, origin="AWS_CLOUDHSM", custom_key_store_id=store.id)

    page = signed_in(viewer_user).get("/key-stores/")
    assert page.status_code == 200
    text = page.content.decode()
    assert store.id in text and "vault-hsm" in text and token.label in text
    assert "CONNECTED" in text and "INVALID_CREDENTIALS" in text
    assert ">1</td>" in text  # the connected store's one key
    assert token.pin not in text and "wrong-pin-1" not in text
    event = AuditEvent.objects.filter(event_name="DescribeCustomKeyStores").latest("id")
    assert (event.origin, event.error_code) == ("dashboard", "")


def test_the_list_is_empty_for_an_account_without_stores(
    viewer_user: DashboardUser, signed_in: Callable[..., Client]
) -> None:
    page = signed_in(viewer_user).get("/key-stores/")
    assert "No custom key store" in page.content.decode()
