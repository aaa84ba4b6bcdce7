"""Multi-Region keys: ReplicateKey and UpdatePrimaryRegion.

Related multi-Region keys (one primary, at most one replica per other region,
all in one account) share the key id ``mrk-<hex>``, the key spec, usage,
origin, rotation settings and every material version; each has its own
policy, description, tags, aliases and key state. Each row holds its own
wrapped copy of the shared material (``material_replicate``); ciphertext
blobs carry the shared id, so any related key decrypts what another made.
The primary is the one that is replicated and rotated: rotation hands the
new version to every replica in the same transaction (``keys.services.rotation``).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from audit.services import audit_record, audited
from keys.models import Key, KeyManager, KeyMaterial, KeyOrigin, KeyState, MultiRegionKeyType, Tag
from keys.services.common import (
    PENDING_DELETION_STATES,
    check_policy_document,
    check_policy_lockout,
    check_storable_text,
    check_tags,
    default_key_policy,
    key_lock,
    require_usable_for_crypto,
    state_words,
)
from keys.services.material import material_replicate
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AlreadyExists, Disabled, InvalidState, NotFound, UnsupportedOperation, ValidationError
from policies.authorization import authorize

# An AWS Region name (us-east-1, eu-west-2, us-gov-west-1, ap-southeast-3...).
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")


def related_others(key: Key) -> QuerySet[Key]:
    """The live keys related to multi-Region key ``key``, ``key`` left out."""
    return Key.objects.filter(multi_region_id=key.multi_region_id, deleted_at__isnull=True).exclude(pk=key.pk)


def live_replicas(key: Key) -> QuerySet[Key]:
    """The live replica keys of ``key``'s multi-Region key."""
    return related_others(key).filter(multi_region_type=MultiRegionKeyType.REPLICA)


def check_region(member: str, region: str) -> None:
    """A region kmsweb serves: one of ``KMSWEB_REGIONS`` when set, else any AWS-shaped name."""
    served = settings.KMSWEB_REGIONS
    if not _REGION.match(region) or (served and region not in served):
        where = f" ({', '.join(served)})" if served else ""
        raise ValidationError(f"{member} '{region[:64]}' is not a region this kmsweb serves{where}.")


def _require_primary(key: Key, operation: str) -> None:
    if not key.is_multi_region:
        raise UnsupportedOperation(f"{key.arn} is not a multi-Region key; {operation} needs a multi-Region primary.")
    if key.multi_region_type != MultiRegionKeyType.PRIMARY:
        raise UnsupportedOperation(f"{key.arn} is a multi-Region replica key; {operation} needs the primary key.")


def _require_enabled(key: Key, operation: str) -> None:
    if key.state == KeyState.DISABLED:
        raise Disabled(f"{key.arn} is disabled.")
    if key.state != KeyState.ENABLED:
        raise InvalidState(f"{key.arn} is {state_words(key.state)}.")


