"""Creating keys and moving them through AWS's key states."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from audit.services import audit_record, audited
from compliance.triggers import compliance_evaluation_request
from keys.crypto.specs import SPECS
from keys.models import Key, KeyManager, KeyOrigin, KeySpec, KeyState, KeyUsage, MultiRegionKeyType, Tag
from keys.selectors import decode_marker, encode_marker, key_list_for
from keys.services.aliases import alias_insert
from keys.services.common import (
    PENDING_DELETION_STATES,
    check_policy_document,
    check_policy_lockout,
    check_storable_text,
    check_tags,
    default_key_policy,
    key_lock,
    key_metadata,
    require_customer_managed,
    require_not_pending_deletion,
    require_symmetric_for_rotation,
    state_words,
)
from keys.services.material import material_create
from keys.services.multi_region import live_replicas
from keys.services.rotation import MAX_ROTATION_DAYS, MIN_ROTATION_DAYS, rotation_schedule
from keys.services.store_keys import store_connected, store_for_new_key, store_key_material
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidMarker, InvalidState, UnsupportedOperation, ValidationError
from policies.authorization import authorize

MIN_PENDING_WINDOW = 7
MAX_PENDING_WINDOW = 30


def key_create(
    *,
    caller: Caller,
    description: str = "",
    key_spec: str | None = None,
    key_usage: str | None = None,
    origin: str | None = None,
    policy: str | None = None,
    tags: Sequence[Mapping[str, str]] = (),
    multi_region: bool = False,
    custom_key_store_id: str | None = None,
    xks_key_id: str | None = None,
    request_parameters: Mapping[str, Any] | None = None,
    alias: str | None = None,
    rotation_period_days: int | None = None,
    bypass_policy_lockout_check: bool = False,
) -> Key:
    """Create a customer managed symmetric key with its first material version.

    Without a policy the key gets AWS's default key policy. Audited as
    CreateKey; the key, its material and its tags commit together or not at all.
    The dashboard's form may also name an ``alias`` and a rotation period:
    they are made in the same transaction, each with its own audit event
    (CreateAlias, EnableKeyRotation), so a taken alias creates no key.
    """
    with audited(caller, "CreateKey", request_parameters=request_parameters) as op:
        authorize(
            caller=caller,
            action="kms:CreateKey",
            context={
                "kms:BypassPolicyLockoutSafetyCheck": bypass_policy_lockout_check,
                # CreateKey's request condition keys: what kind of key is asked for.
                "kms:KeySpec": key_spec or KeySpec.SYMMETRIC_DEFAULT,
                "kms:KeyUsage": key_usage or KeyUsage.ENCRYPT_DECRYPT,
                "kms:KeyOrigin": origin or KeyOrigin.AWS_KMS,
                "kms:MultiRegion": multi_region,
                "aws:TagKeys": [t.get("TagKey", "") for t in tags],
                **{f"aws:RequestTag/{t.get('TagKey', '')}": t.get("TagValue", "") for t in tags},
            },
        )
        spec, usage = check_spec_and_usage(key_spec, key_usage)
        origin = origin or KeyOrigin.AWS_KMS
        if origin not in KeyOrigin.values:
            raise UnsupportedOperation(f"Origin {origin} is not supported.")
        if origin != KeyOrigin.AWS_KMS and rotation_period_days is not None:
            raise UnsupportedOperation(f"Automatic rotation is not supported on keys with Origin {origin}.")
        if multi_region and (custom_key_store_id or origin in (KeyOrigin.AWS_CLOUDHSM, KeyOrigin.EXTERNAL_KEY_STORE)):
            # As in AWS: a multi-Region key cannot live in a custom key store.
            raise UnsupportedOperation("Multi-Region keys cannot be created in a custom key store.")
        store = store_for_new_key(
            caller=caller,
            store_id=custom_key_store_id,
            origin=origin,
            key_spec=spec,
            key_usage=usage,
            xks_key_id=xks_key_id,
        )
        check_storable_text("description", description)
        if policy is not None:
            check_policy_document(policy)
        pairs = check_tags(tags)
        now = timezone.now()
        key_uuid = uuid.uuid4()
        key = Key.objects.create(
            # A multi-Region primary key's row id is its multi-Region key id
            # (mrk-<hex>); its replicas get ids of their own.
            id=key_uuid,
            multi_region_id=key_uuid if multi_region else None,
            multi_region_type=MultiRegionKeyType.PRIMARY if multi_region else "",
            account_id=caller.account_id,
            region=caller.region,
            description=description,
            key_spec=spec,
            key_usage=usage,
            origin=origin,
            manager=KeyManager.CUSTOMER,
            # A key for imported material has none until ImportKeyMaterial.
            state=KeyState.PENDING_IMPORT if origin == KeyOrigin.EXTERNAL else KeyState.ENABLED,
            policy=policy if policy is not None else default_key_policy(caller.account_id),
            created_at=now,
            custom_key_store=store,
            xks_key_id=xks_key_id or "",
        )
        if origin == KeyOrigin.AWS_KMS:
            key.current_material = material_create(key=key, version=1, now=now)
            key.save(update_fields=["current_material"])
        elif store is not None:
            key.current_material = store_key_material(caller=caller, key=key, store=store, now=now)
            key.save(update_fields=["current_material"])
        if policy is not None:
            check_policy_lockout(caller=caller, key=key, policy=policy, bypass=bypass_policy_lockout_check)
        Tag.objects.bulk_create([Tag(key=key, tag_key=k, tag_value=v) for k, v in pairs])
        if alias:
            authorize(caller=caller, action="kms:CreateAlias", key=key)
            alias_insert(caller=caller, name=alias, key=key)
            audit_record(
                caller=caller,
                event_name="CreateAlias",
                keys=[key],
                request_parameters={"AliasName": alias, "TargetKeyId": str(key.id)},
            )
        if rotation_period_days is not None:
            authorize(caller=caller, action="kms:EnableKeyRotation", key=key)
            require_symmetric_for_rotation(key, "EnableKeyRotation")
            if not MIN_ROTATION_DAYS <= rotation_period_days <= MAX_ROTATION_DAYS:
                raise ValidationError(
                    f"RotationPeriodInDays must be between {MIN_ROTATION_DAYS} and {MAX_ROTATION_DAYS}."
                )
            rotation_schedule(key=key, days=rotation_period_days, now=now)
            audit_record(
                caller=caller,
                event_name="EnableKeyRotation",
                keys=[key],
                request_parameters={"KeyId": str(key.id), "RotationPeriodInDays": rotation_period_days},
            )
        op.keys.append(key)
        op.response_elements = {"KeyMetadata": {"KeyId": key.key_id, "Arn": key.arn}}
        if key.current_material is not None:
            op.additional_event_data["keyMaterialId"] = key.current_material.material_id
    return key


def check_spec_and_usage(key_spec: str | None, key_usage: str | None) -> tuple[str, str]:
    """CreateKey's KeySpec and KeyUsage, checked as AWS does.

    Only a symmetric encryption key may leave KeyUsage out; every other spec
    must name a usage it supports (RSA: ENCRYPT_DECRYPT or SIGN_VERIFY; NIST
    ECC: SIGN_VERIFY or KEY_AGREEMENT; ECC_SECG_P256K1, Ed25519 and ML-DSA:
    SIGN_VERIFY; ML-KEM: ENCAPSULATE_DECAPSULATE; HMAC: GENERATE_VERIFY_MAC).
    """
    spec_name = key_spec or KeySpec.SYMMETRIC_DEFAULT
    spec = SPECS.get(spec_name)
    if spec is None:
        raise UnsupportedOperation(f"KeySpec {spec_name} is not supported by kmsweb.")
    if key_usage is None:
        if spec_name != KeySpec.SYMMETRIC_DEFAULT:
            raise ValidationError(
                "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys."
            )
        return spec_name, KeyUsage.ENCRYPT_DECRYPT
    if key_usage not in spec.usages:
        raise ValidationError(f"KeyUsage {key_usage} is not compatible with KeySpec {spec_name}")
    return spec_name, key_usage


def key_describe_metadata(key: Key) -> dict[str, Any]:
    """The KeyMetadata of a key the caller has just been allowed to see."""
    return key_metadata(key)


def key_describe(*, caller: Caller, key: Key) -> dict[str, Any]:
    """DescribeKey: the key's metadata, in every state."""
    with audited(caller, "DescribeKey", request_parameters={"KeyId": str(key.id)}) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:DescribeKey", key=key)
        return key_metadata(key)


