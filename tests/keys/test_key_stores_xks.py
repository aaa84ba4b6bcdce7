"""Custom key stores of type EXTERNAL_KEY_STORE, against tests/xks_proxy.py over HTTPS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent
from keys import services as svc
from keys.crypto import pkcs11
from keys.models import ConnectionState, CustomKeyStore, Key, KeyState
from keys.services.platform import platform_key_get_or_create
from keys.services.store_backends import SECRET_PURPOSE
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    InvalidCiphertext,
    InvalidState,
    UnsupportedOperation,
    XksKeyAlreadyInUse,
    XksKeyNotFound,
    XksProxyIncorrectAuthenticationCredential,
    XksProxyInvalidConfiguration,
    XksProxyUriInUse,
    XksProxyUriUnreachable,
)
from tests.conftest import REGION, Persona
from tests.keys.test_services import assert_one_event, last_event_id
from tests.softhsm import LIBRARY, init_token, softhsm_dir
from tests.xks_proxy import ACCESS_KEY_ID, SECRET, URI_PATH, XksProxy

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _platform_key(db: None) -> None:
    platform_key_get_or_create(purpose=SECRET_PURPOSE)


@pytest.fixture
def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[XksProxy]:
    softhsm_dir(tmp_path, monkeypatch)
    token = init_token()
    server = XksProxy(token=token.session_token(), region=REGION)
    ca = server.start(tmp_path)
    settings.KMSWEB_PKCS11_LIBRARY = LIBRARY
    settings.KMSWEB_XKS_PROXY_PORT = server.port
    settings.KMSWEB_XKS_CA_BUNDLE = str(ca)
    settings.KMSWEB_XKS_ALLOW_PRIVATE = True  # the test proxy listens on 127.0.0.1
    server.create_key("ext-key-1")
    yield server
    server.stop()
    pkcs11.forget_all()


@pytest.fixture
def admin(key_admin: Persona) -> Caller:
    return key_admin.caller()


def xks_params(name: str = "xks-store", **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "CustomKeyStoreName": name,
        "CustomKeyStoreType": "EXTERNAL_KEY_STORE",
        "XksProxyUriEndpoint": "https://127.0.0.1",
        "XksProxyUriPath": URI_PATH,
        "XksProxyConnectivity": "PUBLIC_ENDPOINT",
        "XksProxyAuthenticationCredential": {"AccessKeyId": ACCESS_KEY_ID, "RawSecretAccessKey": SECRET},
    }
    params.update(overrides)
    return params


@pytest.fixture
def store(admin: Caller, proxy: XksProxy) -> CustomKeyStore:
    created = svc.custom_key_store_create(caller=admin, params=xks_params())
    svc.custom_key_store_connect(caller=admin, store_id=created.id)
    created.refresh_from_db()
    return created


@pytest.fixture
def ext_key(admin: Caller, store: CustomKeyStore) -> Key:
    return svc.key_create(
        caller=admin, origin="EXTERNAL_KEY_STORE", custom_key_store_id=store.id, xks_key_id="ext-key-1"
    )


def test_it_creates_an_external_store_after_asking_the_proxys_health(admin: Caller, proxy: XksProxy) -> None:
    mark = last_event_id()
    store = svc.custom_key_store_create(caller=admin, params=xks_params())
    event = assert_one_event(mark, "CreateCustomKeyStore", admin)
    assert store.connection_state == ConnectionState.DISCONNECTED
    assert proxy.calls[-1][0] == "/health"
    assert proxy.calls[-1][1]["kmsOperation"] == "CreateCustomKeyStore"
    assert SECRET.encode() not in bytes(CustomKeyStore.objects.get(pk=store.id).secret_ciphertext)
    recorded = json.dumps([event.request_parameters, event.response_elements])
    assert SECRET not in recorded
    assert event.request_parameters["xksProxyAuthenticationCredential"] == {"accessKeyId": ACCESS_KEY_ID}
    entry = svc.custom_key_store_describe(caller=admin, store_id=store.id)["CustomKeyStores"][0]
    assert entry["XksProxyConfiguration"] == {
        "Connectivity": "PUBLIC_ENDPOINT",
        "AccessKeyId": ACCESS_KEY_ID,
        "UriEndpoint": "https://127.0.0.1",
        "UriPath": URI_PATH,
    }


def test_it_refuses_a_wrong_secret_an_unreachable_proxy_vpc_connectivity_and_a_taken_uri(
    admin: Caller, proxy: XksProxy, settings: Any
) -> None:
    wrong = {"AccessKeyId": ACCESS_KEY_ID, "RawSecretAccessKey": "W" * 43}
    with pytest.raises(XksProxyIncorrectAuthenticationCredential):
        svc.custom_key_store_create(caller=admin, params=xks_params(XksProxyAuthenticationCredential=wrong))
    with pytest.raises(XksProxyInvalidConfiguration):
        svc.custom_key_store_create(caller=admin, params=xks_params(XksProxyConnectivity="VPC_ENDPOINT_SERVICE"))
    svc.custom_key_store_create(caller=admin, params=xks_params())
    with pytest.raises(XksProxyUriInUse):
        svc.custom_key_store_create(caller=admin, params=xks_params(name="again"))
    settings.KMSWEB_XKS_CA_BUNDLE = ""  # the proxy's certificate is no longer trusted
    with pytest.raises(XksProxyUriUnreachable):
        svc.custom_key_store_create(caller=admin, params=xks_params(name="tls", XksProxyUriPath="/x/kms/xks/v1"))
    assert CustomKeyStore.objects.count() == 1


def test_a_proxy_on_a_private_address_is_refused_unless_allowed(admin: Caller, proxy: XksProxy, settings: Any) -> None:
    settings.KMSWEB_XKS_ALLOW_PRIVATE = False
    served = len(proxy.calls)
    with pytest.raises(XksProxyInvalidConfiguration, match="KMSWEB_XKS_ALLOW_PRIVATE"):
        svc.custom_key_store_create(caller=admin, params=xks_params())
    assert len(proxy.calls) == served  # kmsweb did not even connect
    assert not CustomKeyStore.objects.exists()


def test_a_changed_proxy_secret_fails_the_connection_with_invalid_credentials(admin: Caller, proxy: XksProxy) -> None:
    store = svc.custom_key_store_create(caller=admin, params=xks_params())
    proxy.secret = "N" * 44
    svc.custom_key_store_connect(caller=admin, store_id=store.id)
    entry = svc.custom_key_store_describe(caller=admin, store_id=store.id)["CustomKeyStores"][0]
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED", "INVALID_CREDENTIALS")


def test_an_external_key_encrypts_and_decrypts_through_the_proxy(
    admin: Caller, ext_key: Key, proxy: XksProxy, store: CustomKeyStore
) -> None:
    assert ext_key.state == KeyState.ENABLED
    meta = svc.key_describe(caller=admin, key=ext_key)
    assert meta["Origin"] == "EXTERNAL_KEY_STORE"
    assert meta["XksKeyConfiguration"] == {"Id": "ext-key-1"}
    assert meta["CustomKeyStoreId"] == store.id
    sealed = svc.key_encrypt(caller=admin, key=ext_key, plaintext=b"outside", context={"a": "1"})
    route, metadata = proxy.calls[-1]
    assert route == "/keys/ext-key-1/encrypt"
    assert metadata["kmsOperation"] == "Encrypt"
    assert metadata["kmsKeyArn"] == ext_key.arn
    assert metadata["awsPrincipalArn"] == admin.principal_arn
    assert svc.key_decrypt(caller=admin, ciphertext=sealed.ciphertext, context={"a": "1"}).plaintext == b"outside"
    assert proxy.calls[-1][0] == "/keys/ext-key-1/decrypt"
    with pytest.raises(InvalidCiphertext):
        svc.key_decrypt(caller=admin, ciphertext=sealed.ciphertext, context={"a": "2"})
    with pytest.raises(UnsupportedOperation):
        svc.random_generate(caller=admin, number_of_bytes=8, custom_key_store_id=store.id)


def test_unknown_and_reused_external_keys_are_refused(admin: Caller, ext_key: Key, store: CustomKeyStore) -> None:
    with pytest.raises(XksKeyNotFound):
        svc.key_create(caller=admin, origin="EXTERNAL_KEY_STORE", custom_key_store_id=store.id, xks_key_id="nope")
    with pytest.raises(XksKeyAlreadyInUse):
        svc.key_create(caller=admin, origin="EXTERNAL_KEY_STORE", custom_key_store_id=store.id, xks_key_id="ext-key-1")
    assert Key.objects.filter(custom_key_store=store).count() == 1


def test_a_disconnected_external_store_makes_its_keys_unavailable(
    admin: Caller, ext_key: Key, store: CustomKeyStore, proxy: XksProxy
) -> None:
    svc.custom_key_store_disconnect(caller=admin, store_id=store.id)
    key = Key.objects.get(pk=ext_key.pk)
    assert key.state == KeyState.UNAVAILABLE
    served = len(proxy.calls)
    with pytest.raises(InvalidState):
        svc.key_encrypt(caller=admin, key=key, plaintext=b"x")
    assert len(proxy.calls) == served  # kmsweb did not call the proxy


def test_an_unreachable_proxy_makes_the_call_fail_cleanly(admin: Caller, ext_key: Key, proxy: XksProxy) -> None:
    proxy.stop()
    mark = last_event_id()
    with pytest.raises(InvalidState):
        svc.key_encrypt(caller=admin, key=ext_key, plaintext=b"x")
    event = assert_one_event(mark, "Encrypt", admin, keys=[ext_key], error="KMSInvalidStateException")
    assert "unavailable" in event.error_message
    assert not AuditEvent.objects.filter(error_code="KMSInternalException").exists()
