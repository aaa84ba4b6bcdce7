"""Multi-Region keys: CreateKey MultiRegion, ReplicateKey, UpdatePrimaryRegion,
rotation shared with replicas, cross-region decryption and the deletion rules."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection

from audit.models import AuditEvent
from keys import crypto, selectors
from keys import services as svc
from keys.models import Key, KeyMaterial, KeyState, RotationType, Tag
from keys.services import multi_region
from keys.services.importing import FINGERPRINT_PURPOSE, TOKEN_PURPOSE
from keys.services.jobs import keys_delete_expired, keys_rotate_due
from keys.services.material import material_unwrap
from keys.services.platform import platform_key_get_or_create
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    AccessDenied,
    AlreadyExists,
    Disabled,
    IncorrectKeyMaterial,
    InvalidCiphertext,
    InvalidState,
    MalformedPolicyDocument,
    NotFound,
    UnsupportedOperation,
    ValidationError,
)
from tests.conftest import REGION, Persona
from tests.keys.test_services_import import do_import

pytestmark = pytest.mark.django_db

EU = "eu-west-1"
AP = "ap-southeast-2"
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def admin(key_admin: Persona) -> Caller:
    return key_admin.caller()


@pytest.fixture
def admin_eu(key_admin: Persona) -> Caller:
    return key_admin.caller(region=EU)


@pytest.fixture
def primary(admin: Caller) -> Key:
    return svc.key_create(caller=admin, description="orders", multi_region=True)


def events_since(mark: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(id__gt=mark).order_by("id"))


def mark() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def fresh(key: Key) -> Key:
    return Key.objects.select_related("current_material").get(pk=key.pk)


def materials(key: Key) -> list[tuple[int, str, bytes]]:
    return [(m.version, m.material_id, material_unwrap(m)) for m in KeyMaterial.objects.filter(key=key)]


# -- CreateKey MultiRegion ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "usage"),
    [
        (None, None),
        ("RSA_2048", "ENCRYPT_DECRYPT"),
        ("ECC_NIST_P256", "SIGN_VERIFY"),
        ("HMAC_256", "GENERATE_VERIFY_MAC"),
    ],
)
def test_it_creates_a_multi_region_primary_key_with_an_mrk_id(admin: Caller, spec: str, usage: str) -> None:
    key = svc.key_create(caller=admin, key_spec=spec, key_usage=usage, multi_region=True)
    assert key.key_id == f"mrk-{key.id.hex}"
    assert key.arn == f"arn:aws:kms:{REGION}:{admin.account_id}:key/{key.key_id}"
    meta = svc.key_describe(caller=admin, key=selectors.key_get_for(caller=admin, key_ref=key.key_id))
    assert meta["KeyId"] == key.key_id and meta["MultiRegion"] is True
    assert meta["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "PRIMARY",
        "PrimaryKey": {"Arn": key.arn, "Region": REGION},
        "ReplicaKeys": [],
    }
    # The key ARN names it too; a single-Region key says MultiRegion false and has no configuration.
    assert selectors.key_get_for(caller=admin, key_ref=key.arn).pk == key.pk
    single = svc.key_describe(caller=admin, key=svc.key_create(caller=admin))
    assert single["MultiRegion"] is False and "MultiRegionConfiguration" not in single


def test_it_lists_multi_region_keys_by_their_mrk_id(admin: Caller, primary: Key) -> None:
    listed = svc.key_list(caller=admin)["Keys"]
    assert {"KeyId": primary.key_id, "KeyArn": primary.arn} in listed


@pytest.mark.parametrize("ref", ["mrk-0123456789abcdef0123456789abcdef", "mrk-XYZ", "mrk-0123"])
def test_it_does_not_find_an_unknown_or_malformed_mrk_id(admin: Caller, primary: Key, ref: str) -> None:
    with pytest.raises(NotFound):
        selectors.key_get_for(caller=admin, key_ref=ref)


# -- ReplicateKey -------------------------------------------------------------------------


def test_it_replicates_a_primary_key_with_its_material_and_its_own_properties(
    admin: Caller, admin_eu: Caller, primary: Key
) -> None:
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{admin.account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
            ],
        }
    )
    before = mark()
    replica = svc.key_replicate(
        caller=admin,
        key=primary,
        replica_region=EU,
        description="orders in Ireland",
        policy=policy,
        tags=[{"TagKey": "region", "TagValue": "eu"}],
    )
    replica = fresh(replica)
    assert (replica.region, replica.key_id, replica.multi_region_type) == (EU, primary.key_id, "REPLICA")
    assert replica.pk != primary.pk
    assert replica.arn == f"arn:aws:kms:{EU}:{admin.account_id}:key/{primary.key_id}"
    assert (replica.description, replica.policy, replica.state) == ("orders in Ireland", policy, KeyState.ENABLED)
    assert list(Tag.objects.filter(key=replica).values_list("tag_key", "tag_value")) == [("region", "eu")]
    assert not Tag.objects.filter(key=primary).exists()
    # The same material under the same id, wrapped for the replica's own row.
    assert materials(replica) == materials(primary)
    assert bytes(replica.current_material.wrapped) != bytes(fresh(primary).current_material.wrapped)
    # ReplicateKey in the primary's region, CreateKey in the replica's.
    events = events_since(before)
    assert [(e.event_name, e.aws_region, e.error_code) for e in events] == [
        ("CreateKey", EU, ""),
        ("ReplicateKey", REGION, ""),
    ]
    assert events[0].key_id == str(replica.id)
    assert [r["ARN"] for r in events[1].resources] == [primary.arn, replica.arn]
    # Each side describes both.
    for caller, key in ((admin, primary), (admin_eu, replica)):
        meta = svc.key_describe(caller=caller, key=selectors.key_get_for(caller=caller, key_ref=primary.key_id))
        assert meta["Arn"] == key.arn
        assert meta["MultiRegionConfiguration"]["PrimaryKey"] == {"Arn": primary.arn, "Region": REGION}
        assert meta["MultiRegionConfiguration"]["ReplicaKeys"] == [{"Arn": replica.arn, "Region": EU}]
    assert svc.key_describe(caller=admin_eu, key=replica)["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"


def test_it_gives_a_replica_the_default_policy(admin: Caller, primary: Key) -> None:
    replica = svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    assert json.loads(replica.policy)["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{admin.account_id}:root"}


def test_it_decrypts_in_one_region_what_a_related_key_encrypted_in_another(
    admin: Caller, admin_eu: Caller, primary: Key
) -> None:
    replica = svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    sealed = svc.key_encrypt(caller=admin, key=primary, plaintext=b"hello", context={"app": "orders"})
    opened = svc.key_decrypt(caller=admin_eu, ciphertext=sealed.ciphertext, context={"app": "orders"})
    assert (opened.plaintext, opened.key.pk) == (b"hello", replica.pk)
    back = svc.key_encrypt(caller=admin_eu, key=fresh(replica), plaintext=b"back")
    assert svc.key_decrypt(caller=admin, ciphertext=back.ciphertext).plaintext == b"back"
    # Naming the related key of the caller's region as KeyId is right; another key is not.
    assert (
        svc.key_decrypt(
            caller=admin_eu, ciphertext=sealed.ciphertext, context={"app": "orders"}, key=fresh(replica)
        ).plaintext
        == b"hello"
    )
    # A region with no related key cannot decrypt it.
    with pytest.raises(InvalidCiphertext):
        svc.key_decrypt(caller=dataclasses.replace(admin, region=AP), ciphertext=sealed.ciphertext)


def test_it_does_not_decrypt_a_single_region_key_s_ciphertext_in_another_region(
    admin: Caller, admin_eu: Caller
) -> None:
    key = svc.key_create(caller=admin)
    sealed = svc.key_encrypt(caller=admin, key=key, plaintext=b"hello")
    with pytest.raises(InvalidCiphertext):
        svc.key_decrypt(caller=admin_eu, ciphertext=sealed.ciphertext)


def test_it_refuses_a_second_replica_in_the_same_region(admin: Caller, primary: Key) -> None:
    svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    before = mark()
    with pytest.raises(AlreadyExists):
        svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    assert [(e.event_name, e.error_code) for e in events_since(before)] == [("ReplicateKey", "AlreadyExistsException")]
    assert Key.objects.filter(multi_region_id=primary.multi_region_id).count() == 2


@pytest.mark.parametrize(
    ("region", "error"),
    [(REGION, ValidationError), ("not a region", ValidationError), ("EU-WEST-1", ValidationError)],
)
def test_it_refuses_a_bad_replica_region(admin: Caller, primary: Key, region: str, error: type[Exception]) -> None:
    before = mark()
    with pytest.raises(error):
        svc.key_replicate(caller=admin, key=primary, replica_region=region)
    assert [e.event_name for e in events_since(before)] == ["ReplicateKey"]
    assert Key.objects.filter(multi_region_id=primary.multi_region_id).count() == 1


def test_it_replicates_only_into_the_regions_kmsweb_serves(admin: Caller, primary: Key, settings: Any) -> None:
    settings.KMSWEB_REGIONS = [REGION, EU]
    with pytest.raises(ValidationError, match="not a region this kmsweb serves"):
        svc.key_replicate(caller=admin, key=primary, replica_region=AP)
    assert svc.key_replicate(caller=admin, key=primary, replica_region=EU).region == EU


def test_it_replicates_only_multi_region_primary_keys(admin: Caller, admin_eu: Caller, primary: Key) -> None:
    with pytest.raises(UnsupportedOperation, match="not a multi-Region key"):
        svc.key_replicate(caller=admin, key=svc.key_create(caller=admin), replica_region=EU)
    replica = svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    with pytest.raises(UnsupportedOperation, match="replica key"):
        svc.key_replicate(caller=admin_eu, key=replica, replica_region=AP)


def test_it_does_not_replicate_a_disabled_or_deleting_primary(admin: Caller, primary: Key) -> None:
    svc.key_disable(caller=admin, key=primary)
    with pytest.raises(Disabled):
        svc.key_replicate(caller=admin, key=fresh(primary), replica_region=EU)
    svc.key_schedule_deletion(caller=admin, key=fresh(primary), pending_window_days=7)
    with pytest.raises(InvalidState):
        svc.key_replicate(caller=admin, key=fresh(primary), replica_region=EU)
    assert Key.objects.filter(multi_region_id=primary.multi_region_id).count() == 1


def test_it_checks_the_replica_policy_like_create_key(admin: Caller, primary: Key) -> None:
    with pytest.raises(MalformedPolicyDocument):
        svc.key_replicate(caller=admin, key=primary, replica_region=EU, policy="{not json")
    # A policy that would lock the caller out of the replica is refused unless bypassed.
    lockout = _policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{admin.account_id}:user/someone-else"},
            "Action": "kms:*",
            "Resource": "*",
        }
    )
    with pytest.raises(MalformedPolicyDocument, match="will not allow you"):
        svc.key_replicate(caller=admin, key=primary, replica_region=EU, policy=lockout)
    assert Key.objects.filter(multi_region_id=primary.multi_region_id).count() == 1


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_it_needs_create_key_in_the_replica_region(make_persona: Any, primary: Key) -> None:
    """kms:ReplicateKey on the primary is not enough: kms:CreateKey must be allowed in the replica region."""
    allow_all_but_eu_create = _policy(
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "kms:CreateKey", "Resource": f"arn:aws:kms:{EU}:*:*"},
    )
    bob = make_persona("bob", policy=allow_all_but_eu_create)
    caller = bob.caller()
    before = mark()
    with pytest.raises(AccessDenied, match="kms:CreateKey"):
        svc.key_replicate(caller=caller, key=primary, replica_region=EU)
    assert [(e.event_name, e.error_code) for e in events_since(before)] == [("ReplicateKey", "AccessDeniedException")]
    assert svc.key_replicate(caller=caller, key=primary, replica_region=AP).region == AP


def test_it_needs_replicate_key_on_the_primary(make_persona: Any, primary: Key) -> None:
    no_replicate = _policy(
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "kms:ReplicateKey", "Resource": "*"},
    )
    caller = make_persona("carol", policy=no_replicate).caller()
    with pytest.raises(AccessDenied, match="kms:ReplicateKey"):
        svc.key_replicate(caller=caller, key=primary, replica_region=EU)
    assert Key.objects.filter(multi_region_id=primary.multi_region_id).count() == 1


# -- Rotation -----------------------------------------------------------------------------


def test_rotating_the_primary_hands_the_new_material_to_its_replicas(
    admin: Caller, admin_eu: Caller, primary: Key
) -> None:
    replica = svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    svc.key_rotate(caller=admin, key=primary, rotation_type=RotationType.ON_DEMAND)
    assert [m[:2] for m in materials(replica)] == [m[:2] for m in materials(primary)]
    assert len(materials(replica)) == 2
    assert fresh(replica).current_material.material_id == fresh(primary).current_material.material_id
    # New ciphertext of the primary opens with the replica.
    sealed = svc.key_encrypt(caller=admin, key=fresh(primary), plaintext=b"v2")
    assert crypto.parse_header(sealed.ciphertext).version == 2
    assert svc.key_decrypt(caller=admin_eu, ciphertext=sealed.ciphertext).plaintext == b"v2"


def test_rotation_is_managed_on_the_primary_only(admin: Caller, admin_eu: Caller, primary: Key) -> None:
    replica = svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    for call in (
        lambda: svc.key_rotate(caller=admin_eu, key=replica, rotation_type=RotationType.ON_DEMAND),
        lambda: svc.key_enable_rotation(caller=admin_eu, key=replica),
        lambda: svc.key_disable_rotation(caller=admin_eu, key=replica),
    ):
        with pytest.raises(UnsupportedOperation, match="replica"):
            call()
    svc.key_enable_rotation(caller=admin, key=primary, period_days=180)
    status = svc.key_rotation_status(caller=admin_eu, key=fresh(replica))
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 180
    svc.key_disable_rotation(caller=admin, key=fresh(primary))
    assert svc.key_rotation_status(caller=admin_eu, key=fresh(replica))["KeyRotationEnabled"] is False


def test_the_rotation_job_rotates_the_primary_and_its_replicas_once(admin: Caller, primary: Key) -> None:
    with time_machine.travel(NOW, tick=False):
        svc.key_enable_rotation(caller=admin, key=primary, period_days=90)
        replica = svc.key_replicate(caller=admin, key=fresh(primary), replica_region=EU)
    counts = keys_rotate_due(caller=Caller.system("rotation"), now=NOW + timedelta(days=91))
    assert counts == {"rotated": 1, "skipped": 0, "failed": 0}
    assert [m[0] for m in materials(replica)] == [1, 2]
    assert fresh(replica).next_rotation_at == fresh(primary).next_rotation_at == NOW + timedelta(days=181)


# -- UpdatePrimaryRegion ------------------------------------------------------------------


def test_it_moves_the_primary_region(admin: Caller, admin_eu: Caller, primary: Key) -> None:
    replica = svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    before = mark()
    svc.key_update_primary_region(caller=admin, key=primary, primary_region=EU)
    assert (fresh(primary).multi_region_type, fresh(replica).multi_region_type) == ("REPLICA", "PRIMARY")
    assert [(e.event_name, e.aws_region, e.error_code) for e in events_since(before)] == [
        ("UpdatePrimaryRegion", EU, ""),
        ("UpdatePrimaryRegion", REGION, ""),
    ]
    config = svc.key_describe(caller=admin, key=fresh(primary))["MultiRegionConfiguration"]
    assert config == {
        "MultiRegionKeyType": "REPLICA",
        "PrimaryKey": {"Arn": replica.arn, "Region": EU},
        "ReplicaKeys": [{"Arn": primary.arn, "Region": REGION}],
    }
    # The new primary replicates and rotates; the old one no longer does.
    with pytest.raises(UnsupportedOperation):
        svc.key_replicate(caller=admin, key=fresh(primary), replica_region=AP)
    assert svc.key_replicate(caller=admin_eu, key=fresh(replica), replica_region=AP).region == AP
    svc.key_rotate(caller=admin_eu, key=fresh(replica), rotation_type=RotationType.ON_DEMAND)
    assert [m[0] for m in materials(primary)] == [1, 2]


def test_it_refuses_bad_primary_region_updates(admin: Caller, admin_eu: Caller, primary: Key) -> None:
    with pytest.raises(NotFound):
        svc.key_update_primary_region(caller=admin, key=primary, primary_region=EU)
    with pytest.raises(ValidationError):
        svc.key_update_primary_region(caller=admin, key=primary, primary_region=REGION)
    with pytest.raises(UnsupportedOperation):
        svc.key_update_primary_region(caller=admin, key=svc.key_create(caller=admin), primary_region=EU)
    replica = svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    with pytest.raises(UnsupportedOperation):
        svc.key_update_primary_region(caller=admin_eu, key=replica, primary_region=REGION)
    svc.key_disable(caller=admin_eu, key=replica)
    with pytest.raises(Disabled):
        svc.key_update_primary_region(caller=admin, key=fresh(primary), primary_region=EU)
    assert fresh(primary).multi_region_type == "PRIMARY"


def test_it_needs_update_primary_region_on_the_replica_too(make_persona: Any, admin: Caller, primary: Key) -> None:
    svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    caller = make_persona(
        "dave",
        policy=_policy(
            {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "kms:UpdatePrimaryRegion", "Resource": f"arn:aws:kms:{EU}:*:*"},
        ),
    ).caller()
    with pytest.raises(AccessDenied):
        svc.key_update_primary_region(caller=caller, key=primary, primary_region=EU)
    assert fresh(primary).multi_region_type == "PRIMARY"


# -- Deletion -----------------------------------------------------------------------------


def test_a_primary_with_replicas_waits_for_them_in_pending_replica_deletion(
    admin: Caller, admin_eu: Caller, primary: Key
) -> None:
    replica = svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    with time_machine.travel(NOW, tick=False):
        answer = svc.key_schedule_deletion(caller=admin, key=primary, pending_window_days=10)
    assert answer == {"KeyId": primary.arn, "KeyState": "PendingReplicaDeletion", "PendingWindowInDays": 10}
    primary = fresh(primary)
    assert (primary.state, primary.deletion_date) == (KeyState.PENDING_REPLICA_DELETION, None)
    meta = svc.key_describe(caller=admin, key=primary)
    assert meta["KeyState"] == "PendingReplicaDeletion" and meta["PendingDeletionWindowInDays"] == 10
    assert "DeletionDate" not in meta
    # Unusable meanwhile; the replica goes on working.
    with pytest.raises(InvalidState, match="pending replica deletion"):
        svc.key_encrypt(caller=admin, key=primary, plaintext=b"x")
    sealed = svc.key_encrypt(caller=admin_eu, key=fresh(replica), plaintext=b"x")
    with pytest.raises(InvalidState):
        svc.key_decrypt(caller=admin, ciphertext=sealed.ciphertext)
    with pytest.raises(InvalidState):
        svc.key_schedule_deletion(caller=admin, key=primary)
    # No job deletes it while the replica lives.
    assert keys_delete_expired(caller=Caller.system("deletion"), now=NOW + timedelta(days=400))["deleted"] == 0
    # The replica's own window: once it is deleted, the primary's 10 days begin.
    with time_machine.travel(NOW, tick=False):
        svc.key_schedule_deletion(caller=admin_eu, key=fresh(replica), pending_window_days=7)
    assert fresh(replica).deletion_date == NOW + timedelta(days=7)
    gone = NOW + timedelta(days=8)
    assert keys_delete_expired(caller=Caller.system("deletion"), now=gone) == {"deleted": 1, "skipped": 0}
    primary = fresh(primary)
    assert (primary.state, primary.deletion_date) == (KeyState.PENDING_DELETION, gone + timedelta(days=10))
    event = AuditEvent.objects.filter(event_name="DeleteKey").get()
    assert event.additional_event_data["primaryKeyDeletionDate"] == (gone + timedelta(days=10)).isoformat()
    assert keys_delete_expired(caller=Caller.system("deletion"), now=gone + timedelta(days=11))["deleted"] == 1
    assert fresh(primary).is_deleted


def test_cancelling_a_pending_replica_deletion_disables_the_primary(admin: Caller, primary: Key) -> None:
    svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    svc.key_schedule_deletion(caller=admin, key=primary)
    svc.key_cancel_deletion(caller=admin, key=fresh(primary))
    primary = fresh(primary)
    assert (primary.state, primary.pending_window_days) == (KeyState.DISABLED, None)


def test_a_primary_without_replicas_is_scheduled_as_any_key(admin: Caller, primary: Key) -> None:
    answer = svc.key_schedule_deletion(caller=admin, key=primary, pending_window_days=7)
    assert answer["KeyState"] == "PendingDeletion" and "DeletionDate" in answer


def test_a_replica_can_be_made_again_once_the_old_one_is_deleted(admin: Caller, admin_eu: Caller, primary: Key) -> None:
    replica = svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    with time_machine.travel(NOW, tick=False):
        svc.key_schedule_deletion(caller=admin_eu, key=replica, pending_window_days=7)
    # While it is pending deletion it still exists in its region.
    with pytest.raises(AlreadyExists):
        svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    keys_delete_expired(caller=Caller.system("deletion"), now=NOW + timedelta(days=8))
    again = svc.key_replicate(caller=admin, key=primary, replica_region=EU)
    assert again.pk != replica.pk and again.key_id == primary.key_id


# -- Imported key material ----------------------------------------------------------------


def test_a_replica_of_an_imported_key_takes_the_same_material_only(admin: Caller, admin_eu: Caller) -> None:
    for purpose in (TOKEN_PURPOSE, FINGERPRINT_PURPOSE):
        platform_key_get_or_create(purpose=purpose)
    primary = svc.key_create(caller=admin, origin="EXTERNAL", multi_region=True)
    material = os.urandom(32)
    do_import(admin, primary, material)
    replica = svc.key_replicate(caller=admin, key=fresh(primary), replica_region=EU)
    assert (replica.state, KeyMaterial.objects.filter(key=replica).count()) == (KeyState.PENDING_IMPORT, 0)
    with pytest.raises(IncorrectKeyMaterial, match="same key material"):
        do_import(admin_eu, replica, os.urandom(32))
    assert fresh(replica).state == KeyState.PENDING_IMPORT
    answer = do_import(admin_eu, replica, material)
    assert answer["KeyMaterialId"] == fresh(primary).current_material.material_id
    assert fresh(replica).state == KeyState.ENABLED
    sealed = svc.key_encrypt(caller=admin, key=fresh(primary), plaintext=b"imported")
    assert svc.key_decrypt(caller=admin_eu, ciphertext=sealed.ciphertext).plaintext == b"imported"


def test_imported_material_rotates_on_demand_in_every_related_key_at_once(admin: Caller, admin_eu: Caller) -> None:
    for purpose in (TOKEN_PURPOSE, FINGERPRINT_PURPOSE):
        platform_key_get_or_create(purpose=purpose)
    primary = svc.key_create(caller=admin, origin="EXTERNAL", multi_region=True)
    first, second = os.urandom(32), os.urandom(32)
    do_import(admin, primary, first)
    replica = svc.key_replicate(caller=admin, key=fresh(primary), replica_region=EU)
    do_import(admin_eu, replica, first)
    old = svc.key_encrypt(caller=admin, key=fresh(primary), plaintext=b"before")
    new_id = do_import(admin, primary, second, import_type="NEW_KEY_MATERIAL")["KeyMaterialId"]
    # The replica lacks the new material: the primary does not rotate, nothing changes.
    with pytest.raises(InvalidState, match="replica"):
        svc.key_rotate(caller=admin, key=fresh(primary), rotation_type=RotationType.ON_DEMAND)
    assert fresh(primary).current_material.version == 1
    # Other new material is refused in the replica: version 2 of the related keys is ``second``.
    with pytest.raises(IncorrectKeyMaterial, match="same key material"):
        do_import(admin_eu, replica, os.urandom(32), import_type="NEW_KEY_MATERIAL")
    assert do_import(admin_eu, replica, second, import_type="NEW_KEY_MATERIAL")["KeyMaterialId"] == new_id

    svc.key_rotate(caller=admin, key=fresh(primary), rotation_type=RotationType.ON_DEMAND)

    for key in (primary, replica):
        assert (fresh(key).current_material.version, fresh(key).current_material.material_id) == (2, new_id)
    sealed = svc.key_encrypt(caller=admin_eu, key=fresh(replica), plaintext=b"after")
    assert svc.key_decrypt(caller=admin, ciphertext=sealed.ciphertext).plaintext == b"after"
    assert svc.key_decrypt(caller=admin_eu, ciphertext=old.ciphertext).plaintext == b"before"
    with pytest.raises(UnsupportedOperation):
        svc.key_rotate(caller=admin_eu, key=fresh(replica), rotation_type=RotationType.ON_DEMAND)


def test_policies_can_name_multi_region_keys_and_the_requested_region(make_persona: Any, primary: Key) -> None:
    caller = make_persona(
        "erin",
        policy=_policy(
            {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": "kms:Encrypt",
                "Resource": "*",
                "Condition": {
                    "Bool": {"kms:MultiRegion": "true"},
                    "StringEquals": {"kms:MultiRegionKeyType": "PRIMARY"},
                },
            },
            {
                "Effect": "Deny",
                "Action": "kms:CreateKey",
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestedRegion": AP}},
            },
        ),
    ).caller()
    with pytest.raises(AccessDenied):
        svc.key_encrypt(caller=caller, key=primary, plaintext=b"x")
    assert svc.key_encrypt(caller=caller, key=svc.key_create(caller=caller), plaintext=b"x").ciphertext
    replica = svc.key_replicate(caller=caller, key=primary, replica_region=EU)
    assert svc.key_encrypt(caller=dataclasses.replace(caller, region=EU), key=replica, plaintext=b"x")
    with pytest.raises(AccessDenied):
        svc.key_replicate(caller=caller, key=primary, replica_region=AP)


# -- Two replications at once (PostgreSQL) -------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_replications_into_one_region_at_once_make_one_replica(
    key_admin: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary = svc.key_create(caller=key_admin.caller(), multi_region=True)
    real_lock = multi_region.key_lock
    both_checked = threading.Barrier(2)

    def racing_lock(key: Key) -> Key:
        # Both requests have passed every check made before the primary's lock.
        both_checked.wait(10)
        return real_lock(key)

    monkeypatch.setattr(multi_region, "key_lock", racing_lock)
    results: dict[str, Any] = {}

    def worker(name: str) -> None:
        try:
            results[name] = svc.key_replicate(caller=key_admin.caller(), key=primary, replica_region=EU)
        except Exception as exc:  # surfaced by the assertions below
            results[name] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,), name=n) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads)
    made = [r for r in results.values() if isinstance(r, Key)]
    refused = [r for r in results.values() if isinstance(r, AlreadyExists)]
    assert (len(made), len(refused)) == (1, 1), results
    assert Key.objects.filter(multi_region_id=primary.multi_region_id, region=EU).count() == 1
    outcomes = sorted(AuditEvent.objects.filter(event_name="ReplicateKey").values_list("error_code", flat=True))
    assert outcomes == ["", "AlreadyExistsException"]