def key_replicate(
    *,
    caller: Caller,
    key: Key,
    replica_region: str,
    policy: str | None = None,
    description: str = "",
    tags: Sequence[Mapping[str, str]] = (),
    bypass_policy_lockout_check: bool = False,
) -> Key:
    """ReplicateKey: a replica of the primary ``key`` in ``replica_region`` (same account).

    Needs kms:ReplicateKey on the primary (in its region) and kms:CreateKey
    (plus kms:TagResource for tags) in the replica region, as AWS does. The
    replica gets every material version of the primary (none for imported
    material: it starts PendingImport and takes the same material), the
    shared rotation settings, and its own policy (default if none), tags and
    description. Recorded as ReplicateKey in the primary's region and
    CreateKey in the replica's, in one transaction with the new key.
    """
    params: dict[str, Any] = {"KeyId": key.key_id, "ReplicaRegion": replica_region, "Description": description}
    if tags:
        params["Tags"] = list(tags)
    if bypass_policy_lockout_check:
        params["BypassPolicyLockoutSafetyCheck"] = True
    with audited(caller, "ReplicateKey", request_parameters=params) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:ReplicateKey", key=key, context={"kms:ReplicaRegion": replica_region})
        check_region("ReplicaRegion", replica_region)
        _require_primary(key, "ReplicateKey")
        if key.account_id != caller.account_id:
            raise UnsupportedOperation("ReplicateKey cannot create a replica key in another account.")
        if replica_region == key.region:
            raise ValidationError(f"The replica Region {replica_region} is the primary key's Region.")
        at_replica = dataclasses.replace(caller, region=replica_region)
        authorize(
            caller=at_replica,
            action="kms:CreateKey",
            context={
                "kms:BypassPolicyLockoutSafetyCheck": bypass_policy_lockout_check,
                "kms:KeySpec": key.key_spec,
                "kms:KeyUsage": key.key_usage,
                "kms:KeyOrigin": key.origin,
                "kms:MultiRegion": True,
                "kms:MultiRegionKeyType": MultiRegionKeyType.REPLICA.value,
                "aws:TagKeys": [t.get("TagKey", "") for t in tags],
                **{f"aws:RequestTag/{t.get('TagKey', '')}": t.get("TagValue", "") for t in tags},
            },
        )
        if tags:
            authorize(caller=at_replica, action="kms:TagResource")
        check_storable_text("description", description)
        if policy is not None:
            check_policy_document(policy)
        pairs = check_tags(tags)
        # The primary's lock serialises replications (and rotations) of this multi-Region key.
        key = key_lock(key)
        _require_primary(key, "ReplicateKey")
        if key.state == KeyState.DISABLED:
            raise Disabled(f"{key.arn} is disabled.")
        if key.state in PENDING_DELETION_STATES:
            raise InvalidState(f"{key.arn} is {state_words(key.state)}.")
        existing = related_others(key).filter(region=replica_region).first()
        if existing is not None:
            raise AlreadyExists(f"{existing.arn} already exists: {replica_region} has a replica of {key.key_id}.")
        now = timezone.now()
        replica = Key.objects.create(
            id=uuid.uuid4(),
            multi_region_id=key.multi_region_id,
            multi_region_type=MultiRegionKeyType.REPLICA,
            account_id=key.account_id,
            region=replica_region,
            description=description,
            key_spec=key.key_spec,
            key_usage=key.key_usage,
            origin=key.origin,
            manager=KeyManager.CUSTOMER,
            state=KeyState.PENDING_IMPORT if key.origin == KeyOrigin.EXTERNAL else KeyState.ENABLED,
            policy=policy if policy is not None else default_key_policy(key.account_id or ""),
            created_at=now,
            rotation_enabled=key.rotation_enabled,
            rotation_period_days=key.rotation_period_days,
            next_rotation_at=key.next_rotation_at,
            last_rotated_at=key.last_rotated_at,
        )
        if key.origin == KeyOrigin.AWS_KMS:
            copies = {
                m.version: material_replicate(source=m, key=replica)
                for m in KeyMaterial.objects.filter(key=key).order_by("version")
            }
            if key.current_material is not None:
                replica.current_material = copies[key.current_material.version]
                replica.save(update_fields=["current_material"])
        if policy is not None:
            check_policy_lockout(caller=at_replica, key=replica, policy=policy, bypass=bypass_policy_lockout_check)
        Tag.objects.bulk_create([Tag(key=replica, tag_key=k, tag_value=v) for k, v in pairs])
        audit_record(
            caller=at_replica,
            event_name="CreateKey",
            keys=[replica],
            request_parameters={
                "MultiRegion": True,
                "ReplicateKeyOf": key.arn,
                "Description": description,
                "KeySpec": replica.key_spec,
                "KeyUsage": replica.key_usage,
                "Origin": replica.origin,
            },
            response_elements={"KeyMetadata": {"KeyId": replica.key_id, "Arn": replica.arn}},
        )
        op.key_arns.append(replica.arn)
        op.response_elements = {"ReplicaKeyMetadata": {"KeyId": replica.key_id, "Arn": replica.arn}}
    return replica


def key_update_primary_region(*, caller: Caller, key: Key, primary_region: str) -> Key:
    """UpdatePrimaryRegion: the replica of ``key`` in ``primary_region`` becomes the primary, ``key`` a replica.

    Needs kms:UpdatePrimaryRegion on both keys (each in its own region); both
    must be Enabled. Nothing else changes: material, rotation settings,
    policies and states stay. Recorded in both regions. Returns the new primary.
    """
    params = {"KeyId": key.key_id, "PrimaryRegion": primary_region}
    with audited(caller, "UpdatePrimaryRegion", request_parameters=params) as op:
        op.keys.append(key)
        authorize(
            caller=caller, action="kms:UpdatePrimaryRegion", key=key, context={"kms:PrimaryRegion": primary_region}
        )
        check_region("PrimaryRegion", primary_region)
        _require_primary(key, "UpdatePrimaryRegion")
        if key.account_id != caller.account_id:
            raise UnsupportedOperation("UpdatePrimaryRegion cannot change a key of another account.")
        if primary_region == key.region:
            raise ValidationError(f"{key.arn} is already the primary key; its Region is {primary_region}.")
        target = related_others(key).filter(region=primary_region).first()
        if target is None:
            raise NotFound(f"{key.key_id} has no replica key in {primary_region}.")
        at_target = dataclasses.replace(caller, region=primary_region)
        authorize(
            caller=at_target,
            action="kms:UpdatePrimaryRegion",
            key=target,
            context={"kms:PrimaryRegion": primary_region},
        )
        key, target = key_lock(key), key_lock(target)
        _require_primary(key, "UpdatePrimaryRegion")
        _require_enabled(key, "UpdatePrimaryRegion")
        _require_enabled(target, "UpdatePrimaryRegion")
        require_usable_for_crypto(target)
        Key.objects.filter(pk=key.pk).update(multi_region_type=MultiRegionKeyType.REPLICA)
        Key.objects.filter(pk=target.pk).update(multi_region_type=MultiRegionKeyType.PRIMARY)
        audit_record(caller=at_target, event_name="UpdatePrimaryRegion", keys=[target], request_parameters=params)
        op.key_arns.append(target.arn)
    target.multi_region_type = MultiRegionKeyType.PRIMARY
    return target
