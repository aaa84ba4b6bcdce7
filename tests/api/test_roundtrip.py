"""boto3 against a live kmsweb: the happy paths of the symmetric key API."""

from __future__ import annotations

import base64

import pytest

from audit.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_encrypts_and_decrypts_through_an_alias(kms) -> None:
    key_id = kms.create_key(Description="app key")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/app", TargetKeyId=key_id)
    blob = kms.encrypt(KeyId="alias/app", Plaintext=b"top secret", EncryptionContext={"tenant": "a"})["CiphertextBlob"]
    out = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "a"})
    assert out["Plaintext"] == b"top secret"
    assert out["KeyId"].endswith(key_id)
    assert b"top secret" not in blob


def test_it_generates_a_data_key_that_decrypts_to_the_same_bytes(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    dk = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert len(dk["Plaintext"]) == 32
    assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]


def test_it_records_one_audit_event_per_call_without_plaintext(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    before = AuditEvent.objects.count()
    kms.encrypt(KeyId=key_id, Plaintext=b"do-not-log-me")
    events = list(AuditEvent.objects.all()[before:])
    assert [e.event_name for e in events] == ["Encrypt"]
    event = events[0]
    assert event.error_code == ""
    assert event.key_id == key_id
    assert event.origin == "api"
    assert event.user_identity["arn"].endswith(":user/key-admin")
    serialized = str(event.request_parameters) + str(event.response_elements) + str(event.additional_event_data)
    assert "do-not-log-me" not in serialized
    assert base64.b64encode(b"do-not-log-me").decode() not in serialized