def key_list(
    *,
    caller: Caller,
    limit: int | None = None,
    marker: str | None = None,
    resource_owners: Sequence[str] | None = None,
) -> dict[str, Any]:
    """ListKeys for the caller's account and region, paged with an opaque marker.

    ``resource_owners`` is AWS's filter: ``SELF`` (the default) lists the
    account's own keys, ``OTHER_ACCOUNTS_VIA_RAM`` the keys other accounts
    share with it through Resource Access Manager. kmsweb has no RAM, so
    nothing is shared that way: asking only for those lists no key.
    """
    limit = limit or 100
    params: dict[str, Any] = {"Limit": limit}
    if resource_owners:
        params["ResourceOwners"] = list(resource_owners)
    with audited(caller, "ListKeys", request_parameters=params):
        authorize(caller=caller, action="kms:ListKeys")
        qs = key_list_for(caller=caller)
        if resource_owners and "SELF" not in resource_owners:
            qs = qs.none()
        if marker:
            raw_created, raw_id = decode_marker(marker, 2)
            try:
                created, last_id = datetime.fromisoformat(str(raw_created)), uuid.UUID(str(raw_id))
            except ValueError as exc:
                raise InvalidMarker("The marker is not valid.") from exc
            if created.tzinfo is None:
                raise InvalidMarker("The marker is not valid.")
            qs = qs.filter(created_at__gte=created).exclude(created_at=created, id__lte=last_id)
        page = list(qs.values("id", "region", "account_id", "created_at", "multi_region_id")[: limit + 1])
        truncated = len(page) > limit
        page = page[:limit]
        result: dict[str, Any] = {
            "Keys": [_list_entry(k) for k in page],
            "Truncated": truncated,
        }
        if truncated:
            result["NextMarker"] = encode_marker([page[-1]["created_at"].isoformat(), str(page[-1]["id"])])
        return result


