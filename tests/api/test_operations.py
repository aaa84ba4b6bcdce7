"""boto3 against a live kmsweb: every implemented operation's happy path.

Each test checks the state the operation leaves behind (in its response and
in a follow-up DescribeKey/List call), not just that boto3 raised nothing.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

# The server and the test share one clock; this only absorbs the time the
# calls themselves take.
CLOCK_SLACK = timedelta(minutes=2)


def assert_about(when: datetime, expected: datetime) -> None:
    assert abs(when - expected) < CLOCK_SLACK, f"{when} is not about {expected}"


def new_key(kms: Any, **kwargs: Any) -> str:
    return kms.create_key(**kwargs)["KeyMetadata"]["KeyId"]


def describe(kms: Any, key_ref: str) -> dict[str, Any]:
    return kms.describe_key(KeyId=key_ref)["KeyMetadata"]


def test_it_creates_a_key_with_description_tags_and_policy(kms, key_admin) -> None:
    account = key_admin.account_id
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "root",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    )
    before = datetime.now(UTC)
    meta = kms.create_key(
        Description="payments",
        Policy=policy,
        Tags=[{"TagKey": "team", "TagValue": "billing"}, {"TagKey": "env", "TagValue": "prod"}],
    )["KeyMetadata"]
    key_id = meta["KeyId"]

    assert meta["Arn"] == f"arn:aws:kms:us-east-1:{account}:key/{key_id}"
    assert meta["AWSAccountId"] == account
    assert meta["Description"] == "payments"
    assert meta["KeyState"] == "Enabled"
    assert meta["Enabled"] is True
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["KeySpec"] == meta["CustomerMasterKeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["KeyManager"] == "CUSTOMER"
    assert meta["Origin"] == "AWS_KMS"
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert meta["MultiRegion"] is False
    assert "DeletionDate" not in meta
    assert_about(meta["CreationDate"], before)
    assert meta["CurrentKeyMaterialId"]

    assert describe(kms, key_id) == meta
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [
        {"TagKey": "env", "TagValue": "prod"},
        {"TagKey": "team", "TagValue": "billing"},
    ]
    assert json.loads(kms.get_key_policy(KeyId=key_id)["Policy"]) == json.loads(policy)


def test_it_gives_a_key_without_policy_the_default_policy(kms, key_admin) -> None:
    key_id = new_key(kms)
    policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"AWS": f"arn:aws:iam::{key_admin.account_id}:root"}
    assert statement["Action"] == "kms:*"


def test_it_describes_a_key_by_id_arn_alias_name_and_alias_arn(kms) -> None:
    meta = kms.create_key(Description="four names")["KeyMetadata"]
    kms.create_alias(AliasName="alias/four-names", TargetKeyId=meta["KeyId"])
    alias_arn = meta["Arn"].rsplit(":", 1)[0] + ":alias/four-names"

    for ref in (meta["KeyId"], meta["Arn"], "alias/four-names", alias_arn):
        assert describe(kms, ref) == meta, ref


def test_it_pages_through_list_keys_seeing_every_key_once(kms) -> None:
    created = {new_key(kms) for _ in range(5)}

    seen: list[str] = []
    pages = []
    kwargs: dict[str, Any] = {"Limit": 2}
    while True:
        page = kms.list_keys(**kwargs)
        pages.append(page)
        seen += [k["KeyId"] for k in page["Keys"]]
        for k in page["Keys"]:
            assert k["KeyArn"].endswith(f":key/{k['KeyId']}")
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        kwargs["Marker"] = page["NextMarker"]

    assert [len(p["Keys"]) for p in pages] == [2, 2, 1]
    assert [p["Truncated"] for p in pages] == [True, True, False]
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == created
    # Without a Limit, one page holds them all.
    everything = kms.list_keys()
    assert {k["KeyId"] for k in everything["Keys"]} == created
    assert everything["Truncated"] is False


def test_it_lists_only_the_callers_account(kms, kms_client, outsider) -> None:
    mine = new_key(kms)
    theirs = new_key(kms_client(outsider))
    listed = {k["KeyId"] for k in kms.list_keys()["Keys"]}
    assert mine in listed
    assert theirs not in listed


def test_it_updates_the_description(kms) -> None:
    key_id = new_key(kms, Description="old")
    kms.update_key_description(KeyId=key_id, Description="new")
    assert describe(kms, key_id)["Description"] == "new"
    kms.update_key_description(KeyId=key_id, Description="")
    assert describe(kms, key_id)["Description"] == ""


def test_it_disables_and_enables_a_key(kms) -> None:
    key_id = new_key(kms)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]

    kms.disable_key(KeyId=key_id)
    meta = describe(kms, key_id)
    assert (meta["KeyState"], meta["Enabled"]) == ("Disabled", False)
    kms.disable_key(KeyId=key_id)  # idempotent
    assert describe(kms, key_id)["KeyState"] == "Disabled"

    kms.enable_key(KeyId=key_id)
    meta = describe(kms, key_id)
    assert (meta["KeyState"], meta["Enabled"]) == ("Enabled", True)
    kms.enable_key(KeyId=key_id)  # idempotent
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_it_schedules_deletion_for_thirty_days_by_default(kms) -> None:
    key_id = new_key(kms)
    arn = describe(kms, key_id)["Arn"]

    out = kms.schedule_key_deletion(KeyId=key_id)
    assert out["KeyId"] == arn
    assert out["KeyState"] == "PendingDeletion"
    assert out["PendingWindowInDays"] == 30
    assert_about(out["DeletionDate"], datetime.now(UTC) + timedelta(days=30))

    meta = describe(kms, key_id)
    assert (meta["KeyState"], meta["Enabled"]) == ("PendingDeletion", False)
    assert meta["DeletionDate"] == out["DeletionDate"]


def test_it_schedules_deletion_for_seven_days_and_cancels_to_disabled(kms) -> None:
    key_id = new_key(kms)
    arn = describe(kms, key_id)["Arn"]

    out = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert out["PendingWindowInDays"] == 7
    assert_about(out["DeletionDate"], datetime.now(UTC) + timedelta(days=7))
    assert describe(kms, key_id)["KeyState"] == "PendingDeletion"

    assert kms.cancel_key_deletion(KeyId=key_id)["KeyId"] == arn
    meta = describe(kms, key_id)
    # AWS leaves a cancelled key Disabled, not Enabled.
    assert (meta["KeyState"], meta["Enabled"]) == ("Disabled", False)
    assert "DeletionDate" not in meta
    kms.enable_key(KeyId=key_id)
    assert describe(kms, key_id)["KeyState"] == "Enabled"


def test_it_re_encrypts_under_another_key_with_new_context(kms) -> None:
    source = describe(kms, new_key(kms))
    destination = describe(kms, new_key(kms))
    blob = kms.encrypt(KeyId=source["KeyId"], Plaintext=b"move me", EncryptionContext={"stage": "one"})[
        "CiphertextBlob"
    ]

    out = kms.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext={"stage": "one"},
        DestinationKeyId=destination["KeyId"],
        DestinationEncryptionContext={"stage": "two"},
    )
    assert out["SourceKeyId"] == source["Arn"]
    assert out["KeyId"] == destination["Arn"]
    assert out["SourceEncryptionAlgorithm"] == out["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert out["SourceKeyMaterialId"] == source["CurrentKeyMaterialId"]
    assert out["DestinationKeyMaterialId"] == destination["CurrentKeyMaterialId"]
    assert out["CiphertextBlob"] != blob

    opened = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"stage": "two"})
    assert opened["Plaintext"] == b"move me"
    assert opened["KeyId"] == destination["Arn"]
    # The destination blob is bound to the destination context, not the source one.
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"stage": "one"})


def test_it_re_encrypts_with_the_source_key_named(kms) -> None:
    source = describe(kms, new_key(kms))
    destination = new_key(kms)
    kms.create_alias(AliasName="alias/re-dest", TargetKeyId=destination)
    blob = kms.encrypt(KeyId=source["KeyId"], Plaintext=b"p")["CiphertextBlob"]
    out = kms.re_encrypt(CiphertextBlob=blob, SourceKeyId=source["Arn"], DestinationKeyId="alias/re-dest")
    assert out["SourceKeyId"] == source["Arn"]
    assert out["KeyId"].endswith(f":key/{destination}")
    assert kms.decrypt(CiphertextBlob=out["CiphertextBlob"], KeyId=destination)["Plaintext"] == b"p"


def test_it_generates_data_keys_by_size_and_spec(kms) -> None:
    meta = describe(kms, new_key(kms))
    key_id = meta["KeyId"]
    context = {"file": "report.pdf"}

    by_size = kms.generate_data_key(KeyId=key_id, NumberOfBytes=64, EncryptionContext=context)
    assert len(by_size["Plaintext"]) == 64
    assert by_size["KeyId"] == meta["Arn"]
    assert by_size["KeyMaterialId"] == meta["CurrentKeyMaterialId"]
    opened = kms.decrypt(CiphertextBlob=by_size["CiphertextBlob"], EncryptionContext=context)
    assert opened["Plaintext"] == by_size["Plaintext"]

    aes128 = kms.generate_data_key(KeyId=key_id, KeySpec="AES_128")
    assert len(aes128["Plaintext"]) == 16
    assert kms.decrypt(CiphertextBlob=aes128["CiphertextBlob"])["Plaintext"] == aes128["Plaintext"]
    assert aes128["Plaintext"] != by_size["Plaintext"][:16]


def test_it_generates_a_data_key_without_plaintext_that_decrypts(kms) -> None:
    meta = describe(kms, new_key(kms))
    out = kms.generate_data_key_without_plaintext(KeyId=meta["KeyId"], KeySpec="AES_256", EncryptionContext={"a": "b"})
    assert "Plaintext" not in out
    assert out["KeyId"] == meta["Arn"]
    data_key = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"a": "b"})["Plaintext"]
    assert len(data_key) == 32


def test_it_generates_random_bytes_of_the_requested_size(kms) -> None:
    for size in (1, 32, 1024):
        assert len(kms.generate_random(NumberOfBytes=size)["Plaintext"]) == size
    assert kms.generate_random(NumberOfBytes=32)["Plaintext"] != kms.generate_random(NumberOfBytes=32)["Plaintext"]


def test_it_creates_updates_lists_and_deletes_aliases(kms, key_admin) -> None:
    first = new_key(kms)
    second = new_key(kms)
    kms.create_alias(AliasName="alias/app/blue", TargetKeyId=first)
    kms.create_alias(AliasName="alias/app/green", TargetKeyId=first)
    kms.create_alias(AliasName="alias/other", TargetKeyId=second)

    listed = kms.list_aliases()
    assert listed["Truncated"] is False
    by_name = {a["AliasName"]: a for a in listed["Aliases"]}
    assert set(by_name) == {"alias/app/blue", "alias/app/green", "alias/other"}
    blue = by_name["alias/app/blue"]
    assert blue["AliasArn"] == f"arn:aws:kms:us-east-1:{key_admin.account_id}:alias/app/blue"
    assert blue["TargetKeyId"] == first
    assert blue["CreationDate"] <= blue["LastUpdatedDate"]

    of_first = kms.list_aliases(KeyId=first)["Aliases"]
    assert [a["AliasName"] for a in of_first] == ["alias/app/blue", "alias/app/green"]

    # Paging, one alias per page, each seen once.
    names: list[str] = []
    kwargs: dict[str, Any] = {"Limit": 1}
    while True:
        page = kms.list_aliases(**kwargs)
        assert len(page["Aliases"]) == 1
        names += [a["AliasName"] for a in page["Aliases"]]
        if not page["Truncated"]:
            break
        kwargs["Marker"] = page["NextMarker"]
    assert names == ["alias/app/blue", "alias/app/green", "alias/other"]

    kms.update_alias(AliasName="alias/app/green", TargetKeyId=second)
    assert describe(kms, "alias/app/green")["KeyId"] == second
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=second)["Aliases"]] == ["alias/app/green", "alias/other"]
    blob = kms.encrypt(KeyId="alias/app/green", Plaintext=b"g")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["KeyId"].endswith(second)

    kms.delete_alias(AliasName="alias/app/blue")
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=first)["Aliases"]] == []
    with pytest.raises(kms.exceptions.NotFoundException):
        describe(kms, "alias/app/blue")
    # The key stays; only the name went.
    assert describe(kms, first)["KeyState"] == "Enabled"


def test_it_tags_overwrites_and_untags(kms) -> None:
    key_id = new_key(kms, Tags=[{"TagKey": "env", "TagValue": "dev"}])

    kms.tag_resource(
        KeyId=key_id,
        Tags=[{"TagKey": "env", "TagValue": "prod"}, {"TagKey": "owner", "TagValue": "ana"}],
    )
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [
        {"TagKey": "env", "TagValue": "prod"},
        {"TagKey": "owner", "TagValue": "ana"},
    ]

    kms.untag_resource(KeyId=key_id, TagKeys=["env", "never-set"])
    out = kms.list_resource_tags(KeyId=key_id)
    assert out["Tags"] == [{"TagKey": "owner", "TagValue": "ana"}]
    assert out["Truncated"] is False

    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": f"k{i}", "TagValue": str(i)} for i in range(3)])
    first = kms.list_resource_tags(KeyId=key_id, Limit=2)
    assert first["Truncated"] is True
    rest = kms.list_resource_tags(KeyId=key_id, Limit=2, Marker=first["NextMarker"])
    assert rest["Truncated"] is False
    assert [t["TagKey"] for t in first["Tags"] + rest["Tags"]] == ["k0", "k1", "k2", "owner"]


def test_it_enables_reports_and_disables_rotation(kms) -> None:
    meta = describe(kms, new_key(kms))
    key_id = meta["KeyId"]

    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is False
    assert "NextRotationDate" not in status

    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=180)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True
    assert status["KeyId"] == meta["Arn"]
    assert status["RotationPeriodInDays"] == 180
    assert_about(status["NextRotationDate"], datetime.now(UTC) + timedelta(days=180))

    kms.disable_key_rotation(KeyId=key_id)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is False
    assert "NextRotationDate" not in status

    kms.enable_key_rotation(KeyId=key_id)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["RotationPeriodInDays"] == 365
    assert_about(status["NextRotationDate"], datetime.now(UTC) + timedelta(days=365))


def test_it_reports_automatic_rotations_by_the_job_like_aws(kms) -> None:
    """The rotation job's work as a client sees it: an AUTOMATIC ListKeyRotations
    entry, the next date one period on, old ciphertext still readable; an
    on-demand rotation afterwards is listed after it and moves no date."""
    from django.core.management import call_command

    from keys.models import Key

    key_id = new_key(kms)
    old_blob = kms.encrypt(KeyId=key_id, Plaintext=b"before")["CiphertextBlob"]
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    # The period has passed (the clock-controlled tests move time; here the date does).
    Key.objects.filter(pk=key_id).update(next_rotation_at=datetime.now(UTC) - timedelta(minutes=1))
    out = io.StringIO()
    call_command("run_job", "rotate_keys", stdout=out)
    assert out.getvalue().startswith("rotate_keys: rotated=1,")

    (automatic,) = kms.list_key_rotations(KeyId=key_id)["Rotations"]
    assert automatic["RotationType"] == "AUTOMATIC" and automatic["KeyMaterialState"] == "CURRENT"
    assert_about(automatic["RotationDate"], datetime.now(UTC))
    assert describe(kms, key_id)["CurrentKeyMaterialId"] == automatic["KeyMaterialId"]
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert_about(status["NextRotationDate"], datetime.now(UTC) + timedelta(days=90))
    assert kms.decrypt(CiphertextBlob=old_blob)["Plaintext"] == b"before"

    kms.rotate_key_on_demand(KeyId=key_id)
    listed = kms.list_key_rotations(KeyId=key_id)["Rotations"]
    assert [(r["RotationType"], r["KeyMaterialState"]) for r in listed] == [
        ("AUTOMATIC", "NON_CURRENT"),
        ("ON_DEMAND", "CURRENT"),
    ]
    assert kms.get_key_rotation_status(KeyId=key_id)["NextRotationDate"] == status["NextRotationDate"]


def test_it_rotates_on_demand_and_keeps_old_ciphertexts_readable(kms) -> None:
    meta = describe(kms, new_key(kms))
    key_id = meta["KeyId"]
    original_material = meta["CurrentKeyMaterialId"]
    old_blob = kms.encrypt(KeyId=key_id, Plaintext=b"before", EncryptionContext={"v": "1"})["CiphertextBlob"]
    assert kms.list_key_rotations(KeyId=key_id)["Rotations"] == []

    assert kms.rotate_key_on_demand(KeyId=key_id)["KeyId"] == meta["Arn"]
    assert kms.rotate_key_on_demand(KeyId=key_id)["KeyId"] == meta["Arn"]

    rotations = kms.list_key_rotations(KeyId=key_id)
    assert rotations["Truncated"] is False
    entries = rotations["Rotations"]
    assert [r["RotationType"] for r in entries] == ["ON_DEMAND", "ON_DEMAND"]
    assert [r["KeyMaterialState"] for r in entries] == ["NON_CURRENT", "CURRENT"]
    assert all(r["KeyId"] == key_id for r in entries)
    for r in entries:
        assert_about(r["RotationDate"], datetime.now(UTC))
    newest_material = entries[-1]["KeyMaterialId"]
    assert len({original_material, *(r["KeyMaterialId"] for r in entries)}) == 3
    assert describe(kms, key_id)["CurrentKeyMaterialId"] == newest_material

    # ALL_KEY_MATERIAL adds the initial material, first.
    everything = kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    assert [r["KeyMaterialId"] for r in everything] == [original_material] + [r["KeyMaterialId"] for r in entries]
    paged = kms.list_key_rotations(KeyId=key_id, Limit=1)
    assert paged["Truncated"] is True
    rest = kms.list_key_rotations(KeyId=key_id, Limit=1, Marker=paged["NextMarker"])
    assert [r["KeyMaterialId"] for r in paged["Rotations"] + rest["Rotations"]] == [r["KeyMaterialId"] for r in entries]

    old = kms.decrypt(CiphertextBlob=old_blob, EncryptionContext={"v": "1"})
    assert old["Plaintext"] == b"before"
    assert old["KeyMaterialId"] == original_material

    new_blob = kms.encrypt(KeyId=key_id, Plaintext=b"after")["CiphertextBlob"]
    new = kms.decrypt(CiphertextBlob=new_blob)
    assert new["Plaintext"] == b"after"
    assert new["KeyMaterialId"] == newest_material != old["KeyMaterialId"]

    # On-demand rotation leaves the automatic schedule alone.
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False


def test_it_decrypts_with_the_right_key_id_given_in_any_form(kms) -> None:
    meta = describe(kms, new_key(kms))
    kms.create_alias(AliasName="alias/named", TargetKeyId=meta["KeyId"])
    blob = kms.encrypt(KeyId=meta["Arn"], Plaintext=b"named", EncryptionContext={"k": "v"})["CiphertextBlob"]
    for ref in (meta["KeyId"], meta["Arn"], "alias/named"):
        out = kms.decrypt(CiphertextBlob=blob, KeyId=ref, EncryptionContext={"k": "v"})
        assert out["Plaintext"] == b"named"
        assert out["KeyId"] == meta["Arn"]
        assert out["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
        assert out["KeyMaterialId"] == meta["CurrentKeyMaterialId"]
