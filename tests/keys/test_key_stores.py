"""Custom key stores of type AWS_CLOUDHSM, backed by a SoftHSM2 token per test."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent
from keys import services as svc
from keys.crypto import pkcs11
from keys.models import ConnectionState, CustomKeyStore, Key, KeyMaterial, KeyState
from keys.services.platform import platform_key_get_or_create
from keys.services.root_rotation import root_key_rotate, root_key_status
from keys.services.store_backends import SECRET_PURPOSE, token_key_label
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    AccessDenied,
    CloudHsmClusterInUse,
    CloudHsmClusterNotFound,
    CustomKeyStoreHasCMKs,
    CustomKeyStoreInvalidState,
    CustomKeyStoreNameInUse,
    CustomKeyStoreNotFound,
    IncorrectTrustAnchor,
    InvalidCiphertext,
    InvalidState,
    UnsupportedOperation,
    ValidationError,
)
from policies.services import identity_policy_put
from tests.conftest import Persona
from tests.keys.test_services import assert_one_event, last_event_id
from tests.softhsm import LIBRARY, Token, cloudhsm_params, init_token, softhsm_dir

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[Token]:
    softhsm_dir(tmp_path, monkeypatch)
    settings.KMSWEB_PKCS11_LIBRARY = LIBRARY
    yield init_token()
    pkcs11.forget_all()


@pytest.fixture(autouse=True)
def _platform_key(db: None) -> None:
    # Made on first use (with its own CreateKey event): made here, so each test sees only its own events.
    platform_key_get_or_create(purpose=SECRET_PURPOSE)


@pytest.fixture
def admin(key_admin: Persona) -> Caller:
    return key_admin.caller()


@pytest.fixture
def store(admin: Caller, token: Token) -> CustomKeyStore:
    return svc.custom_key_store_create(caller=admin, params=cloudhsm_params(token))


@pytest.fixture
def connected(admin: Caller, store: CustomKeyStore) -> CustomKeyStore:
    svc.custom_key_store_connect(caller=admin, store_id=store.id)
    store.refresh_from_db()
    assert store.connection_state == ConnectionState.CONNECTED
    return store


@pytest.fixture
def hsm_key(make_key: Callable[..., Key], connected: CustomKeyStore) -> Key:
    return make_key(origin="AWS_CLOUDHSM", custom_key_store_id=connected.id)


def fresh(obj: Any) -> Any:
    return type(obj).objects.get(pk=obj.pk)


def test_it_creates_a_disconnected_store_with_the_pin_encrypted(admin: Caller, token: Token) -> None:
    mark = last_event_id()
    store = svc.custom_key_store_create(caller=admin, params=cloudhsm_params(token))
    event = assert_one_event(mark, "CreateCustomKeyStore", admin)
    assert store.id.startswith("cks-") and len(store.id) == 21
    assert store.connection_state == ConnectionState.DISCONNECTED
    assert store.cloud_hsm_cluster_id == token.label
    row = CustomKeyStore.objects.get(pk=store.id)
    assert token.pin.encode() not in bytes(row.secret_ciphertext)
    recorded = json.dumps([event.request_parameters, event.response_elements, event.additional_event_data])
    assert token.pin not in recorded
    assert event.request_parameters["cloudHsmClusterId"] == token.label
    assert event.response_elements == {"customKeyStoreId": store.id}


def test_it_describes_stores_by_id_and_name_and_refuses_unknown_ones(admin: Caller, store: CustomKeyStore) -> None:
    listed = svc.custom_key_store_describe(caller=admin)
    assert [s["CustomKeyStoreId"] for s in listed["CustomKeyStores"]] == [store.id]
    entry = svc.custom_key_store_describe(caller=admin, name="hsm-store")["CustomKeyStores"][0]
    assert entry["ConnectionState"] == "DISCONNECTED"
    assert entry["CustomKeyStoreType"] == "AWS_CLOUDHSM"
    assert "KeyStorePassword" not in entry
    mark = last_event_id()
    with pytest.raises(CustomKeyStoreNotFound):
        svc.custom_key_store_describe(caller=admin, store_id="cks-00000000000000000")
    assert_one_event(mark, "DescribeCustomKeyStores", admin, error="CustomKeyStoreNotFoundException")


def test_another_account_sees_no_store(store: CustomKeyStore, outsider: Persona) -> None:
    assert svc.custom_key_store_describe(caller=outsider.caller())["CustomKeyStores"] == []
    with pytest.raises(CustomKeyStoreNotFound):
        svc.custom_key_store_connect(caller=outsider.caller(), store_id=store.id)


def test_it_refuses_a_taken_name_a_taken_token_an_unknown_token_and_a_bad_anchor(
    admin: Caller, store: CustomKeyStore, token: Token
) -> None:
    other = init_token()
    with pytest.raises(CustomKeyStoreNameInUse):
        svc.custom_key_store_create(caller=admin, params=cloudhsm_params(other))
    with pytest.raises(CloudHsmClusterInUse):
        svc.custom_key_store_create(caller=admin, params=cloudhsm_params(token, name="second"))
    with pytest.raises(CloudHsmClusterNotFound):
        svc.custom_key_store_create(
            caller=admin, params=cloudhsm_params(other, name="third", CloudHsmClusterId="cluster-nosuchtoken2")
        )
    with pytest.raises(IncorrectTrustAnchor):
        svc.custom_key_store_create(
            caller=admin, params=cloudhsm_params(other, name="fourth", TrustAnchorCertificate="not a certificate")
        )
    with pytest.raises(ValidationError):
        svc.custom_key_store_create(caller=admin, params={"CustomKeyStoreName": "fifth"})
    assert CustomKeyStore.objects.count() == 1


def test_without_a_pkcs11_library_no_cloudhsm_store_can_be_made(admin: Caller, token: Token, settings: Any) -> None:
    settings.KMSWEB_PKCS11_LIBRARY = ""
    with pytest.raises(CloudHsmClusterNotFound, match="KMSWEB_PKCS11_LIBRARY"):
        svc.custom_key_store_create(caller=admin, params=cloudhsm_params(token))


def test_a_wrong_pin_leaves_the_store_failed_with_invalid_credentials(admin: Caller, token: Token) -> None:
    store = svc.custom_key_store_create(caller=admin, params=cloudhsm_params(token, KeyStorePassword="wrong-pin-1"))
    mark = last_event_id()
    svc.custom_key_store_connect(caller=admin, store_id=store.id)
    event = assert_one_event(mark, "ConnectCustomKeyStore", admin)
    assert event.additional_event_data["connectionErrorCode"] == "INVALID_CREDENTIALS"
    entry = svc.custom_key_store_describe(caller=admin, store_id=store.id)["CustomKeyStores"][0]
    assert entry["ConnectionState"] == "FAILED"
    assert entry["ConnectionErrorCode"] == "INVALID_CREDENTIALS"
    # A FAILED store is disconnected before it connects again (AWS's rule).
    with pytest.raises(CustomKeyStoreInvalidState):
        svc.custom_key_store_connect(caller=admin, store_id=store.id)
    svc.custom_key_store_disconnect(caller=admin, store_id=store.id)
    svc.custom_key_store_update(caller=admin, params={"CustomKeyStoreId": store.id, "KeyStorePassword": token.pin})
    svc.custom_key_store_connect(caller=admin, store_id=store.id)
    assert fresh(store).connection_state == ConnectionState.CONNECTED


def test_keys_are_created_only_in_a_connected_store(
    admin: Caller, make_key: Callable[..., Key], store: CustomKeyStore
) -> None:
    mark = last_event_id()
    with pytest.raises(CustomKeyStoreInvalidState):
        svc.key_create(caller=admin, origin="AWS_CLOUDHSM", custom_key_store_id=store.id)
    assert_one_event(mark, "CreateKey", admin, error="CustomKeyStoreInvalidStateException")
    assert not Key.objects.filter(custom_key_store=store).exists()
    with pytest.raises(CustomKeyStoreNotFound):
        make_key(origin="AWS_CLOUDHSM", custom_key_store_id="cks-00000000000000000")
    with pytest.raises(ValidationError):
        make_key(origin="AWS_CLOUDHSM")


def test_a_store_key_is_made_in_the_token_sensitive_and_not_extractable(
    admin: Caller, hsm_key: Key, token: Token, connected: CustomKeyStore
) -> None:
    assert hsm_key.state == KeyState.ENABLED
    material = KeyMaterial.objects.get(key=hsm_key)
    assert bytes(material.wrapped) == b"" and material.root_key_id == ""
    attrs = token.session_token().key_attributes(token_key_label(hsm_key))
    assert attrs.sensitive is True
    assert attrs.extractable is False
    assert attrs.never_extractable is True
    assert attrs.local is True
    meta = svc.key_describe(caller=admin, key=hsm_key)
    assert meta["Origin"] == "AWS_CLOUDHSM"
    assert meta["CustomKeyStoreId"] == connected.id
    assert meta["CloudHsmClusterId"] == token.label


def test_the_tokens_key_value_cannot_be_read(hsm_key: Key, token: Token) -> None:
    import pkcs11 as p11

    def read_value(session: Any) -> bytes:
        key = session.get_key(label=token_key_label(hsm_key))
        return bytes(key[p11.Attribute.VALUE])

    with pytest.raises(p11.exceptions.AttributeSensitive):
        token.session_token()._call(read_value)


def test_it_encrypts_and_decrypts_inside_the_token(admin: Caller, hsm_key: Key, token: Token) -> None:
    context = {"tenant": "a"}
    sealed = svc.key_encrypt(caller=admin, key=hsm_key, plaintext=b"hsm secret", context=context)
    assert b"hsm secret" not in sealed.ciphertext
    opened = svc.key_decrypt(caller=admin, ciphertext=sealed.ciphertext, context=context)
    assert opened.plaintext == b"hsm secret"
    assert opened.key.id == hsm_key.id
    with pytest.raises(InvalidCiphertext):
        svc.key_decrypt(caller=admin, ciphertext=sealed.ciphertext, context={"tenant": "b"})
    data_key = svc.key_generate_data_key(caller=admin, key=hsm_key, key_spec="AES_256", context=context)
    assert svc.key_decrypt(caller=admin, ciphertext=data_key.ciphertext, context=context).plaintext == (
        data_key.plaintext
    )
    # ReEncrypt into a key kmsweb holds, and back.
    plain_key = svc.key_create(caller=admin)
    moved, _ = svc.key_reencrypt(
        caller=admin, ciphertext=sealed.ciphertext, destination_key=plain_key, source_context=context
    )
    assert svc.key_decrypt(caller=admin, ciphertext=moved.ciphertext).plaintext == b"hsm secret"


def test_a_disconnected_stores_keys_are_unavailable_and_come_back(
    admin: Caller, hsm_key: Key, make_key: Callable[..., Key], connected: CustomKeyStore
) -> None:
    disabled = make_key(origin="AWS_CLOUDHSM", custom_key_store_id=connected.id)
    svc.key_disable(caller=admin, key=disabled)
    blob = svc.key_encrypt(caller=admin, key=hsm_key, plaintext=b"x").ciphertext
    mark = last_event_id()
    svc.custom_key_store_disconnect(caller=admin, store_id=connected.id)
    assert_one_event(mark, "DisconnectCustomKeyStore", admin)
    assert fresh(hsm_key).state == KeyState.UNAVAILABLE
    assert fresh(disabled).state == KeyState.UNAVAILABLE
    assert svc.key_describe(caller=admin, key=fresh(hsm_key))["KeyState"] == "Unavailable"
    with pytest.raises(InvalidState):
        svc.key_encrypt(caller=admin, key=fresh(hsm_key), plaintext=b"x")
    with pytest.raises(InvalidState):
        svc.key_decrypt(caller=admin, ciphertext=blob)
    with pytest.raises(InvalidState):
        svc.key_enable(caller=admin, key=fresh(disabled))
    with pytest.raises(CustomKeyStoreInvalidState):
        svc.custom_key_store_disconnect(caller=admin, store_id=connected.id)
    svc.custom_key_store_connect(caller=admin, store_id=connected.id)
    assert fresh(hsm_key).state == KeyState.ENABLED
    assert fresh(disabled).state == KeyState.DISABLED
    assert svc.key_decrypt(caller=admin, ciphertext=blob).plaintext == b"x"


def test_store_keys_do_not_rotate_and_hold_only_symmetric_encryption_keys(
    admin: Caller, hsm_key: Key, make_key: Callable[..., Key], connected: CustomKeyStore
) -> None:
    with pytest.raises(UnsupportedOperation):
        svc.key_enable_rotation(caller=admin, key=hsm_key)
    with pytest.raises(UnsupportedOperation):
        svc.key_rotate(caller=admin, key=hsm_key, rotation_type="ON_DEMAND")
    with pytest.raises(UnsupportedOperation):
        make_key(
            origin="AWS_CLOUDHSM",
            custom_key_store_id=connected.id,
            key_spec="HMAC_256",
            key_usage="GENERATE_VERIFY_MAC",
        )


def test_deleting_a_store_needs_it_disconnected_and_empty(
    admin: Caller, hsm_key: Key, connected: CustomKeyStore
) -> None:
    with pytest.raises(CustomKeyStoreInvalidState):
        svc.custom_key_store_delete(caller=admin, store_id=connected.id)
    svc.custom_key_store_disconnect(caller=admin, store_id=connected.id)
    mark = last_event_id()
    with pytest.raises(CustomKeyStoreHasCMKs):
        svc.custom_key_store_delete(caller=admin, store_id=connected.id)
    assert_one_event(mark, "DeleteCustomKeyStore", admin, error="CustomKeyStoreHasCMKsException")
    # A key pending deletion still counts; a deleted one does not.
    svc.key_schedule_deletion(caller=admin, key=fresh(hsm_key), pending_window_days=7)
    with pytest.raises(CustomKeyStoreHasCMKs):
        svc.custom_key_store_delete(caller=admin, store_id=connected.id)
    Key.objects.filter(pk=hsm_key.pk).update(deleted_at=hsm_key.created_at)
    svc.custom_key_store_delete(caller=admin, store_id=connected.id)
    assert not CustomKeyStore.objects.exists()
    assert fresh(hsm_key).custom_key_store_id is None


def test_generate_random_from_the_token(admin: Caller, store: CustomKeyStore) -> None:
    with pytest.raises(CustomKeyStoreInvalidState):
        svc.random_generate(caller=admin, number_of_bytes=16, custom_key_store_id=store.id)
    svc.custom_key_store_connect(caller=admin, store_id=store.id)
    mark = last_event_id()
    random = svc.random_generate(caller=admin, number_of_bytes=48, custom_key_store_id=store.id)
    assert len(random) == 48
    event = assert_one_event(mark, "GenerateRandom", admin)
    assert event.request_parameters == {"numberOfBytes": 48, "customKeyStoreId": store.id}
    with pytest.raises(CustomKeyStoreNotFound):
        svc.random_generate(caller=admin, number_of_bytes=16, custom_key_store_id="cks-00000000000000000")


def test_store_operations_are_account_level_iam_actions(make_persona: Callable[..., Persona], store: Any) -> None:
    reader = make_persona("reader")
    identity_policy_put(
        caller=Caller.system("tests", account_id=reader.account_id),
        account=reader.principal.account,
        name="DescribeOnly",
        document=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "kms:DescribeCustomKeyStores", "Resource": "*"}],
            }
        ),
        principal=reader.principal,
    )
    caller = reader.caller()
    assert len(svc.custom_key_store_describe(caller=caller)["CustomKeyStores"]) == 1
    mark = last_event_id()
    with pytest.raises(AccessDenied):
        svc.custom_key_store_connect(caller=caller, store_id=store.id)
    assert_one_event(mark, "ConnectCustomKeyStore", caller, error="AccessDeniedException")
    assert fresh(store).connection_state == ConnectionState.DISCONNECTED


def test_root_key_rotation_leaves_store_keys_alone(admin: Caller, hsm_key: Key, root_key_file: Path) -> None:
    blob = svc.key_encrypt(caller=admin, key=hsm_key, plaintext=b"x").ciphertext
    result = root_key_rotate(caller=Caller.system("tests"), new_key=True)
    assert result["failed"] == 0
    assert "" not in root_key_status()["wraps"]
    assert svc.key_decrypt(caller=admin, ciphertext=blob).plaintext == b"x"


def test_no_audit_event_holds_a_pin(admin: Caller, token: Token, hsm_key: Key) -> None:
    store_id = hsm_key.custom_key_store_id
    assert store_id is not None
    svc.custom_key_store_disconnect(caller=admin, store_id=store_id)
    svc.custom_key_store_update(
        caller=admin, params={"CustomKeyStoreId": store_id, "KeyStorePassword": "another-pin-1"}
    )
    texts = " ".join(
        json.dumps([e.request_parameters, e.response_elements, e.additional_event_data])
        for e in AuditEvent.objects.all()
    )
    assert "UpdateCustomKeyStore" in AuditEvent.objects.values_list("event_name", flat=True)
    assert token.pin not in texts
    assert "another-pin-1" not in texts


# AWS's key-state table, the Unavailable column: what a key of a disconnected store still allows.
UNAVAILABLE_REFUSES = {
    "Encrypt": lambda c, k: svc.key_encrypt(caller=c, key=k, plaintext=b"x"),
    "GenerateDataKey": lambda c, k: svc.key_generate_data_key(caller=c, key=k, key_spec="AES_256"),
    "GenerateDataKeyPair": lambda c, k: svc.key_generate_data_key_pair(caller=c, key=k, key_pair_spec="RSA_2048"),
    "EnableKey": lambda c, k: svc.key_enable(caller=c, key=k),
    "DisableKey": lambda c, k: svc.key_disable(caller=c, key=k),
}
UNAVAILABLE_ALLOWS = {
    "DescribeKey": lambda c, k: svc.key_describe(caller=c, key=k),
    "GetKeyPolicy": lambda c, k: svc.key_get_policy(caller=c, key=k),
    "UpdateKeyDescription": lambda c, k: svc.key_update_description(caller=c, key=k, description="d"),
    "TagResource": lambda c, k: svc.key_tag(caller=c, key=k, tags=[{"TagKey": "t", "TagValue": "v"}]),
    "ScheduleKeyDeletion": lambda c, k: svc.key_schedule_deletion(caller=c, key=k, pending_window_days=7),
}


@pytest.fixture
def unavailable(admin: Caller, hsm_key: Key, connected: CustomKeyStore) -> Key:
    svc.custom_key_store_disconnect(caller=admin, store_id=connected.id)
    key = Key.objects.select_related("current_material").get(pk=hsm_key.pk)
    assert key.state == KeyState.UNAVAILABLE
    return key


@pytest.mark.parametrize("operation", sorted(UNAVAILABLE_REFUSES))
def test_an_unavailable_key_refuses(admin: Caller, unavailable: Key, operation: str) -> None:
    mark = last_event_id()
    with pytest.raises(InvalidState):
        UNAVAILABLE_REFUSES[operation](admin, unavailable)
    events = list(AuditEvent.objects.filter(id__gt=mark).values_list("event_name", "error_code"))
    assert events[-1][1] == "KMSInvalidStateException"
    assert fresh(unavailable).state == KeyState.UNAVAILABLE


@pytest.mark.parametrize("operation", sorted(UNAVAILABLE_ALLOWS))
def test_an_unavailable_key_allows(admin: Caller, unavailable: Key, operation: str) -> None:
    UNAVAILABLE_ALLOWS[operation](admin, unavailable)


def test_cancelling_the_deletion_of_an_unavailable_key_leaves_it_unavailable_then_disabled(
    admin: Caller, unavailable: Key, connected: CustomKeyStore
) -> None:
    svc.key_schedule_deletion(caller=admin, key=unavailable, pending_window_days=7)
    svc.key_cancel_deletion(caller=admin, key=fresh(unavailable))
    assert fresh(unavailable).state == KeyState.UNAVAILABLE
    svc.custom_key_store_connect(caller=admin, store_id=connected.id)
    assert fresh(unavailable).state == KeyState.DISABLED


def test_a_logged_in_session_lets_no_other_pin_through(token: Token) -> None:
    """A PKCS#11 login is per token and process: a second PIN is judged by the token afresh."""
    right = token.session_token()
    assert len(right.random(8)) == 8  # logged in under the right PIN
    wrong = pkcs11.Pkcs11Token(library=LIBRARY, label=token.label, pin="not-the-pin")
    with pytest.raises(pkcs11.TokenError) as refused:
        wrong.random(8)
    assert refused.value.reason == "pin-incorrect"
    assert len(right.random(8)) == 8  # and the right PIN logs in again


def test_the_root_keys_token_backs_no_store(admin: Caller, token: Token, settings: Any) -> None:
    settings.KMSWEB_ROOT_KEY_PKCS11_TOKEN_LABEL = token.label
    settings.KMSWEB_ROOT_KEY_PKCS11_LIBRARY = LIBRARY
    with pytest.raises(CloudHsmClusterInUse, match="root key"):
        svc.custom_key_store_create(caller=admin, params=cloudhsm_params(token))
    assert not CustomKeyStore.objects.exists()
