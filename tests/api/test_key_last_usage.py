"""GetKeyLastUsage with boto3 against a live server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from audit.models import AuditEvent
from keys.models import Key
from tests.conftest import Persona


def test_it_reports_no_usage_for_a_new_key(kms: Any, make_key: Callable[..., Key]) -> None:
    key = make_key()
    answer = kms.get_key_last_usage(KeyId=str(key.id))
    assert answer["KeyId"] == str(key.id)
    assert answer.get("KeyLastUsage", {}) == {}
    assert answer["KeyCreationDate"].timestamp() == pytest.approx(key.created_at.timestamp(), abs=1)
    assert answer["TrackingStartDate"] >= answer["KeyCreationDate"]


def test_it_reports_the_last_successful_cryptographic_call(kms: Any, make_key: Callable[..., Key]) -> None:
    key = make_key()
    other = make_key()
    blob = kms.encrypt(KeyId=str(key.id), Plaintext=b"x")["CiphertextBlob"]
    kms.decrypt(CiphertextBlob=blob)
    # Neither a failure, nor a management call, nor another key's use counts.
    with pytest.raises(ClientError):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"wrong": "context"})
    with pytest.raises(ClientError):
        kms.encrypt(KeyId=str(key.id), Plaintext=b"x", DryRun=True)
    kms.describe_key(KeyId=str(key.id))
    kms.encrypt(KeyId=str(other.id), Plaintext=b"y")

    answer = kms.get_key_last_usage(KeyId=key.arn)
    usage = answer["KeyLastUsage"]
    decrypt = AuditEvent.objects.filter(event_name="Decrypt", key_id=str(key.id), error_code="").get()
    assert usage["Operation"] == "Decrypt"
    assert usage["CloudTrailEventId"] == str(decrypt.event_id)
    assert usage["KmsRequestId"] == decrypt.request_id
    assert usage["Timestamp"].timestamp() == pytest.approx(decrypt.event_time.timestamp(), abs=0.001)
    assert kms.get_key_last_usage(KeyId=str(other.id))["KeyLastUsage"]["Operation"] == "Encrypt"


def test_it_is_authorized_and_audited(
    kms_client: Callable[..., Any], make_persona: Callable[..., Persona], make_key: Callable[..., Key]
) -> None:
    key = make_key()
    reader = make_persona(
        "reader",
        policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*"}],
            }
        ),
    )
    with pytest.raises(ClientError) as exc:
        kms_client(reader).get_key_last_usage(KeyId=str(key.id))
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
    event = AuditEvent.objects.get(event_name="GetKeyLastUsage")
    assert event.error_code == "AccessDeniedException" and event.key_id == str(key.id)
    assert event.read_only


def test_it_does_not_accept_an_alias(kms: Any, make_key: Callable[..., Key]) -> None:
    make_key(alias="alias/used")
    with pytest.raises(ClientError) as exc:
        kms.get_key_last_usage(KeyId="alias/used")
    assert exc.value.response["Error"]["Code"] == "NotFoundException"
