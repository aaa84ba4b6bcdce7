"""The AWS Encryption SDK for Python, unchanged, with kmsweb as its KMS.

The SDK's KMS master key provider builds its own boto3 clients from a
botocore session, with no endpoint argument. botocore's service-specific
endpoint setting (``AWS_ENDPOINT_URL_KMS``, read when a client is created)
points them at the live server; the session carries the credentials.
"""

from __future__ import annotations

from typing import Any

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk import CommitmentPolicy, StrictAwsKmsMasterKeyProvider
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError
from cryptography.exceptions import InvalidSignature

from audit.models import AuditEvent
from tests.conftest import REGION, Persona

pytestmark = pytest.mark.django_db(transaction=True)

CONTEXT = {"tenant": "acme", "purpose": "invoice"}


@pytest.fixture
def provider(live_server: Any, key_admin: Persona, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A factory of strict master key providers for key ARNs, talking to kmsweb."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", live_server.url)
    session = botocore.session.Session()
    session.set_credentials(key_admin.access_key_id, key_admin.secret)
    session.set_config_variable("region", REGION)

    def make(*key_arns: str) -> StrictAwsKmsMasterKeyProvider:
        return StrictAwsKmsMasterKeyProvider(key_ids=list(key_arns), botocore_session=session)

    return make


@pytest.fixture
def sdk() -> aws_encryption_sdk.EncryptionSDKClient:
    return aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)


def test_it_encrypts_and_decrypts_a_message_with_context(kms, sdk, provider) -> None:
    first = kms.create_key(Description="sdk primary")["KeyMetadata"]["Arn"]
    second = kms.create_key(Description="sdk secondary")["KeyMetadata"]["Arn"]
    plaintext = b"an invoice " * 1000  # more than one KMS call could take
    since = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

    message, header = sdk.encrypt(source=plaintext, encryption_context=CONTEXT, key_provider=provider(first, second))
    assert plaintext not in message
    # One data key, encrypted under both KMS keys.
    assert {edk.key_provider.key_info.decode() for edk in header.encrypted_data_keys} == {first, second}

    opened, opened_header = sdk.decrypt(source=message, key_provider=provider(first))
    assert opened == plaintext
    assert CONTEXT.items() <= opened_header.encryption_context.items()
    # The second key alone opens it too: its copy of the data key is real.
    assert sdk.decrypt(source=message, key_provider=provider(second))[0] == plaintext

    calls = list(AuditEvent.objects.filter(id__gt=since).values_list("event_name", "error_code", "user_agent"))
    assert [(name, error) for name, error, _ in calls] == [
        ("GenerateDataKey", ""),
        ("Encrypt", ""),
        ("Decrypt", ""),
        ("Decrypt", ""),
    ]
    assert all("AwsEncryptionSdkPython" in agent for _, _, agent in calls)


def test_it_refuses_a_tampered_message_or_the_wrong_key(kms, sdk, provider) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    other = kms.create_key()["KeyMetadata"]["Arn"]
    message, header = sdk.encrypt(source=b"pay 100 EUR", encryption_context=CONTEXT, key_provider=provider(key))
    assert sdk.decrypt(source=message, key_provider=provider(key))[0] == b"pay 100 EUR"

    # Header, body and footer signature each authenticate the message (the
    # SDK lets a bad footer signature out as cryptography's own error).
    for position in (40, len(message) // 2, len(message) - 10):
        tampered = bytearray(message)
        tampered[position] ^= 0x01
        with pytest.raises((AWSEncryptionSDKClientError, InvalidSignature)):
            sdk.decrypt(source=bytes(tampered), key_provider=provider(key))

    # The encrypted data key itself: kmsweb refuses to decrypt it.
    (edk,) = header.encrypted_data_keys
    start = message.index(edk.encrypted_data_key)
    tampered = bytearray(message)
    tampered[start + len(edk.encrypted_data_key) - 1] ^= 0x01
    since = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    with pytest.raises(AWSEncryptionSDKClientError):
        sdk.decrypt(source=bytes(tampered), key_provider=provider(key))
    refusals = AuditEvent.objects.filter(id__gt=since).values_list("event_name", "error_code")
    assert list(refusals) == [("Decrypt", "InvalidCiphertextException")]

    # A provider for another key has no data key it may open.
    with pytest.raises(AWSEncryptionSDKClientError):
        sdk.decrypt(source=message, key_provider=provider(other))
