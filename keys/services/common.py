"""Pieces every key service shares: state checks and the metadata shape."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from keys.crypto.specs import SPECS, SYMMETRIC_DEFAULT
from keys.models import ExpirationModel, Key, KeyManager, KeyOrigin, KeyState, MultiRegionKeyType
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    AccessDenied,
    Disabled,
    InvalidKeyUsage,
    InvalidState,
    MalformedPolicyDocument,
    TagError,
    UnsupportedOperation,
    ValidationError,
)
from policies import evaluation
from policies.authorization import authorize

MAX_POLICY_BYTES = 32 * 1024
MAX_TAGS = 50


def require_usable_for_crypto(key: Key) -> None:
    """Cryptographic operations need an Enabled key (AWS's key-state table)."""
    if key.state == KeyState.ENABLED:
        return
    if key.state == KeyState.DISABLED:
        raise Disabled(f"{key.arn} is disabled.")
    raise InvalidState(f"{key.arn} is {state_words(key.state)}.")


def require_key_usage(key: Key, usage: str, operation: str) -> None:
    """AWS's InvalidKeyUsageException when the key is not made for ``operation``."""
    if key.key_usage != usage:
        raise InvalidKeyUsage(f"{key.arn} key usage is {key.key_usage} which is not valid for {operation}.")


def require_symmetric_encryption(key: Key, operation: str) -> None:
    """Operations of symmetric encryption keys only (GenerateDataKey, ReEncrypt's blob side...)."""
    require_key_usage(key, "ENCRYPT_DECRYPT", operation)
    if key.key_spec != SYMMETRIC_DEFAULT:
        raise InvalidKeyUsage(f"{key.arn} key spec is {key.key_spec} which is not valid for {operation}.")


def require_symmetric_for_rotation(key: Key, operation: str) -> None:
    """AWS rotates only symmetric encryption keys; asymmetric and HMAC keys refuse."""
    if key.key_spec != SYMMETRIC_DEFAULT:
        raise UnsupportedOperation(
            f"{operation} is not supported on {key.arn}: key rotation is supported only on "
            f"symmetric encryption KMS keys, and this key's spec is {key.key_spec}."
        )


def require_not_pending_deletion(key: Key) -> None:
    if key.state in PENDING_DELETION_STATES:
        raise InvalidState(f"{key.arn} is {state_words(key.state)}.")


# A key scheduled for deletion: its waiting period running, or (a multi-Region
# primary key) waiting for its replicas to be deleted first.
PENDING_DELETION_STATES = (KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION)


def require_customer_managed(key: Key, action: str) -> None:
    """AWS managed keys are read-only to their account's principals."""
    if key.manager != KeyManager.CUSTOMER:
        raise UnsupportedOperation(f"{action} is not supported on the AWS managed key {key.arn}.")


def require_generated_material(key: Key, action: str) -> None:
    """kmsweb cannot make new material for a key whose material is imported."""
    if key.custom_key_store_id is not None:
        raise UnsupportedOperation(f"{action} is not supported on {key.arn}: it is in a custom key store.")
    if key.origin != KeyOrigin.AWS_KMS:
        raise UnsupportedOperation(f"{action} is not supported on {key.arn}: its key material is imported.")


def state_words(state: str) -> str:
    """A key state as AWS's messages say it ("pending deletion")."""
    return {
        KeyState.PENDING_DELETION: "pending deletion",
        KeyState.PENDING_REPLICA_DELETION: "pending replica deletion",
        KeyState.PENDING_IMPORT: "pending import",
        KeyState.UNAVAILABLE: "unavailable",
        KeyState.CREATING: "being created",
        KeyState.UPDATING: "being updated",
    }.get(KeyState(state), state)


def default_key_policy(account_id: str) -> str:
    """AWS's default key policy: the account root may do everything, which
    delegates the decision to the principals' identity policies."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        indent=2,
    )


# The key operations that destroy or give away a key: the MFA template guards them.
MFA_PROTECTED_ACTIONS = ("kms:ScheduleKeyDeletion", "kms:DisableKey", "kms:PutKeyPolicy", "kms:CreateGrant")
MFA_MAX_AGE_SECONDS = 3600


def mfa_key_policy(account_id: str) -> str:
    """The default key policy plus AWS's "require MFA" pattern for the destructive operations.

    ``BoolIfExists aws:MultiFactorAuthPresent false`` denies long-term access
    keys (which carry no MFA) and temporary credentials obtained without a
    code; ``NumericGreaterThan aws:MultiFactorAuthAge 3600`` denies MFA
    older than an hour. Dashboard sessions passed their TOTP and carry no
    age, so the dashboard keeps these operations. See docs/STS.md.
    """
    policy = json.loads(default_key_policy(account_id))
    policy["Id"] = "key-mfa-1"
    policy["Statement"] += [
        {
            "Sid": "RequireMfaForDestructiveActions",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": list(MFA_PROTECTED_ACTIONS),
            "Resource": "*",
            "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}},
        },
        {
            "Sid": "RequireRecentMfaForDestructiveActions",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": list(MFA_PROTECTED_ACTIONS),
            "Resource": "*",
            "Condition": {"NumericGreaterThan": {"aws:MultiFactorAuthAge": str(MFA_MAX_AGE_SECONDS)}},
        },
    ]
    return json.dumps(policy, indent=2)


def check_policy_document(policy: str) -> None:
    """Validate a key policy with the policy engine's parser (precise messages)."""
    if len(policy.encode()) > MAX_POLICY_BYTES:
        raise MalformedPolicyDocument("The key policy exceeds the maximum size of 32768 bytes.")
    try:
        evaluation.parse_policy(policy, kind="key")
    except evaluation.PolicyError as exc:
        raise MalformedPolicyDocument(exc.message) from exc


def check_policy_lockout(*, caller: Caller, key: Key, policy: str, bypass: bool) -> None:
    """AWS's lockout safety check: refuse a policy under which the caller
    could never call PutKeyPolicy again, unless explicitly bypassed."""
    if bypass or caller.is_system:
        return
    try:
        authorize(caller=caller, action="kms:PutKeyPolicy", key=key, key_policy_override=policy)
    except AccessDenied as exc:
        raise MalformedPolicyDocument(
            "The new key policy will not allow you to update the key policy in the future."
        ) from exc


def check_storable_text(member: str, value: str) -> None:
    """Stored names and descriptions may not hold U+0000 (PostgreSQL text cannot)."""
    if "\x00" in value:
        raise ValidationError(
            f"1 validation error detected: Value at '{member}' failed to satisfy constraint: "
            "Member must not contain the NUL character (U+0000)"
        )


def check_tags(tags: Sequence[Mapping[str, str]], existing: int = 0) -> list[tuple[str, str]]:
    """Validate TagKey/TagValue pairs as AWS does; return them as tuples.

    The wire has already checked lengths against the model; the dashboard
    has not, so they are checked here too. AWS's TagException messages are
    terse ("Duplicate tag keys", "Too many tags"); kmsweb words them the same.
    """
    pairs: dict[str, str] = {}
    for tag in tags:
        tag_key = tag.get("TagKey", "")
        tag_value = tag.get("TagValue", "")
        if not tag_key or len(tag_key) > 128:
            raise TagError("Tag keys must be 1 to 128 characters long.")
        if len(tag_value) > 256:
            raise TagError("Tag values must be at most 256 characters long.")
        if tag_key.lower().startswith("aws:"):
            raise TagError("Tags beginning with aws: are reserved")
        check_storable_text("tagKey", tag_key)
        check_storable_text("tagValue", tag_value)
        if tag_key in pairs:
            raise TagError("Duplicate tag keys")
        pairs[tag_key] = tag_value
    if existing + len(pairs) > MAX_TAGS:
        raise TagError("Too many tags")
    return list(pairs.items())


def key_metadata(key: Key) -> dict[str, Any]:
    """DescribeKey's KeyMetadata for ``key``."""
    meta: dict[str, Any] = {
        "AWSAccountId": key.account_id,
        "KeyId": key.key_id,
        "Arn": key.arn,
        "CreationDate": key.created_at,
        "Enabled": key.state == KeyState.ENABLED,
        "Description": key.description,
        "KeyUsage": key.key_usage,
        "KeyState": key.state,
        "Origin": key.origin,
        "KeyManager": key.manager,
        "CustomerMasterKeySpec": key.key_spec,
        "KeySpec": key.key_spec,
        **SPECS[key.key_spec].algorithms_for(key.key_usage),
        "MultiRegion": key.is_multi_region,
    }
    if key.state == KeyState.PENDING_DELETION:
        meta["DeletionDate"] = key.deletion_date
    if key.state == KeyState.PENDING_REPLICA_DELETION:
        meta["PendingDeletionWindowInDays"] = key.pending_window_days
    if key.is_multi_region:
        meta["MultiRegionConfiguration"] = multi_region_configuration(key)
    # AWS shows a material id only for symmetric encryption keys, the ones
    # that rotate and can have several.
    if key.current_material is not None and key.key_spec == SYMMETRIC_DEFAULT:
        meta["CurrentKeyMaterialId"] = key.current_material.material_id
    if key.custom_key_store_id is not None:
        meta["CustomKeyStoreId"] = key.custom_key_store_id
        if key.origin == KeyOrigin.EXTERNAL_KEY_STORE:
            meta["XksKeyConfiguration"] = {"Id": key.xks_key_id}
        elif key.custom_key_store is not None:
            meta["CloudHsmClusterId"] = key.custom_key_store.cloud_hsm_cluster_id
    if key.origin == KeyOrigin.EXTERNAL and key.expiration_model:
        meta["ExpirationModel"] = key.expiration_model
        if key.expiration_model == ExpirationModel.EXPIRES and key.valid_to is not None:
            meta["ValidTo"] = key.valid_to
    return meta


def multi_region_configuration(key: Key) -> dict[str, Any]:
    """DescribeKey's MultiRegionConfiguration: this key's type, its primary and every replica."""
    from keys.selectors import related_keys

    related = related_keys(key=key)
    primary = next((k for k in related if k.multi_region_type == MultiRegionKeyType.PRIMARY), None)
    config: dict[str, Any] = {
        "MultiRegionKeyType": key.multi_region_type,
        "ReplicaKeys": [
            {"Arn": k.arn, "Region": k.region} for k in related if k.multi_region_type == MultiRegionKeyType.REPLICA
        ],
    }
    if primary is not None:
        config["PrimaryKey"] = {"Arn": primary.arn, "Region": primary.region}
    return config


def key_forget(key: Key) -> None:
    """Bump the keys' generation: every process's API reads ``key`` again on its next request.

    Call it inside the transaction that changes the key, once the key's row
    is locked (``key_lock`` does both), so that the bump commits with the
    change and is taken after the key's lock, as every other bump is.
    """
    from kmsweb.generations import KEYS, generation_bump

    generation_bump(KEYS)


def key_lock(key: Key) -> Key:
    """Re-read the key under a row lock, so concurrent state changes serialise.

    Every change to a key's state, policy or material goes through here (or,
    for the jobs' claims, through ``key_forget``), which is also where the
    keys' generation is bumped (see ``kmsweb.generations``).
    """
    # of=self: PostgreSQL refuses FOR UPDATE on the nullable side of the outer
    # join that select_related("current_material") makes.
    locked = Key.objects.select_for_update(of=("self",)).select_related("current_material").get(pk=key.pk)
    key_forget(locked)
    return locked
