"""The key services, called as the API and dashboard call them: with a Caller.

Every test asserts the result, the database state and exactly one new
AuditEvent with the right fields. Refused calls (another account, a key in
the wrong state, bad input) assert the audit row with its error code and
that nothing changed.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from audit.models import AuditEvent
from keys import crypto
from keys import services as svc
from keys.models import Alias, Key, KeyManager, KeyMaterial, KeyState, RotationType, Tag
from keys.services.material import material_unwrap, root_key_provider
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    AccessDenied,
    AlreadyExists,
    CustomKeyStoreNotFound,
    Disabled,
    DryRunOperation,
    IncorrectKey,
    InternalError,
    InvalidAliasName,
    InvalidCiphertext,
    InvalidKeyUsage,
    InvalidState,
    KmsError,
    LimitExceeded,
    MalformedPolicyDocument,
    NotFound,
    TagError,
    UnsupportedOperation,
    ValidationError,
)
from tests.conftest import REGION, Persona

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
# A wrapped 256-bit material: format byte, 96-bit nonce, 32 bytes, GCM tag.
WRAPPED_LEN = 1 + 12 + 32 + 16


# -- helpers ----------------------------------------------------------------------


def last_event_id() -> int:
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    return last or 0


def assert_one_event(
    mark: int,
    event_name: str,
    caller: Caller,
    *,
    keys: Sequence[Key] = (),
    error: str = "",
    read_only: bool | None = None,
) -> AuditEvent:
    """Exactly one event since ``mark``, and its fields are the ones expected."""
    events = list(AuditEvent.objects.filter(id__gt=mark).order_by("id"))
    assert [(e.event_name, e.error_code) for e in events] == [(event_name, error)]
    event = events[0]
    assert event.key_id == (str(keys[0].id) if keys else "")
    assert [r["ARN"] for r in event.resources] == [k.arn for k in keys]
    assert all(r["type"] == "AWS::KMS::Key" for r in event.resources)
    assert event.origin == caller.origin
    assert event.principal_arn == caller.principal_arn
    assert event.request_id == caller.request_id
    assert event.aws_region == caller.region
    assert event.recipient_account_id == caller.account_id
    assert event.user_identity["arn"] == caller.principal_arn
    assert event.user_identity.get("accessKeyId") == caller.access_key_id
    assert bool(event.error_message) == bool(error)
    if read_only is not None:
        assert event.read_only is read_only
    return event


@dataclass
class Recorded:
    event: AuditEvent | None = None


@contextmanager
def one_event(
    event_name: str,
    caller: Caller,
    *,
    keys: Sequence[Key] = (),
    error: str = "",
    read_only: bool | None = None,
) -> Iterator[Recorded]:
    mark = last_event_id()
    recorded = Recorded()
    yield recorded
    recorded.event = assert_one_event(mark, event_name, caller, keys=keys, error=error, read_only=read_only)


def state_of(key: Key) -> dict[str, Any]:
    """Everything a key operation could change, for no-change assertions."""
    return {
        "key": Key.objects.filter(pk=key.pk).values().get(),
        "materials": list(
            KeyMaterial.objects.filter(key=key).order_by("version").values_list("version", "material_id")
        ),
        "tags": list(Tag.objects.filter(key=key).order_by("tag_key").values_list("tag_key", "tag_value")),
        "aliases": list(Alias.objects.filter(key=key).order_by("name").values_list("name", "updated_at")),
    }


def row_counts() -> dict[str, int]:
    return {m.__name__: m.objects.count() for m in (Key, KeyMaterial, Tag, Alias)}


@pytest.fixture
def admin(key_admin: Persona) -> Caller:
    return key_admin.caller()


@pytest.fixture
def key(make_key: Callable[..., Key]) -> Key:
    return make_key(description="orders", tags=[{"TagKey": "team", "TagValue": "payments"}])


def fresh(key: Key) -> Key:
    return Key.objects.select_related("current_material").get(pk=key.pk)


# -- CreateKey ---------------------------------------------------------------------------


def test_it_creates_a_key_with_its_first_material_and_tags(key_admin: Persona, admin: Caller) -> None:
    mark = last_event_id()
    with time_machine.travel(NOW, tick=False):
        key = svc.key_create(caller=admin, description="app", tags=[{"TagKey": "env", "TagValue": "prod"}])
    key = fresh(key)
    assert key.account_id == key_admin.account_id
    assert key.region == REGION
    assert key.manager == KeyManager.CUSTOMER
    assert key.state == KeyState.ENABLED
    assert key.description == "app"
    assert key.created_at == NOW
    assert key.rotation_enabled is False
    policy = json.loads(key.policy)
    assert policy["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{key_admin.account_id}:root"}
    materials = list(KeyMaterial.objects.filter(key=key))
    assert [(m.version, m.rotation_type) for m in materials] == [(1, "")]
    assert key.current_material == materials[0]
    assert len(materials[0].material_id) == 64
    assert list(key.tags.values_list("tag_key", "tag_value")) == [("env", "prod")]
    event = assert_one_event(mark, "CreateKey", admin, keys=[key], read_only=False)
    assert event.response_elements == {"keyMetadata": {"keyId": str(key.id), "arn": key.arn}}
    assert event.additional_event_data == {"keyMaterialId": materials[0].material_id}


def test_it_keeps_a_given_key_policy(admin: Caller) -> None:
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{admin.account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    )
    key = svc.key_create(caller=admin, policy=policy)
    assert fresh(key).policy == policy


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"tags": [{"TagKey": "aws:reserved", "TagValue": "x"}]}, TagError),
        ({"tags": [{"TagKey": "ok", "TagValue": "x"}, {"TagKey": "", "TagValue": "x"}]}, TagError),
        ({"tags": [{"TagKey": "k" * 129, "TagValue": "x"}]}, TagError),
        ({"tags": [{"TagKey": "k", "TagValue": "v" * 257}]}, TagError),
        ({"tags": [{"TagKey": f"k{i}", "TagValue": ""} for i in range(51)]}, TagError),
        ({"policy": "{not json"}, MalformedPolicyDocument),
        ({"policy": json.dumps({"Version": "2012-10-17"})}, MalformedPolicyDocument),
        ({"policy": json.dumps({"Statement": [], "Pad": "x" * 32 * 1024})}, MalformedPolicyDocument),
        ({"key_spec": "SM2", "key_usage": "SIGN_VERIFY"}, UnsupportedOperation),
        ({"key_spec": "RSA_2048"}, ValidationError),
        ({"key_spec": "ECC_NIST_P256", "key_usage": "ENCRYPT_DECRYPT"}, ValidationError),
        ({"key_usage": "SIGN_VERIFY"}, ValidationError),
        # A custom key store's origin without the store.
        ({"origin": "AWS_CLOUDHSM"}, ValidationError),
        ({"origin": "EXTERNAL_KEY_STORE", "custom_key_store_id": "cks-1234567890abcdef0"}, CustomKeyStoreNotFound),
        ({"origin": "EXTERNAL", "rotation_period_days": 365}, UnsupportedOperation),
        ({"custom_key_store_id": "cks-1234567890abcdef0"}, CustomKeyStoreNotFound),
        # A multi-Region key cannot live in a custom key store.
        ({"multi_region": True, "custom_key_store_id": "cks-1234567890abcdef0"}, UnsupportedOperation),
    ],
)
def test_it_creates_nothing_when_create_key_is_refused(
    admin: Caller, key_admin: Persona, kwargs: dict[str, Any], error: type[KmsError]
) -> None:
    before = row_counts()
    with one_event("CreateKey", admin, error=error.code), pytest.raises(error):
        svc.key_create(caller=admin, **kwargs)
    assert row_counts() == before


@pytest.mark.parametrize(("raised", "code"), [(TagError("injected"), "TagException"), (RuntimeError("bug"), None)])
def test_it_rolls_back_a_create_key_that_fails_after_writing(
    admin: Caller, monkeypatch: pytest.MonkeyPatch, raised: Exception, code: str | None
) -> None:
    # The key and its material are already INSERTed when the tags fail.
    def boom(*args: Any, **kwargs: Any) -> None:
        raise raised

    monkeypatch.setattr(Tag.objects, "bulk_create", boom)
    before = row_counts()
    expected = type(raised) if isinstance(raised, KmsError) else InternalError
    with one_event("CreateKey", admin, error=code or InternalError.code), pytest.raises(expected):
        svc.key_create(caller=admin, tags=[{"TagKey": "a", "TagValue": "b"}])
    assert row_counts() == before


# -- DescribeKey, ListKeys -------------------------------------------------------------------


def test_it_describes_a_key(admin: Caller, key: Key) -> None:
    with one_event("DescribeKey", admin, keys=[key], read_only=True):
        meta = svc.key_describe(caller=admin, key=key)
    assert meta["KeyId"] == str(key.id)
    assert meta["Arn"] == key.arn
    assert meta["AWSAccountId"] == key.account_id
    assert meta["Enabled"] is True
    assert meta["KeyState"] == "Enabled"
    assert meta["KeyManager"] == "CUSTOMER"
    assert meta["KeySpec"] == meta["CustomerMasterKeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["Description"] == "orders"
    assert meta["CurrentKeyMaterialId"] == key.current_material.material_id
    assert "DeletionDate" not in meta


def test_it_describes_a_key_pending_deletion_with_its_deletion_date(admin: Caller, key: Key) -> None:
    with time_machine.travel(NOW, tick=False):
        svc.key_schedule_deletion(caller=admin, key=key, pending_window_days=7)
    key = fresh(key)
    with one_event("DescribeKey", admin, keys=[key]):
        meta = svc.key_describe(caller=admin, key=key)
    assert meta["KeyState"] == "PendingDeletion"
    assert meta["Enabled"] is False
    assert meta["DeletionDate"] == NOW + timedelta(days=7)


def test_it_lists_only_the_callers_keys_in_pages(
    admin: Caller, make_key: Callable[..., Key], outsider: Persona
) -> None:
    # All created in the same instant: paging must break ties by id.
    with time_machine.travel(NOW, tick=False):
        mine = {str(make_key().id) for _ in range(5)}
        make_key(outsider)
    seen: list[str] = []
    marker = None
    for _ in range(5):
        with one_event("ListKeys", admin, read_only=True):
            page = svc.key_list(caller=admin, limit=2, marker=marker)
        seen += [k["KeyId"] for k in page["Keys"]]
        assert all(k["KeyArn"].endswith(f":key/{k['KeyId']}") for k in page["Keys"])
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == mine


def test_it_lists_no_platform_owned_keys(admin: Caller) -> None:
    # The access-key secrets of the personas live under a platform key.
    assert Key.objects.filter(manager=KeyManager.OWNED).exists()
    assert svc.key_list(caller=admin)["Keys"] == []


def test_it_names_a_platform_owned_key_with_no_account_in_its_audit_event() -> None:
    from keys.services.platform import platform_key_get_or_create

    key = platform_key_get_or_create(purpose="audit-arn-test")
    event = AuditEvent.objects.filter(event_name="CreateKey", key_id=str(key.id)).get()
    assert event.resources == [{"accountId": "", "type": "AWS::KMS::Key", "ARN": f"arn:aws:kms:::key/{key.id}"}]


# -- UpdateKeyDescription, EnableKey, DisableKey ---------------------------------------------


def test_it_updates_the_description(admin: Caller, key: Key) -> None:
    with one_event("UpdateKeyDescription", admin, keys=[key], read_only=False) as rec:
        svc.key_update_description(caller=admin, key=key, description="new words")
    assert fresh(key).description == "new words"
    assert rec.event.request_parameters == {"keyId": str(key.id), "description": "new words"}


def test_it_disables_and_enables_a_key(admin: Caller, key: Key) -> None:
    with one_event("DisableKey", admin, keys=[key], read_only=False):
        svc.key_disable(caller=admin, key=key)
    assert fresh(key).state == KeyState.DISABLED
    # Idempotent, as in AWS, and audited each time.
    with one_event("DisableKey", admin, keys=[key]):
        svc.key_disable(caller=admin, key=fresh(key))
    assert fresh(key).state == KeyState.DISABLED
    with one_event("EnableKey", admin, keys=[key], read_only=False):
        svc.key_enable(caller=admin, key=fresh(key))
    assert fresh(key).state == KeyState.ENABLED


# -- ScheduleKeyDeletion, CancelKeyDeletion --------------------------------------------------


@pytest.mark.parametrize("days", [7, 19, 30, None])
def test_it_schedules_deletion_exactly_n_days_out(admin: Caller, key: Key, days: int | None) -> None:
    expected_days = days or 30
    with time_machine.travel(NOW, tick=False), one_event("ScheduleKeyDeletion", admin, keys=[key]) as rec:
        result = svc.key_schedule_deletion(caller=admin, key=key, pending_window_days=days)
    deletion_date = NOW + timedelta(days=expected_days)
    assert result == {
        "KeyId": key.arn,
        "DeletionDate": deletion_date,
        "KeyState": "PendingDeletion",
        "PendingWindowInDays": expected_days,
    }
    key = fresh(key)
    assert key.state == KeyState.PENDING_DELETION
    assert key.deletion_date == deletion_date
    assert key.pending_window_days == expected_days
    assert key.deleted_at is None
    assert KeyMaterial.objects.filter(key=key).count() == 1
    assert rec.event.response_elements == {"keyId": key.arn, "deletionDate": deletion_date.isoformat()}
    assert rec.event.request_parameters == {"keyId": str(key.id), "pendingWindowInDays": expected_days}


@pytest.mark.parametrize("days", [0, 6, 31, -1])
def test_it_refuses_a_pending_window_outside_7_to_30_days(admin: Caller, key: Key, days: int) -> None:
    before = state_of(key)
    with one_event("ScheduleKeyDeletion", admin, keys=[key], error="ValidationException"):
        with pytest.raises(ValidationError):
            svc.key_schedule_deletion(caller=admin, key=key, pending_window_days=days)
    assert state_of(key) == before


def test_it_cancels_deletion_leaving_the_key_disabled(admin: Caller, key: Key) -> None:
    svc.key_schedule_deletion(caller=admin, key=key, pending_window_days=7)
    with one_event("CancelKeyDeletion", admin, keys=[key], read_only=False) as rec:
        result = svc.key_cancel_deletion(caller=admin, key=fresh(key))
    assert result == {"KeyId": key.arn}
    key = fresh(key)
    assert key.state == KeyState.DISABLED
    assert key.deletion_date is None
    assert key.pending_window_days is None
    assert rec.event.response_elements == {"keyId": key.arn}


# -- Encrypt, Decrypt, ReEncrypt ---------------------------------------------------------------


def test_it_encrypts_under_the_current_material(admin: Caller, key: Key) -> None:
    with one_event("Encrypt", admin, keys=[key], read_only=True) as rec:
        result = svc.key_encrypt(caller=admin, key=key, plaintext=b"card 4111", context={"order": "42"})
    header = crypto.parse_header(result.ciphertext)
    assert (header.key_id, header.version) == (key.id, 1)
    assert result.key_material_id == key.current_material.material_id
    assert result.key == key
    assert b"card 4111" not in result.ciphertext
    assert rec.event.request_parameters == {
        "keyId": str(key.id),
        "encryptionContext": {"order": "42"},
        "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }
    assert rec.event.additional_event_data == {"keyMaterialId": result.key_material_id}
    assert rec.event.response_elements is None


@pytest.mark.parametrize("plaintext", [b"", b"x" * 4097])
def test_it_refuses_to_encrypt_an_empty_or_oversized_plaintext(admin: Caller, key: Key, plaintext: bytes) -> None:
    with one_event("Encrypt", admin, keys=[key], error="ValidationException"), pytest.raises(ValidationError):
        svc.key_encrypt(caller=admin, key=key, plaintext=plaintext)


def test_it_encrypts_the_largest_plaintext(admin: Caller, key: Key) -> None:
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"x" * 4096).ciphertext
    assert svc.key_decrypt(caller=admin, ciphertext=blob).plaintext == b"x" * 4096


def test_it_refuses_an_asymmetric_algorithm(admin: Caller, key: Key) -> None:
    with one_event("Encrypt", admin, keys=[key], error="InvalidKeyUsageException"), pytest.raises(InvalidKeyUsage):
        svc.key_encrypt(caller=admin, key=key, plaintext=b"x", algorithm="RSAES_OAEP_SHA_256")


def test_it_answers_a_dry_run_without_encrypting(admin: Caller, key: Key) -> None:
    with one_event("Encrypt", admin, keys=[key], error="DryRunOperationException") as rec:
        with pytest.raises(DryRunOperation):
            svc.key_encrypt(caller=admin, key=key, plaintext=b"x", dry_run=True)
    assert rec.event.additional_event_data is None


def test_it_decrypts_with_the_key_named_by_the_blob(admin: Caller, key: Key) -> None:
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"hello", context={"a": "1"}).ciphertext
    with one_event("Decrypt", admin, keys=[key], read_only=True) as rec:
        result = svc.key_decrypt(caller=admin, ciphertext=blob, context={"a": "1"})
    assert result.plaintext == b"hello"
    assert result.key == key
    assert result.key_material_id == key.current_material.material_id
    assert rec.event.additional_event_data == {"keyMaterialId": result.key_material_id}
    assert rec.event.request_parameters == {"encryptionContext": {"a": "1"}, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"}
    # Naming the right key is allowed too.
    assert svc.key_decrypt(caller=admin, ciphertext=blob, context={"a": "1"}, key=key).plaintext == b"hello"


@pytest.mark.parametrize("context", [None, {}, {"a": "2"}, {"a": "1", "b": "2"}, {"A": "1"}])
def test_it_refuses_to_decrypt_under_another_context(admin: Caller, key: Key, context: dict[str, str] | None) -> None:
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"hello", context={"a": "1"}).ciphertext
    with one_event("Decrypt", admin, keys=[key], error="InvalidCiphertextException") as rec:
        with pytest.raises(InvalidCiphertext):
            svc.key_decrypt(caller=admin, ciphertext=blob, context=context)
    assert rec.event.additional_event_data is None


@pytest.mark.parametrize("blob", [b"", b"garbage", b"\x01" + os.urandom(60)], ids=["empty", "garbage", "random"])
def test_it_refuses_to_decrypt_what_is_not_a_blob_of_a_key(admin: Caller, blob: bytes) -> None:
    with one_event("Decrypt", admin, error="InvalidCiphertextException"), pytest.raises(InvalidCiphertext):
        svc.key_decrypt(caller=admin, ciphertext=blob)


def test_it_refuses_a_tampered_blob(admin: Caller, key: Key) -> None:
    blob = bytearray(svc.key_encrypt(caller=admin, key=key, plaintext=b"hello").ciphertext)
    blob[-1] ^= 1
    with one_event("Decrypt", admin, keys=[key], error="InvalidCiphertextException"):
        with pytest.raises(InvalidCiphertext):
            svc.key_decrypt(caller=admin, ciphertext=bytes(blob))


def test_it_refuses_to_decrypt_with_the_wrong_key_named(admin: Caller, key: Key, make_key: Callable[..., Key]) -> None:
    other = make_key()
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"hello").ciphertext
    with one_event("Decrypt", admin, keys=[other], error="IncorrectKeyException"), pytest.raises(IncorrectKey):
        svc.key_decrypt(caller=admin, ciphertext=blob, key=other)


def test_it_refuses_a_blob_from_another_region(key_admin: Persona, admin: Caller, key: Key) -> None:
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"hello").ciphertext
    elsewhere = key_admin.caller(region="eu-west-1")
    with one_event("Decrypt", elsewhere, error="InvalidCiphertextException"), pytest.raises(InvalidCiphertext):
        svc.key_decrypt(caller=elsewhere, ciphertext=blob)


def test_it_reencrypts_under_another_key_and_context(admin: Caller, key: Key, make_key: Callable[..., Key]) -> None:
    destination = make_key()
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"move me", context={"from": "a"}).ciphertext
    with one_event("ReEncrypt", admin, keys=[key, destination], read_only=True) as rec:
        encrypted, opened = svc.key_reencrypt(
            caller=admin,
            ciphertext=blob,
            destination_key=destination,
            source_context={"from": "a"},
            destination_context={"to": "b"},
        )
    assert opened.key == key
    assert encrypted.key == destination
    assert crypto.parse_header(encrypted.ciphertext).key_id == destination.id
    assert svc.key_decrypt(caller=admin, ciphertext=encrypted.ciphertext, context={"to": "b"}).plaintext == b"move me"
    assert rec.event.additional_event_data == {
        "keyMaterialId": key.current_material.material_id,
        "destinationKeyMaterialId": destination.current_material.material_id,
    }


def test_it_refuses_to_reencrypt_under_the_wrong_source_context(
    admin: Caller, key: Key, make_key: Callable[..., Key]
) -> None:
    destination = make_key()
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"x", context={"from": "a"}).ciphertext
    with one_event("ReEncrypt", admin, keys=[key], error="InvalidCiphertextException"):
        with pytest.raises(InvalidCiphertext):
            svc.key_reencrypt(caller=admin, ciphertext=blob, destination_key=destination, source_context={"from": "b"})


# -- GenerateDataKey(WithoutPlaintext), GenerateRandom ---------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [
        ({"key_spec": "AES_256"}, 32),
        ({"key_spec": "AES_128"}, 16),
        ({"number_of_bytes": 1}, 1),
        ({"number_of_bytes": 1024}, 1024),
    ],
)
def test_it_generates_a_data_key(admin: Caller, key: Key, kwargs: dict[str, Any], size: int) -> None:
    with one_event("GenerateDataKey", admin, keys=[key], read_only=True) as rec:
        result = svc.key_generate_data_key(caller=admin, key=key, context={"f": "x"}, **kwargs)
    assert result.plaintext is not None and len(result.plaintext) == size
    assert result.key_material_id == key.current_material.material_id
    opened = svc.key_decrypt(caller=admin, ciphertext=result.ciphertext, context={"f": "x"})
    assert opened.plaintext == result.plaintext
    assert rec.event.additional_event_data == {"keyMaterialId": result.key_material_id}


def test_it_generates_a_data_key_without_plaintext(admin: Caller, key: Key) -> None:
    with one_event("GenerateDataKeyWithoutPlaintext", admin, keys=[key], read_only=True):
        result = svc.key_generate_data_key(caller=admin, key=key, key_spec="AES_256", with_plaintext=False)
    assert result.plaintext is None
    assert len(svc.key_decrypt(caller=admin, ciphertext=result.ciphertext).plaintext) == 32


def test_it_generates_fresh_data_keys_each_time(admin: Caller, key: Key) -> None:
    keys = {svc.key_generate_data_key(caller=admin, key=key, key_spec="AES_256").plaintext for _ in range(5)}
    assert len(keys) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"key_spec": "AES_256", "number_of_bytes": 32},
        {"key_spec": "AES_512"},
        {"number_of_bytes": 0},
        {"number_of_bytes": 1025},
    ],
)
def test_it_refuses_a_bad_data_key_request(admin: Caller, key: Key, kwargs: dict[str, Any]) -> None:
    with one_event("GenerateDataKey", admin, keys=[key], error="ValidationException"), pytest.raises(ValidationError):
        svc.key_generate_data_key(caller=admin, key=key, **kwargs)


@pytest.mark.parametrize("n", [1, 32, 1024])
def test_it_generates_random_bytes(admin: Caller, n: int) -> None:
    with one_event("GenerateRandom", admin, read_only=True) as rec:
        out = svc.random_generate(caller=admin, number_of_bytes=n)
    assert isinstance(out, bytes) and len(out) == n
    assert rec.event.request_parameters == {"numberOfBytes": n}
    assert rec.event.response_elements is None


@pytest.mark.parametrize("n", [None, 0, -1, 1025])
def test_it_refuses_a_bad_random_size(admin: Caller, n: int | None) -> None:
    with one_event("GenerateRandom", admin, error="ValidationException"), pytest.raises(ValidationError):
        svc.random_generate(caller=admin, number_of_bytes=n)


# -- Aliases -------------------------------------------------------------------------------------


def test_it_creates_an_alias(admin: Caller, key: Key, key_admin: Persona) -> None:
    with time_machine.travel(NOW, tick=False), one_event("CreateAlias", admin, keys=[key], read_only=False):
        alias = svc.alias_create(caller=admin, name="alias/orders", key=key)
    row = Alias.objects.get()
    assert row == alias
    assert (row.name, row.key_id, row.account_id, row.region) == ("alias/orders", key.id, key_admin.account_id, REGION)
    assert row.created_at == row.updated_at == NOW
    assert row.arn == f"arn:aws:kms:{REGION}:{key_admin.account_id}:alias/orders"


def test_it_refuses_a_duplicate_alias(admin: Caller, key: Key, make_key: Callable[..., Key]) -> None:
    svc.alias_create(caller=admin, name="alias/orders", key=key)
    other = make_key()
    with one_event("CreateAlias", admin, keys=[other], error="AlreadyExistsException"), pytest.raises(AlreadyExists):
        svc.alias_create(caller=admin, name="alias/orders", key=other)
    assert list(Alias.objects.values_list("name", "key_id")) == [("alias/orders", key.id)]


@pytest.mark.parametrize("name", ["orders", "arn:aws:kms:x", "alias/a:b"])
def test_it_refuses_an_alias_name_without_the_prefix_as_aws_does(admin: Caller, key: Key, name: str) -> None:
    with one_event("CreateAlias", admin, keys=[key], error="ValidationException"):
        with pytest.raises(ValidationError):
            svc.alias_create(caller=admin, name=name, key=key)
    assert not Alias.objects.exists()


@pytest.mark.parametrize(
    "name", ["alias/", "alias/has space", "alias/ünicode", "alias/aws/s3", "alias/" + "a" * 251, "alias/x\n"]
)
def test_it_refuses_a_bad_alias_name(admin: Caller, key: Key, name: str) -> None:
    with one_event("CreateAlias", admin, keys=[key], error="InvalidAliasNameException"):
        with pytest.raises(InvalidAliasName):
            svc.alias_create(caller=admin, name=name, key=key)
    assert not Alias.objects.exists()


def test_it_points_an_alias_at_another_key(admin: Caller, key: Key, make_key: Callable[..., Key]) -> None:
    svc.alias_create(caller=admin, name="alias/orders", key=key)
    other = make_key()
    with one_event("UpdateAlias", admin, keys=[other, key], read_only=False):
        svc.alias_update(caller=admin, name="alias/orders", key=other)
    assert Alias.objects.get().key_id == other.id


def test_it_deletes_an_alias_but_not_its_key(admin: Caller, key: Key) -> None:
    svc.alias_create(caller=admin, name="alias/orders", key=key)
    with one_event("DeleteAlias", admin, keys=[key], read_only=False):
        svc.alias_delete(caller=admin, name="alias/orders")
    assert not Alias.objects.exists()
    assert fresh(key).state == KeyState.ENABLED


def test_it_says_a_missing_alias_is_not_found(admin: Caller) -> None:
    with one_event("DeleteAlias", admin, error="NotFoundException"), pytest.raises(NotFound):
        svc.alias_delete(caller=admin, name="alias/nope")


def test_it_lists_aliases_of_the_account_and_of_one_key(
    admin: Caller, key: Key, make_key: Callable[..., Key], outsider: Persona
) -> None:
    other = make_key()
    svc.alias_create(caller=admin, name="alias/b", key=key)
    svc.alias_create(caller=admin, name="alias/a", key=other)
    svc.alias_create(caller=admin, name="alias/c", key=key)
    theirs = make_key(outsider)
    svc.alias_create(caller=outsider.caller(), name="alias/theirs", key=theirs)
    with one_event("ListAliases", admin, read_only=True):
        page = svc.alias_list(caller=admin, limit=2)
    assert [a["AliasName"] for a in page["Aliases"]] == ["alias/a", "alias/b"]
    assert page["Truncated"] is True
    rest = svc.alias_list(caller=admin, limit=2, marker=page["NextMarker"])
    assert [a["AliasName"] for a in rest["Aliases"]] == ["alias/c"]
    assert rest["Truncated"] is False
    with one_event("ListAliases", admin, keys=[key], read_only=True):
        for_key = svc.alias_list(caller=admin, key=key)
    assert [(a["AliasName"], a["TargetKeyId"]) for a in for_key["Aliases"]] == [
        ("alias/b", str(key.id)),
        ("alias/c", str(key.id)),
    ]


# -- Tags --------------------------------------------------------------------------------------------


def test_it_tags_overwrites_untags_and_lists(admin: Caller, key: Key) -> None:
    with one_event("TagResource", admin, keys=[key], read_only=False) as rec:
        svc.key_tag(
            caller=admin, key=key, tags=[{"TagKey": "team", "TagValue": "risk"}, {"TagKey": "env", "TagValue": "prod"}]
        )
    assert rec.event.request_parameters["tags"] == [
        {"tagKey": "team", "tagValue": "risk"},
        {"tagKey": "env", "tagValue": "prod"},
    ]
    assert list(Tag.objects.filter(key=key).values_list("tag_key", "tag_value")) == [("env", "prod"), ("team", "risk")]
    with one_event("ListResourceTags", admin, keys=[key], read_only=True):
        listed = svc.key_list_tags(caller=admin, key=key)
    assert listed == {
        "Tags": [{"TagKey": "env", "TagValue": "prod"}, {"TagKey": "team", "TagValue": "risk"}],
        "Truncated": False,
    }
    with one_event("UntagResource", admin, keys=[key], read_only=False):
        svc.key_untag(caller=admin, key=key, tag_keys=["team", "absent"])
    assert list(Tag.objects.filter(key=key).values_list("tag_key", flat=True)) == ["env"]


def test_it_pages_tags(admin: Caller, key: Key) -> None:
    svc.key_tag(caller=admin, key=key, tags=[{"TagKey": f"k{i:02}", "TagValue": ""} for i in range(10)])
    first = svc.key_list_tags(caller=admin, key=key, limit=6)
    second = svc.key_list_tags(caller=admin, key=key, limit=6, marker=first["NextMarker"])
    names = [t["TagKey"] for t in first["Tags"] + second["Tags"]]
    assert names == sorted(["team"] + [f"k{i:02}" for i in range(10)])
    assert (first["Truncated"], second["Truncated"]) == (True, False)


def test_it_refuses_a_fifty_first_tag_but_allows_overwriting_at_fifty(admin: Caller, key: Key) -> None:
    svc.key_tag(caller=admin, key=key, tags=[{"TagKey": f"k{i}", "TagValue": ""} for i in range(49)])
    assert Tag.objects.filter(key=key).count() == 50
    before = state_of(key)
    with one_event("TagResource", admin, keys=[key], error="TagException"), pytest.raises(TagError):
        svc.key_tag(caller=admin, key=key, tags=[{"TagKey": "one-too-many", "TagValue": ""}])
    assert state_of(key) == before
    svc.key_tag(caller=admin, key=key, tags=[{"TagKey": "team", "TagValue": "new"}])
    assert Tag.objects.get(key=key, tag_key="team").tag_value == "new"


def test_it_refuses_reserved_tags_without_partial_writes(admin: Caller, key: Key) -> None:
    before = state_of(key)
    with one_event("TagResource", admin, keys=[key], error="TagException"), pytest.raises(TagError):
        svc.key_tag(
            caller=admin, key=key, tags=[{"TagKey": "fine", "TagValue": "x"}, {"TagKey": "AWS:x", "TagValue": "y"}]
        )
    assert state_of(key) == before


# -- Rotation ----------------------------------------------------------------------------------------


def test_it_enables_rotation_one_period_out(admin: Caller, key: Key) -> None:
    with (
        time_machine.travel(NOW, tick=False),
        one_event("EnableKeyRotation", admin, keys=[key], read_only=False) as rec,
    ):
        svc.key_enable_rotation(caller=admin, key=key)
    key = fresh(key)
    assert key.rotation_enabled is True
    assert key.rotation_period_days == 365
    assert key.next_rotation_at == NOW + timedelta(days=365)
    assert rec.event.request_parameters == {"keyId": str(key.id), "rotationPeriodInDays": 365}
    with one_event("GetKeyRotationStatus", admin, keys=[key], read_only=True):
        status = svc.key_rotation_status(caller=admin, key=key)
    assert status == {
        "KeyRotationEnabled": True,
        "KeyId": key.arn,
        "RotationPeriodInDays": 365,
        "NextRotationDate": NOW + timedelta(days=365),
    }


@pytest.mark.parametrize("days", [90, 180, 2560])
def test_it_enables_rotation_with_a_chosen_period(admin: Caller, key: Key, days: int) -> None:
    with time_machine.travel(NOW, tick=False):
        svc.key_enable_rotation(caller=admin, key=key, period_days=days)
    assert fresh(key).next_rotation_at == NOW + timedelta(days=days)


def test_it_counts_a_changed_period_from_the_start_of_the_cycle(admin: Caller, key: Key) -> None:
    with time_machine.travel(NOW, tick=False):
        svc.key_enable_rotation(caller=admin, key=key, period_days=365)
    with time_machine.travel(NOW + timedelta(days=10), tick=False):
        svc.key_enable_rotation(caller=admin, key=fresh(key), period_days=90)
    assert fresh(key).next_rotation_at == NOW + timedelta(days=90)
    # A period already over rotates at the next opportunity, not in the past.
    with time_machine.travel(NOW + timedelta(days=200), tick=False):
        svc.key_enable_rotation(caller=admin, key=fresh(key), period_days=100)
    assert fresh(key).next_rotation_at == NOW + timedelta(days=200)


@pytest.mark.parametrize("days", [0, 89, 2561])
def test_it_refuses_a_rotation_period_out_of_range(admin: Caller, key: Key, days: int) -> None:
    before = state_of(key)
    with one_event("EnableKeyRotation", admin, keys=[key], error="ValidationException"):
        with pytest.raises(ValidationError):
            svc.key_enable_rotation(caller=admin, key=key, period_days=days)
    assert state_of(key) == before


def test_it_disables_rotation(admin: Caller, key: Key) -> None:
    svc.key_enable_rotation(caller=admin, key=key)
    with one_event("DisableKeyRotation", admin, keys=[key], read_only=False):
        svc.key_disable_rotation(caller=admin, key=fresh(key))
    key = fresh(key)
    assert (key.rotation_enabled, key.next_rotation_at) == (False, None)
    assert svc.key_rotation_status(caller=admin, key=key) == {"KeyRotationEnabled": False, "KeyId": key.arn}


def test_it_rotates_on_demand_without_moving_the_schedule(admin: Caller, key: Key) -> None:
    with time_machine.travel(NOW, tick=False):
        svc.key_enable_rotation(caller=admin, key=key)
    with time_machine.travel(NOW + timedelta(days=3), tick=False):
        with one_event("RotateKeyOnDemand", admin, keys=[key], read_only=False) as rec:
            material = svc.key_rotate(caller=admin, key=fresh(key), rotation_type=RotationType.ON_DEMAND)
    key = fresh(key)
    assert (material.version, material.rotation_type) == (2, RotationType.ON_DEMAND)
    assert material.created_at == NOW + timedelta(days=3)
    assert key.current_material == material
    assert key.next_rotation_at == NOW + timedelta(days=365)
    assert key.last_rotated_at is None
    assert rec.event.additional_event_data == {"keyMaterialId": material.material_id}
    assert rec.event.response_elements == {"keyId": key.arn}


def test_it_allows_ten_on_demand_rotations_and_refuses_the_eleventh(admin: Caller, key: Key) -> None:
    blobs = {}
    for n in range(10):
        current = fresh(key)
        blobs[current.current_material.version] = svc.key_encrypt(
            caller=admin, key=current, plaintext=f"written under v{n + 1}".encode()
        ).ciphertext
        svc.key_rotate(caller=admin, key=current, rotation_type=RotationType.ON_DEMAND)
    key = fresh(key)
    assert key.current_material.version == 11
    before = state_of(key)
    with one_event("RotateKeyOnDemand", admin, keys=[key], error="LimitExceededException"):
        with pytest.raises(LimitExceeded):
            svc.key_rotate(caller=admin, key=key, rotation_type=RotationType.ON_DEMAND)
    assert state_of(key) == before
    # Every old ciphertext still decrypts, with the version it was made with.
    for version, blob in blobs.items():
        assert crypto.parse_header(blob).version == version
        assert svc.key_decrypt(caller=admin, ciphertext=blob).plaintext == f"written under v{version}".encode()
    # New ones use the current version.
    latest = svc.key_encrypt(caller=admin, key=key, plaintext=b"new").ciphertext
    assert crypto.parse_header(latest).version == 11


def test_it_lists_rotations(admin: Caller, key: Key) -> None:
    for _ in range(3):
        svc.key_rotate(caller=admin, key=fresh(key), rotation_type=RotationType.ON_DEMAND)
    key = fresh(key)
    with one_event("ListKeyRotations", admin, keys=[key], read_only=True):
        listed = svc.key_list_rotations(caller=admin, key=key)
    rotations = listed["Rotations"]
    assert listed["Truncated"] is False
    materials = list(KeyMaterial.objects.filter(key=key).order_by("version"))
    assert [r["KeyMaterialId"] for r in rotations] == [m.material_id for m in materials[1:]]
    assert [r["KeyMaterialState"] for r in rotations] == ["NON_CURRENT", "NON_CURRENT", "CURRENT"]
    assert {r["RotationType"] for r in rotations} == {"ON_DEMAND"}
    everything = svc.key_list_rotations(caller=admin, key=key, include_initial=True)["Rotations"]
    assert len(everything) == 4 and "RotationType" not in everything[0]
    first = svc.key_list_rotations(caller=admin, key=key, limit=2)
    second = svc.key_list_rotations(caller=admin, key=key, limit=2, marker=first["NextMarker"])
    assert [r["KeyMaterialId"] for r in first["Rotations"] + second["Rotations"]] == [
        r["KeyMaterialId"] for r in rotations
    ]


def test_it_stores_only_wrapped_material(admin: Caller, key: Key) -> None:
    for _ in range(2):
        svc.key_rotate(caller=admin, key=fresh(key), rotation_type=RotationType.ON_DEMAND)
    blob = svc.key_encrypt(caller=admin, key=fresh(key), plaintext=b"probe").ciphertext
    provider = root_key_provider()
    rows = list(KeyMaterial.objects.all())
    assert len(rows) >= 3
    for row in rows:
        wrapped = bytes(row.wrapped)
        material = material_unwrap(row)
        assert len(material) == 32
        assert len(wrapped) == WRAPPED_LEN
        assert material not in wrapped
        assert material[:8] not in wrapped
        assert material.hex() not in wrapped.hex()
        assert row.root_key_id == provider.key_id
    current = fresh(key).current_material
    # What decrypts is the unwrapped material, never the stored bytes.
    assert crypto.decrypt(material_unwrap(current), blob) == b"probe"
    with pytest.raises(crypto.CryptoError):
        crypto.decrypt(bytes(current.wrapped)[:32], blob)


def test_it_refuses_material_moved_to_another_version_row(admin: Caller, key: Key) -> None:
    svc.key_rotate(caller=admin, key=fresh(key), rotation_type=RotationType.ON_DEMAND)
    v1, v2 = KeyMaterial.objects.filter(key=key).order_by("version")
    KeyMaterial.objects.filter(pk=v2.pk).update(wrapped=bytes(v1.wrapped))
    with pytest.raises(InternalError):
        material_unwrap(KeyMaterial.objects.get(pk=v2.pk))


# -- Refused: another account --------------------------------------------------------------------------

DENIED: dict[str, Callable[[Caller, Key, bytes], Any]] = {
    "DescribeKey": lambda c, k, b: svc.key_describe(caller=c, key=k),
    "UpdateKeyDescription": lambda c, k, b: svc.key_update_description(caller=c, key=k, description="pwned"),
    "EnableKey": lambda c, k, b: svc.key_enable(caller=c, key=k),
    "DisableKey": lambda c, k, b: svc.key_disable(caller=c, key=k),
    "ScheduleKeyDeletion": lambda c, k, b: svc.key_schedule_deletion(caller=c, key=k, pending_window_days=7),
    "CancelKeyDeletion": lambda c, k, b: svc.key_cancel_deletion(caller=c, key=k),
    "Encrypt": lambda c, k, b: svc.key_encrypt(caller=c, key=k, plaintext=b"x"),
    "Decrypt": lambda c, k, b: svc.key_decrypt(caller=c, ciphertext=b),
    "GenerateDataKey": lambda c, k, b: svc.key_generate_data_key(caller=c, key=k, key_spec="AES_256"),
    "GenerateDataKeyWithoutPlaintext": lambda c, k, b: svc.key_generate_data_key(
        caller=c, key=k, key_spec="AES_256", with_plaintext=False
    ),
    "CreateAlias": lambda c, k, b: svc.alias_create(caller=c, name="alias/stolen", key=k),
    "TagResource": lambda c, k, b: svc.key_tag(caller=c, key=k, tags=[{"TagKey": "team", "TagValue": "pwned"}]),
    "UntagResource": lambda c, k, b: svc.key_untag(caller=c, key=k, tag_keys=["team"]),
    "ListResourceTags": lambda c, k, b: svc.key_list_tags(caller=c, key=k),
    "EnableKeyRotation": lambda c, k, b: svc.key_enable_rotation(caller=c, key=k),
    "DisableKeyRotation": lambda c, k, b: svc.key_disable_rotation(caller=c, key=k),
    "GetKeyRotationStatus": lambda c, k, b: svc.key_rotation_status(caller=c, key=k),
    "RotateKeyOnDemand": lambda c, k, b: svc.key_rotate(caller=c, key=k, rotation_type=RotationType.ON_DEMAND),
    "ListKeyRotations": lambda c, k, b: svc.key_list_rotations(caller=c, key=k),
}


@pytest.mark.parametrize("event_name", sorted(DENIED))
def test_it_refuses_another_accounts_principal(admin: Caller, key: Key, outsider: Persona, event_name: str) -> None:
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"theirs").ciphertext
    svc.alias_create(caller=admin, name="alias/orders", key=key)
    if event_name == "CancelKeyDeletion":
        svc.key_schedule_deletion(caller=admin, key=key, pending_window_days=7)
    if event_name == "DisableKeyRotation":
        svc.key_enable_rotation(caller=admin, key=key)
    key = fresh(key)
    before, counts = state_of(key), row_counts()
    caller = outsider.caller()
    with one_event(event_name, caller, keys=[key], error="AccessDeniedException") as rec:
        with pytest.raises(AccessDenied) as raised:
            DENIED[event_name](caller, key, blob)
    assert state_of(key) == before
    assert row_counts() == counts
    assert outsider.principal.arn in raised.value.message and key.arn in raised.value.message
    assert rec.event.recipient_account_id == outsider.account_id
    # The denial keeps the engine's decision: nothing allows another account.
    decision = rec.event.additional_event_data["decision"]
    assert decision["allowed"] is False and decision["reason"] == "implicit-deny"


def test_it_refuses_to_reencrypt_into_another_accounts_key(
    admin: Caller, key: Key, outsider: Persona, make_key: Callable[..., Key]
) -> None:
    theirs = make_key(outsider)
    caller = outsider.caller()
    blob = svc.key_encrypt(caller=caller, key=theirs, plaintext=b"x").ciphertext
    with one_event("ReEncrypt", caller, keys=[theirs, key], error="AccessDeniedException"):
        with pytest.raises(AccessDenied):
            svc.key_reencrypt(caller=caller, ciphertext=blob, destination_key=key)


def test_it_refuses_to_reencrypt_from_another_accounts_key(
    admin: Caller, key: Key, outsider: Persona, make_key: Callable[..., Key]
) -> None:
    theirs = make_key(outsider)
    caller = outsider.caller()
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"x").ciphertext
    with one_event("ReEncrypt", caller, keys=[key], error="AccessDeniedException"):
        with pytest.raises(AccessDenied):
            svc.key_reencrypt(caller=caller, ciphertext=blob, destination_key=theirs)


def test_it_refuses_another_accounts_alias_pointing_at_my_key(
    admin: Caller, key: Key, outsider: Persona, make_key: Callable[..., Key]
) -> None:
    theirs = make_key(outsider)
    caller = outsider.caller()
    svc.alias_create(caller=caller, name="alias/mine", key=theirs)
    with one_event("UpdateAlias", caller, keys=[key, theirs], error="AccessDeniedException"):
        with pytest.raises(AccessDenied):
            svc.alias_update(caller=caller, name="alias/mine", key=key)
    assert Alias.objects.get(name="alias/mine").key_id == theirs.id


# -- Refused: the key's state -----------------------------------------------------------------------------

STATE_REFUSALS: list[tuple[str, str, type[KmsError], Callable[[Caller, Key, bytes], Any]]] = [
    ("disabled", "Encrypt", Disabled, DENIED["Encrypt"]),
    ("disabled", "Decrypt", Disabled, DENIED["Decrypt"]),
    ("disabled", "GenerateDataKey", Disabled, DENIED["GenerateDataKey"]),
    ("disabled", "EnableKeyRotation", Disabled, DENIED["EnableKeyRotation"]),
    ("disabled", "RotateKeyOnDemand", Disabled, DENIED["RotateKeyOnDemand"]),
    ("disabled", "CancelKeyDeletion", InvalidState, DENIED["CancelKeyDeletion"]),
    ("pending", "Encrypt", InvalidState, DENIED["Encrypt"]),
    ("pending", "Decrypt", InvalidState, DENIED["Decrypt"]),
    ("pending", "GenerateDataKeyWithoutPlaintext", InvalidState, DENIED["GenerateDataKeyWithoutPlaintext"]),
    ("pending", "UpdateKeyDescription", InvalidState, DENIED["UpdateKeyDescription"]),
    ("pending", "EnableKey", InvalidState, DENIED["EnableKey"]),
    ("pending", "DisableKey", InvalidState, DENIED["DisableKey"]),
    ("pending", "ScheduleKeyDeletion", InvalidState, DENIED["ScheduleKeyDeletion"]),
    ("pending", "CreateAlias", InvalidState, DENIED["CreateAlias"]),
    ("pending", "TagResource", InvalidState, DENIED["TagResource"]),
    ("pending", "UntagResource", InvalidState, DENIED["UntagResource"]),
    ("pending", "EnableKeyRotation", InvalidState, DENIED["EnableKeyRotation"]),
    ("pending", "RotateKeyOnDemand", InvalidState, DENIED["RotateKeyOnDemand"]),
]


@pytest.mark.parametrize(
    ("state", "event_name", "error", "call"), STATE_REFUSALS, ids=[f"{s}-{n}" for s, n, _, _ in STATE_REFUSALS]
)
def test_it_refuses_an_operation_the_key_state_forbids(
    admin: Caller,
    key: Key,
    state: str,
    event_name: str,
    error: type[KmsError],
    call: Callable[[Caller, Key, bytes], Any],
) -> None:
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"before").ciphertext
    if state == "disabled":
        svc.key_disable(caller=admin, key=key)
    else:
        svc.key_schedule_deletion(caller=admin, key=key, pending_window_days=7)
    key = fresh(key)
    before, counts = state_of(key), row_counts()
    with one_event(event_name, admin, keys=[key], error=error.code):
        with pytest.raises(error):
            call(admin, key, blob)
    assert state_of(key) == before
    assert row_counts() == counts


def test_it_decrypts_again_once_a_disabled_key_is_enabled(admin: Caller, key: Key) -> None:
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"kept").ciphertext
    svc.key_disable(caller=admin, key=key)
    svc.key_enable(caller=admin, key=fresh(key))
    assert svc.key_decrypt(caller=admin, ciphertext=blob).plaintext == b"kept"


# -- Redaction --------------------------------------------------------------------------------------------


def _spellings(secret: bytes) -> set[str]:
    out = {
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
    }
    try:
        out.add(secret.decode("utf-8"))
    except UnicodeDecodeError:
        out.add(secret.decode("latin-1"))
    return out


def test_it_never_audits_plaintexts_data_keys_or_ciphertexts(
    key_admin: Persona, admin: Caller, key: Key, make_key: Callable[..., Key]
) -> None:
    other = make_key()
    secrets: list[bytes] = [key_admin.secret.encode()]
    text = b"redaction-canary-plaintext-0001"
    binary = os.urandom(64)
    secrets += [text, binary]
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=text, context={"purpose": "redaction"}).ciphertext
    blob2 = svc.key_encrypt(caller=admin, key=key, plaintext=binary).ciphertext
    secrets += [blob, blob2]
    svc.key_decrypt(caller=admin, ciphertext=blob, context={"purpose": "redaction"})
    svc.key_decrypt(caller=admin, ciphertext=blob2, key=key)
    moved, _ = svc.key_reencrypt(
        caller=admin, ciphertext=blob, destination_key=other, source_context={"purpose": "redaction"}
    )
    secrets.append(moved.ciphertext)
    for with_plaintext in (True, False):
        dk = svc.key_generate_data_key(caller=admin, key=key, key_spec="AES_256", with_plaintext=with_plaintext)
        secrets.append(dk.ciphertext)
        if dk.plaintext is not None:
            secrets.append(dk.plaintext)
    secrets.append(svc.random_generate(caller=admin, number_of_bytes=48))
    # Failures carry messages: they must not echo what they were given.
    tampered = bytearray(blob)
    tampered[40] ^= 1
    secrets.append(bytes(tampered))
    for attempt in (
        lambda: svc.key_decrypt(caller=admin, ciphertext=bytes(tampered), context={"purpose": "redaction"}),
        lambda: svc.key_decrypt(caller=admin, ciphertext=blob, context={"purpose": "wrong"}),
        lambda: svc.key_encrypt(caller=admin, key=key, plaintext=text * 200),
        lambda: svc.key_encrypt(caller=admin, key=key, plaintext=text, dry_run=True),
        lambda: svc.key_decrypt(caller=admin, ciphertext=b"\x01" + text + bytes(40)),
    ):
        with pytest.raises(KmsError):
            attempt()
    rows = list(AuditEvent.objects.values())
    assert len(rows) > 12
    dump = json.dumps(rows, default=str, ensure_ascii=False)
    for secret in secrets:
        for spelling in _spellings(secret):
            assert spelling not in dump, f"{spelling[:12]}... found in the audit trail"
    # Contexts are recorded (CloudTrail does), which is why no secret may go in one.
    assert '"purpose": "redaction"' in dump