def _list_entry(row: Mapping[str, Any]) -> dict[str, str]:
    wire_id = f"mrk-{row['multi_region_id'].hex}" if row["multi_region_id"] else str(row["id"])
    return {"KeyId": wire_id, "KeyArn": f"arn:aws:kms:{row['region']}:{row['account_id']}:key/{wire_id}"}


def _change(caller: Caller, key: Key, event_name: str, **params: Any) -> Any:
    return audited(caller, event_name, request_parameters={"KeyId": str(key.id), **params})


def key_update_description(*, caller: Caller, key: Key, description: str) -> None:
    """UpdateKeyDescription."""
    with _change(caller, key, "UpdateKeyDescription", Description=description) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:UpdateKeyDescription", key=key)
        require_customer_managed(key, "UpdateKeyDescription")
        check_storable_text("description", description)
        key = key_lock(key)
        require_not_pending_deletion(key)
        key.description = description
        key.save(update_fields=["description"])


def key_enable(*, caller: Caller, key: Key) -> None:
    """EnableKey: Disabled -> Enabled (idempotent on an enabled key)."""
    with _change(caller, key, "EnableKey") as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:EnableKey", key=key)
        require_customer_managed(key, "EnableKey")
        key = key_lock(key)
        if key.state not in (KeyState.ENABLED, KeyState.DISABLED):
            raise InvalidState(f"{key.arn} is {state_words(key.state)}.")
        Key.objects.filter(pk=key.pk).update(state=KeyState.ENABLED)


def key_disable(*, caller: Caller, key: Key) -> None:
    """DisableKey: Enabled -> Disabled (idempotent on a disabled key)."""
    with _change(caller, key, "DisableKey") as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:DisableKey", key=key)
        require_customer_managed(key, "DisableKey")
        key = key_lock(key)
        if key.state not in (KeyState.ENABLED, KeyState.DISABLED):
            raise InvalidState(f"{key.arn} is {state_words(key.state)}.")
        Key.objects.filter(pk=key.pk).update(state=KeyState.DISABLED)


