"""The PendingReplicaDeletion key state: a multi-Region primary key scheduled for deletion
while it has replicas. Every operation answers as it does for a key pending deletion
(AWS's key-state table gives both states the same column), except that there is no
deletion date yet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from keys import services as svc
from keys.models import Key, KeyState, RotationType
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.services import grant_create
from tests.conftest import Persona

pytestmark = pytest.mark.django_db

Operation = Callable[[Caller, Key, dict[str, Any]], Any]

# Each operation, given a caller, the key and what was made while the key was usable.
OPERATIONS: dict[str, Operation] = {
    "Encrypt": lambda c, k, s: svc.key_encrypt(caller=c, key=k, plaintext=b"x"),
    "Decrypt": lambda c, k, s: svc.key_decrypt(caller=c, ciphertext=s["blob"]),
    "ReEncrypt": lambda c, k, s: svc.key_reencrypt(caller=c, ciphertext=s["blob"], destination_key=k),
    "GenerateDataKey": lambda c, k, s: svc.key_generate_data_key(caller=c, key=k, key_spec="AES_256"),
    "DescribeKey": lambda c, k, s: svc.key_describe(caller=c, key=k),
    "GetKeyPolicy": lambda c, k, s: svc.key_get_policy(caller=c, key=k),
    "PutKeyPolicy": lambda c, k, s: svc.key_put_policy(caller=c, key=k, policy=k.policy),
    "UpdateKeyDescription": lambda c, k, s: svc.key_update_description(caller=c, key=k, description="d"),
    "EnableKey": lambda c, k, s: svc.key_enable(caller=c, key=k),
    "DisableKey": lambda c, k, s: svc.key_disable(caller=c, key=k),
    "ScheduleKeyDeletion": lambda c, k, s: svc.key_schedule_deletion(caller=c, key=k),
    "EnableKeyRotation": lambda c, k, s: svc.key_enable_rotation(caller=c, key=k),
    "DisableKeyRotation": lambda c, k, s: svc.key_disable_rotation(caller=c, key=k),
    "GetKeyRotationStatus": lambda c, k, s: svc.key_rotation_status(caller=c, key=k),
    "RotateKeyOnDemand": lambda c, k, s: svc.key_rotate(caller=c, key=k, rotation_type=RotationType.ON_DEMAND),
    "ListKeyRotations": lambda c, k, s: svc.key_list_rotations(caller=c, key=k),
    "TagResource": lambda c, k, s: svc.key_tag(caller=c, key=k, tags=[{"TagKey": "a", "TagValue": "b"}]),
    "UntagResource": lambda c, k, s: svc.key_untag(caller=c, key=k, tag_keys=["a"]),
    "ListResourceTags": lambda c, k, s: svc.key_list_tags(caller=c, key=k),
    "CreateAlias": lambda c, k, s: svc.alias_create(caller=c, name=f"alias/{k.pk.hex}", key=k),
    "CreateGrant": lambda c, k, s: grant_create(
        caller=c, key=k, grantee_principal=c.principal_arn, operations=["Decrypt"]
    ),
    # Last: it changes the state.
    "CancelKeyDeletion": lambda c, k, s: svc.key_cancel_deletion(caller=c, key=k),
}


def outcome(call: Operation, caller: Caller, key: Key, made: dict[str, Any]) -> str:
    try:
        call(caller, Key.objects.select_related("current_material").get(pk=key.pk), made)
    except KmsError as exc:
        return exc.code
    return "ok"


def test_pending_replica_deletion_answers_as_pending_deletion(key_admin: Persona) -> None:
    caller = key_admin.caller()
    single = svc.key_create(caller=caller)
    primary = svc.key_create(caller=caller, multi_region=True)
    svc.key_replicate(caller=caller, key=primary, replica_region="eu-west-1")
    made = {k.pk: {"blob": svc.key_encrypt(caller=caller, key=k, plaintext=b"x").ciphertext} for k in (single, primary)}
    svc.key_schedule_deletion(caller=caller, key=single)
    svc.key_schedule_deletion(caller=caller, key=primary)
    assert Key.objects.get(pk=primary.pk).state == KeyState.PENDING_REPLICA_DELETION
    # Both keys go through the same calls in the same order (CancelKeyDeletion last).
    reference = {name: outcome(call, caller, single, made[single.pk]) for name, call in OPERATIONS.items()}
    answers = {name: outcome(call, caller, primary, made[primary.pk]) for name, call in OPERATIONS.items()}
    assert answers == reference
    # The reference column itself, so that a change to PendingDeletion is noticed here too.
    allowed = {"DescribeKey", "GetKeyPolicy", "PutKeyPolicy", "GetKeyRotationStatus", "ListKeyRotations"}
    allowed |= {"ListResourceTags"}
    assert {name for name, answer in answers.items() if answer == "ok"} >= allowed | {"CancelKeyDeletion"}
    refused = {"Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "EnableKey", "DisableKey", "ScheduleKeyDeletion"}
    refused |= {"RotateKeyOnDemand", "UpdateKeyDescription", "TagResource"}
    assert {name: answers[name] for name in refused} == dict.fromkeys(refused, "KMSInvalidStateException")
    assert Key.objects.get(pk=primary.pk).state == KeyState.DISABLED  # cancelled, as PendingDeletion is
