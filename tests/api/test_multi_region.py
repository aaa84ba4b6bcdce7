"""Multi-Region keys over the wire: boto3 clients of two regions against one live kmsweb."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import REGION, Persona

pytestmark = pytest.mark.django_db(transaction=True)

EU = "eu-west-1"
AP = "ap-southeast-2"


def error_code(raised: pytest.ExceptionInfo[ClientError]) -> str:
    return str(raised.value.response["Error"]["Code"])


@pytest.fixture
def us(kms_client: Callable[..., Any], key_admin: Persona) -> Any:
    return kms_client(key_admin)


@pytest.fixture
def eu(kms_client: Callable[..., Any], key_admin: Persona) -> Any:
    return kms_client(key_admin, region=EU)


def test_replicate_then_decrypt_in_the_other_region(us: Any, eu: Any, key_admin: Persona) -> None:
    created = us.create_key(MultiRegion=True, Description="orders")["KeyMetadata"]
    key_id = created["KeyId"]
    assert key_id.startswith("mrk-") and len(key_id) == 36
    assert created["MultiRegion"] is True
    assert created["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY"

    answer = us.replicate_key(
        KeyId=key_id, ReplicaRegion=EU, Description="orders (eu)", Tags=[{"TagKey": "team", "TagValue": "eu"}]
    )
    replica = answer["ReplicaKeyMetadata"]
    replica_arn = f"arn:aws:kms:{EU}:{key_admin.account_id}:key/{key_id}"
    assert (replica["KeyId"], replica["Arn"], replica["Description"]) == (key_id, replica_arn, "orders (eu)")
    assert replica["KeyState"] == "Enabled"
    assert replica["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "REPLICA",
        "PrimaryKey": {"Arn": created["Arn"], "Region": REGION},
        "ReplicaKeys": [{"Arn": replica_arn, "Region": EU}],
    }
    assert answer["ReplicaTags"] == [{"TagKey": "team", "TagValue": "eu"}]
    assert '"kms:*"' in answer["ReplicaPolicy"]
    # Own description and tags per region; the same key id in both.
    assert us.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "orders"
    assert us.list_resource_tags(KeyId=key_id)["Tags"] == []
    assert eu.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"] == replica_arn
    assert {"KeyId": key_id, "KeyArn": replica_arn} in eu.list_keys()["Keys"]

    blob = us.encrypt(KeyId=key_id, Plaintext=b"across", EncryptionContext={"app": "orders"})["CiphertextBlob"]
    opened = eu.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "orders"})
    assert (opened["Plaintext"], opened["KeyId"]) == (b"across", replica_arn)
    assert eu.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionContext={"app": "orders"})["Plaintext"] == b"across"
    back = eu.encrypt(KeyId=replica_arn, Plaintext=b"back")["CiphertextBlob"]
    assert us.decrypt(CiphertextBlob=back)["Plaintext"] == b"back"
    # The wrong context still fails in the other region.
    with pytest.raises(ClientError) as raised:
        eu.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "other"})
    assert error_code(raised) == "InvalidCiphertextException"

    # Rotating the primary gives the replica the new version: new ciphertext still opens there.
    us.rotate_key_on_demand(KeyId=key_id)
    rotations = eu.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    assert len(rotations) == 2
    newer = us.encrypt(KeyId=key_id, Plaintext=b"v2")["CiphertextBlob"]
    assert eu.decrypt(CiphertextBlob=newer)["Plaintext"] == b"v2"
    with pytest.raises(ClientError) as raised:
        eu.rotate_key_on_demand(KeyId=key_id)
    assert error_code(raised) == "UnsupportedOperationException"


def test_update_primary_region_and_deletion_rules(us: Any, eu: Any) -> None:
    key_id = us.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    us.replicate_key(KeyId=key_id, ReplicaRegion=EU)
    assert us.update_primary_region(KeyId=key_id, PrimaryRegion=EU)["ResponseMetadata"]["HTTPStatusCode"] == 200
    in_us = us.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
    in_eu = eu.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
    assert (in_us["MultiRegionKeyType"], in_eu["MultiRegionKeyType"]) == ("REPLICA", "PRIMARY")
    assert in_us["PrimaryKey"]["Region"] == in_eu["PrimaryKey"]["Region"] == EU
    # Only the primary's region may move it again.
    with pytest.raises(ClientError) as raised:
        us.update_primary_region(KeyId=key_id, PrimaryRegion=EU)
    assert error_code(raised) == "UnsupportedOperationException"

    # The primary (now in eu) waits for its replica (in us) before its own window starts.
    scheduled = eu.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert scheduled["KeyState"] == "PendingReplicaDeletion" and "DeletionDate" not in scheduled
    meta = eu.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["KeyState"], meta["PendingDeletionWindowInDays"]) == ("PendingReplicaDeletion", 7)
    with pytest.raises(ClientError) as raised:
        eu.encrypt(KeyId=key_id, Plaintext=b"x")
    assert error_code(raised) == "KMSInvalidStateException"
    assert us.encrypt(KeyId=key_id, Plaintext=b"x")["KeyId"].startswith(f"arn:aws:kms:{REGION}:")
    # A replica is scheduled with its own window at once.
    assert us.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)["KeyState"] == "PendingDeletion"
    assert eu.cancel_key_deletion(KeyId=key_id)["KeyId"].startswith(f"arn:aws:kms:{EU}:")
    assert eu.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


ERRORS: list[tuple[Callable[..., Any], str]] = [
    # A second replica in a region that has one.
    (lambda us, eu, k, single: us.replicate_key(KeyId=k, ReplicaRegion=EU), "AlreadyExistsException"),
    # Into the primary's own region, or a name that is no region.
    (lambda us, eu, k, single: us.replicate_key(KeyId=k, ReplicaRegion=REGION), "ValidationException"),
    (lambda us, eu, k, single: us.replicate_key(KeyId=k, ReplicaRegion="moon-base-one"), "ValidationException"),
    # A replica, or a single-Region key, cannot be replicated.
    (lambda us, eu, k, single: eu.replicate_key(KeyId=k, ReplicaRegion=AP), "UnsupportedOperationException"),
    (lambda us, eu, k, single: us.replicate_key(KeyId=single, ReplicaRegion=EU), "UnsupportedOperationException"),
    # An id that names no key, an alias (ReplicateKey takes key ids and ARNs only), an ARN of another region.
    (
        lambda us, eu, k, single: us.replicate_key(KeyId="mrk-00000000000000000000000000000000", ReplicaRegion=AP),
        "NotFoundException",
    ),
    (lambda us, eu, k, single: us.replicate_key(KeyId="alias/orders", ReplicaRegion=AP), "NotFoundException"),
    # No replica in that region to promote.
    (lambda us, eu, k, single: us.update_primary_region(KeyId=k, PrimaryRegion=AP), "NotFoundException"),
    (
        lambda us, eu, k, single: us.update_primary_region(KeyId=single, PrimaryRegion=EU),
        "UnsupportedOperationException",
    ),
    # Rotation settings belong to the primary.
    (lambda us, eu, k, single: eu.enable_key_rotation(KeyId=k), "UnsupportedOperationException"),
]


def test_multi_region_errors(us: Any, eu: Any) -> None:
    key_id = us.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    us.create_alias(AliasName="alias/orders", TargetKeyId=key_id)
    single = us.create_key()["KeyMetadata"]["KeyId"]
    us.replicate_key(KeyId=key_id, ReplicaRegion=EU)
    for number, (call, code) in enumerate(ERRORS):
        with pytest.raises(ClientError) as raised:
            call(us, eu, key_id, single)
        assert (number, error_code(raised)) == (number, code)
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Nothing changed: still one primary here and one replica in eu.
    config = us.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
    assert (config["MultiRegionKeyType"], [r["Region"] for r in config["ReplicaKeys"]]) == ("PRIMARY", [EU])


def test_a_disabled_primary_is_not_replicated(us: Any) -> None:
    key_id = us.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    us.disable_key(KeyId=key_id)
    with pytest.raises(ClientError) as raised:
        us.replicate_key(KeyId=key_id, ReplicaRegion=EU)
    assert error_code(raised) == "DisabledException"