def key_schedule_deletion(*, caller: Caller, key: Key, pending_window_days: int | None = None) -> dict[str, Any]:
    """ScheduleKeyDeletion: the key becomes PendingDeletion for 7-30 days (default 30).

    It is unusable at once; the deletion job destroys its material when the
    window ends, unless CancelKeyDeletion comes first. A multi-Region primary
    key with live replicas becomes PendingReplicaDeletion instead, with no
    date: its window begins when its last replica is deleted.
    """
    days = 30 if pending_window_days is None else pending_window_days
    with _change(caller, key, "ScheduleKeyDeletion", PendingWindowInDays=days) as op:
        op.keys.append(key)
        authorize(
            caller=caller,
            action="kms:ScheduleKeyDeletion",
            key=key,
            context={"kms:ScheduleKeyDeletionPendingWindowInDays": days},
        )
        if not MIN_PENDING_WINDOW <= days <= MAX_PENDING_WINDOW:
            raise ValidationError(
                f"1 validation error detected: Value '{days}' at 'pendingWindowInDays' failed to satisfy "
                "constraint: Member must have value "
                + (
                    f"greater than or equal to {MIN_PENDING_WINDOW}"
                    if days < MIN_PENDING_WINDOW
                    else f"less than or equal to {MAX_PENDING_WINDOW}"
                )
            )
        require_customer_managed(key, "ScheduleKeyDeletion")
        key = key_lock(key)
        if key.state in PENDING_DELETION_STATES:
            raise InvalidState(f"{key.arn} is {state_words(key.state)}.")
        if key.multi_region_type == MultiRegionKeyType.PRIMARY and live_replicas(key).exists():
            # A primary key outlives its replicas: its waiting period begins
            # when the last of them is deleted (keys.services.jobs).
            Key.objects.filter(pk=key.pk).update(
                state=KeyState.PENDING_REPLICA_DELETION, deletion_date=None, pending_window_days=days
            )
            compliance_evaluation_request()
            op.response_elements = {"KeyId": key.arn, "KeyState": KeyState.PENDING_REPLICA_DELETION.value}
            return {"KeyId": key.arn, "KeyState": KeyState.PENDING_REPLICA_DELETION.value, "PendingWindowInDays": days}
        deletion_date = timezone.now() + timedelta(days=days)
        Key.objects.filter(pk=key.pk).update(
            state=KeyState.PENDING_DELETION, deletion_date=deletion_date, pending_window_days=days
        )
        compliance_evaluation_request()
        result = {
            "KeyId": key.arn,
            "DeletionDate": deletion_date,
            "KeyState": KeyState.PENDING_DELETION.value,
            "PendingWindowInDays": days,
        }
        op.response_elements = {"KeyId": key.arn, "DeletionDate": deletion_date.isoformat()}
        return result


def key_cancel_deletion(*, caller: Caller, key: Key) -> dict[str, Any]:
    """CancelKeyDeletion: PendingDeletion -> Disabled, as AWS does; a key whose
    imported material is gone (never imported, deleted or expired) goes back
    to PendingImport instead."""
    with _change(caller, key, "CancelKeyDeletion") as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:CancelKeyDeletion", key=key)
        key = key_lock(key)
        if key.state not in PENDING_DELETION_STATES:
            raise InvalidState(f"{key.arn} is not pending deletion.")
        material = key.current_material
        usable = material is not None and material.destroyed_at is None
        state = KeyState.DISABLED if usable else KeyState.PENDING_IMPORT
        remembered = ""
        if key.custom_key_store_id is not None and not store_connected(key):
            # Disabled once its store connects again; Unavailable until then.
            state, remembered = KeyState.UNAVAILABLE, KeyState.DISABLED
        Key.objects.filter(pk=key.pk).update(
            state=state, state_when_connected=remembered, deletion_date=None, pending_window_days=None
        )
        compliance_evaluation_request()
        op.response_elements = {"KeyId": key.arn}
        return {"KeyId": key.arn}


def key_put_policy(*, caller: Caller, key: Key, policy: str, bypass_lockout_check: bool = False) -> None:
    """PutKeyPolicy: replace a customer managed key's policy.

    The document is validated by the policy engine, and refused when the
    caller could not change it again (unless the lockout check is bypassed).
    """
    with _change(caller, key, "PutKeyPolicy", PolicyName="default") as op:
        op.keys.append(key)
        authorize(
            caller=caller,
            action="kms:PutKeyPolicy",
            key=key,
            context={"kms:BypassPolicyLockoutSafetyCheck": bypass_lockout_check},
        )
        require_customer_managed(key, "PutKeyPolicy")
        check_policy_document(policy)
        check_policy_lockout(caller=caller, key=key, policy=policy, bypass=bypass_lockout_check)
        # AWS's key state table: a key pending deletion still takes a new policy.
        key = key_lock(key)
        Key.objects.filter(pk=key.pk).update(policy=policy)
        compliance_evaluation_request()


def key_get_policy(*, caller: Caller, key: Key) -> str:
    """GetKeyPolicy (the one policy a key has is named ``default``)."""
    with audited(caller, "GetKeyPolicy", request_parameters={"KeyId": str(key.id), "PolicyName": "default"}) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:GetKeyPolicy", key=key)
        return key.policy


def key_list_policies(*, caller: Caller, key: Key) -> list[str]:
    """ListKeyPolicies: a key has exactly one policy, named ``default``."""
    with audited(caller, "ListKeyPolicies", request_parameters={"KeyId": str(key.id)}) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:ListKeyPolicies", key=key)
        return ["default"]
