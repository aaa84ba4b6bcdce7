"""boto3 against a live kmsweb: a CloudHSM-type custom key store on a SoftHSM2 token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from audit.models import AuditEvent
from keys.crypto import pkcs11
from tests.softhsm import LIBRARY, Token, cloudhsm_params, init_token, softhsm_dir

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[Token]:
    softhsm_dir(tmp_path, monkeypatch)
    settings.KMSWEB_PKCS11_LIBRARY = LIBRARY
    yield init_token()
    pkcs11.forget_all()


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_a_cloudhsm_store_serves_keys_until_it_is_disconnected(kms: Any, token: Token) -> None:
    store_id = kms.create_custom_key_store(**cloudhsm_params(token))["CustomKeyStoreId"]
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    (entry,) = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"]
    assert entry["ConnectionState"] == "CONNECTED"
    assert entry["CloudHsmClusterId"] == token.label

    meta = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)["KeyMetadata"]
    assert meta["Origin"] == "AWS_CLOUDHSM"
    assert meta["CustomKeyStoreId"] == store_id
    assert meta["CloudHsmClusterId"] == token.label
    key_id = meta["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"in the token", EncryptionContext={"app": "x"})["CiphertextBlob"]
    out = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "x"})
    assert out["Plaintext"] == b"in the token"
    assert out["KeyId"].endswith(key_id)
    assert len(kms.generate_random(NumberOfBytes=32, CustomKeyStoreId=store_id)["Plaintext"]) == 32

    with pytest.raises(ClientError) as has_keys:
        kms.delete_custom_key_store(CustomKeyStoreId=store_id)
    assert error_code(has_keys) == "CustomKeyStoreInvalidStateException"

    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Unavailable"
    with pytest.raises(ClientError) as unavailable:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert error_code(unavailable) == "KMSInvalidStateException"
    with pytest.raises(ClientError) as undecryptable:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "x"})
    assert error_code(undecryptable) == "KMSInvalidStateException"
    with pytest.raises(ClientError) as still_has_keys:
        kms.delete_custom_key_store(CustomKeyStoreId=store_id)
    assert error_code(still_has_keys) == "CustomKeyStoreHasCMKsException"

    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "x"})["Plaintext"] == b"in the token"
    names = set(AuditEvent.objects.values_list("event_name", flat=True))
    assert {"CreateCustomKeyStore", "ConnectCustomKeyStore", "DisconnectCustomKeyStore"} <= names


def test_bad_inputs_get_aws_errors(kms: Any, token: Token) -> None:
    store_id = kms.create_custom_key_store(**cloudhsm_params(token, KeyStorePassword="not-the-pin"))["CustomKeyStoreId"]
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    (entry,) = kms.describe_custom_key_stores(CustomKeyStoreName="hsm-store")["CustomKeyStores"]
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED", "INVALID_CREDENTIALS")

    for call in (
        lambda: kms.connect_custom_key_store(CustomKeyStoreId="cks-1234567890abcdef0"),
        lambda: kms.describe_custom_key_stores(CustomKeyStoreId="cks-1234567890abcdef0"),
        lambda: kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId="cks-1234567890abcdef0"),
    ):
        with pytest.raises(ClientError) as unknown:
            call()
        assert error_code(unknown) == "CustomKeyStoreNotFoundException"
    with pytest.raises(ClientError) as taken:
        kms.create_custom_key_store(**cloudhsm_params(init_token()))
    assert error_code(taken) == "CustomKeyStoreNameInUseException"
    with pytest.raises(ClientError) as failed:
        kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)
    assert error_code(failed) == "CustomKeyStoreInvalidStateException"
