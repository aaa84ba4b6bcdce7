"""One handler per KMS operation: typed parameters in, the service's answer out.

Handlers only translate: they resolve key references through selectors,
call one service, and shape its result as the operation's output. The
parameters have already been checked against botocore's KMS model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keys import selectors, services
from keys.crypto.specs import SYMMETRIC_DEFAULT
from keys.models import Key
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import NotFound, UnsupportedOperation
from policies import services as policy_services

Params = dict[str, Any]
Handler = Callable[[Caller, Params], dict[str, Any]]


def _key(caller: Caller, p: Params, member: str = "KeyId", *, allow_alias: bool = False) -> Key:
    return selectors.key_get_for(caller=caller, key_ref=p[member], allow_alias=allow_alias)


def _key_or_service_key(caller: Caller, p: Params, member: str = "KeyId") -> Key:
    """Resolve a key reference; a missing ``alias/aws/<service>`` of the
    caller's own account is created on this first use (as AWS does for its
    AWS managed keys) when the service is registered."""
    try:
        return _key(caller, p, member, allow_alias=True)
    except NotFound:
        name = _own_alias_name(caller, p[member])
        key = services.service_key_get_or_create(caller=caller, alias_name=name) if name else None
        if key is None:
            raise
        key.requested_as = name
        return key


def _own_alias_name(caller: Caller, ref: str) -> str | None:
    ref = ref.strip()
    if ref.startswith("alias/"):
        return ref
    prefix = f"arn:aws:kms:{caller.region}:{caller.account_id}:"
    if ref.startswith(prefix + "alias/"):
        return ref[len(prefix) :]
    return None


def _optional_key(caller: Caller, p: Params, member: str) -> Key | None:
    return _key(caller, p, member, allow_alias=True) if p.get(member) else None


def create_key(caller: Caller, p: Params) -> dict[str, Any]:
    key = services.key_create(
        caller=caller,
        description=p.get("Description", ""),
        key_spec=p.get("KeySpec") or p.get("CustomerMasterKeySpec"),
        key_usage=p.get("KeyUsage"),
        origin=p.get("Origin"),
        policy=p.get("Policy"),
        tags=p.get("Tags", []),
        multi_region=bool(p.get("MultiRegion")),
        custom_key_store_id=p.get("CustomKeyStoreId"),
        xks_key_id=p.get("XksKeyId"),
        bypass_policy_lockout_check=bool(p.get("BypassPolicyLockoutSafetyCheck")),
        request_parameters={k: v for k, v in p.items() if k != "Policy"},
    )
    return {"KeyMetadata": services.key_describe_metadata(key)}


def replicate_key(caller: Caller, p: Params) -> dict[str, Any]:
    replica = services.key_replicate(
        caller=caller,
        key=_key(caller, p),
        replica_region=p["ReplicaRegion"],
        policy=p.get("Policy"),
        description=p.get("Description", ""),
        tags=p.get("Tags", []),
        bypass_policy_lockout_check=bool(p.get("BypassPolicyLockoutSafetyCheck")),
    )
    return {
        "ReplicaKeyMetadata": services.key_describe_metadata(replica),
        "ReplicaPolicy": replica.policy,
        "ReplicaTags": [{"TagKey": t.tag_key, "TagValue": t.tag_value} for t in replica.tags.all()],
    }


def update_primary_region(caller: Caller, p: Params) -> dict[str, Any]:
    services.key_update_primary_region(caller=caller, key=_key(caller, p), primary_region=p["PrimaryRegion"])
    return {}


def describe_key(caller: Caller, p: Params) -> dict[str, Any]:
    return {"KeyMetadata": services.key_describe(caller=caller, key=_key_or_service_key(caller, p))}


def list_keys(caller: Caller, p: Params) -> dict[str, Any]:
    return services.key_list(
        caller=caller, limit=p.get("Limit"), marker=p.get("Marker"), resource_owners=p.get("ResourceOwners")
    )


def update_key_description(caller: Caller, p: Params) -> dict[str, Any]:
    services.key_update_description(caller=caller, key=_key(caller, p), description=p["Description"])
    return {}


def enable_key(caller: Caller, p: Params) -> dict[str, Any]:
    services.key_enable(caller=caller, key=_key(caller, p))
    return {}


def disable_key(caller: Caller, p: Params) -> dict[str, Any]:
    services.key_disable(caller=caller, key=_key(caller, p))
    return {}


def schedule_key_deletion(caller: Caller, p: Params) -> dict[str, Any]:
    return services.key_schedule_deletion(
        caller=caller, key=_key(caller, p), pending_window_days=p.get("PendingWindowInDays")
    )


def cancel_key_deletion(caller: Caller, p: Params) -> dict[str, Any]:
    return services.key_cancel_deletion(caller=caller, key=_key(caller, p))


def encrypt(caller: Caller, p: Params) -> dict[str, Any]:
    result = services.key_encrypt(
        caller=caller,
        key=_key_or_service_key(caller, p),
        plaintext=p["Plaintext"],
        context=p.get("EncryptionContext"),
        algorithm=p.get("EncryptionAlgorithm"),
        dry_run=bool(p.get("DryRun")),
    )
    return {
        "CiphertextBlob": result.ciphertext,
        "KeyId": result.key.arn,
        "EncryptionAlgorithm": p.get("EncryptionAlgorithm") or "SYMMETRIC_DEFAULT",
    }


def decrypt(caller: Caller, p: Params) -> dict[str, Any]:
    result = services.key_decrypt(
        caller=caller,
        ciphertext=p["CiphertextBlob"],
        context=p.get("EncryptionContext"),
        key=_optional_key(caller, p, "KeyId"),
        algorithm=p.get("EncryptionAlgorithm"),
        dry_run=bool(p.get("DryRun")),
    )
    return {
        "KeyId": result.key.arn,
        "Plaintext": result.plaintext,
        "EncryptionAlgorithm": p.get("EncryptionAlgorithm") or "SYMMETRIC_DEFAULT",
        "KeyMaterialId": _material_id(result.key, result.key_material_id),
    }


def _material_id(key: Key, material_id: str) -> str | None:
    """AWS names the key material only for symmetric encryption keys."""
    return material_id if key.key_spec == SYMMETRIC_DEFAULT else None


def re_encrypt(caller: Caller, p: Params) -> dict[str, Any]:
    sealed, opened = services.key_reencrypt(
        caller=caller,
        ciphertext=p["CiphertextBlob"],
        destination_key=_key_or_service_key(caller, p, "DestinationKeyId"),
        source_context=p.get("SourceEncryptionContext"),
        destination_context=p.get("DestinationEncryptionContext"),
        source_key=_optional_key(caller, p, "SourceKeyId"),
        source_algorithm=p.get("SourceEncryptionAlgorithm"),
        destination_algorithm=p.get("DestinationEncryptionAlgorithm"),
        dry_run=bool(p.get("DryRun")),
    )
    return {
        "CiphertextBlob": sealed.ciphertext,
        "SourceKeyId": opened.key.arn,
        "KeyId": sealed.key.arn,
        "SourceEncryptionAlgorithm": p.get("SourceEncryptionAlgorithm") or "SYMMETRIC_DEFAULT",
        "DestinationEncryptionAlgorithm": p.get("DestinationEncryptionAlgorithm") or "SYMMETRIC_DEFAULT",
        "SourceKeyMaterialId": _material_id(opened.key, opened.key_material_id),
        "DestinationKeyMaterialId": _material_id(sealed.key, sealed.key_material_id),
    }


def _data_key(caller: Caller, p: Params, *, with_plaintext: bool) -> dict[str, Any]:
    result = services.key_generate_data_key(
        caller=caller,
        key=_key_or_service_key(caller, p),
        key_spec=p.get("KeySpec"),
        number_of_bytes=p.get("NumberOfBytes"),
        context=p.get("EncryptionContext"),
        with_plaintext=with_plaintext,
        dry_run=bool(p.get("DryRun")),
    )
    out: dict[str, Any] = {"CiphertextBlob": result.ciphertext, "KeyId": result.key.arn}
    if with_plaintext:
        out["Plaintext"] = result.plaintext
        out["KeyMaterialId"] = result.key_material_id
    return out


def generate_data_key(caller: Caller, p: Params) -> dict[str, Any]:
    return _data_key(caller, p, with_plaintext=True)


def generate_data_key_without_plaintext(caller: Caller, p: Params) -> dict[str, Any]:
    return _data_key(caller, p, with_plaintext=False)


def generate_random(caller: Caller, p: Params) -> dict[str, Any]:
    if p.get("Recipient"):
        raise UnsupportedOperation("Recipient (Nitro Enclaves attestation) is not supported by kmsweb.")
    plaintext = services.random_generate(
        caller=caller, number_of_bytes=p.get("NumberOfBytes"), custom_key_store_id=p.get("CustomKeyStoreId")
    )
    return {"Plaintext": plaintext}


def sign(caller: Caller, p: Params) -> dict[str, Any]:
    signature, key = services.key_sign(
        caller=caller,
        key=_key(caller, p, allow_alias=True),
        message=p["Message"],
        algorithm=p["SigningAlgorithm"],
        message_type=p.get("MessageType"),
        dry_run=bool(p.get("DryRun")),
    )
    return {"KeyId": key.arn, "Signature": signature, "SigningAlgorithm": p["SigningAlgorithm"]}


def verify(caller: Caller, p: Params) -> dict[str, Any]:
    key = services.key_verify(
        caller=caller,
        key=_key(caller, p, allow_alias=True),
        message=p["Message"],
        signature=p["Signature"],
        algorithm=p["SigningAlgorithm"],
        message_type=p.get("MessageType"),
        dry_run=bool(p.get("DryRun")),
    )
    return {"KeyId": key.arn, "SignatureValid": True, "SigningAlgorithm": p["SigningAlgorithm"]}


def get_public_key(caller: Caller, p: Params) -> dict[str, Any]:
    result = services.key_get_public_key(caller=caller, key=_key(caller, p, allow_alias=True))
    return {**result.metadata, "PublicKey": result.public_key}


def generate_mac(caller: Caller, p: Params) -> dict[str, Any]:
    mac, key = services.key_generate_mac(
        caller=caller,
        key=_key(caller, p, allow_alias=True),
        message=p["Message"],
        algorithm=p["MacAlgorithm"],
        dry_run=bool(p.get("DryRun")),
    )
    return {"Mac": mac, "MacAlgorithm": p["MacAlgorithm"], "KeyId": key.arn}


def verify_mac(caller: Caller, p: Params) -> dict[str, Any]:
    key = services.key_verify_mac(
        caller=caller,
        key=_key(caller, p, allow_alias=True),
        message=p["Message"],
        mac=p["Mac"],
        algorithm=p["MacAlgorithm"],
        dry_run=bool(p.get("DryRun")),
    )
    return {"KeyId": key.arn, "MacValid": True, "MacAlgorithm": p["MacAlgorithm"]}


def derive_shared_secret(caller: Caller, p: Params) -> dict[str, Any]:
    if p.get("Recipient"):
        raise UnsupportedOperation("Recipient (Nitro Enclaves attestation) is not supported by kmsweb.")
    secret, key = services.key_derive_shared_secret(
        caller=caller,
        key=_key(caller, p, allow_alias=True),
        algorithm=p["KeyAgreementAlgorithm"],
        public_key=p["PublicKey"],
        dry_run=bool(p.get("DryRun")),
    )
    return {
        "KeyId": key.arn,
        "SharedSecret": secret,
        "KeyAgreementAlgorithm": p["KeyAgreementAlgorithm"],
        "KeyOrigin": key.origin,
    }


def encapsulate(caller: Caller, p: Params) -> dict[str, Any]:
    result = services.key_encapsulate(
        caller=caller,
        key=_key(caller, p, allow_alias=True),
        algorithm=p["EncapsulationAlgorithm"],
        dry_run=bool(p.get("DryRun")),
    )
    return {
        "KeyId": result.key.arn,
        "SharedSecret": result.shared_secret,
        "SharedSecretCiphertextBlob": result.ciphertext,
        "EncapsulationAlgorithm": p["EncapsulationAlgorithm"],
    }


def decapsulate(caller: Caller, p: Params) -> dict[str, Any]:
    secret, key = services.key_decapsulate(
        caller=caller,
        key=_key(caller, p, allow_alias=True),
        ciphertext=p["SharedSecretCiphertextBlob"],
        algorithm=p["EncapsulationAlgorithm"],
        dry_run=bool(p.get("DryRun")),
    )
    return {"KeyId": key.arn, "SharedSecret": secret, "EncapsulationAlgorithm": p["EncapsulationAlgorithm"]}


def _data_key_pair(caller: Caller, p: Params, *, with_plaintext: bool) -> dict[str, Any]:
    if p.get("Recipient"):
        raise UnsupportedOperation("Recipient (Nitro Enclaves attestation) is not supported by kmsweb.")
    result = services.key_generate_data_key_pair(
        caller=caller,
        key=_key(caller, p, allow_alias=True),
        key_pair_spec=p["KeyPairSpec"],
        context=p.get("EncryptionContext"),
        with_plaintext=with_plaintext,
        dry_run=bool(p.get("DryRun")),
    )
    out: dict[str, Any] = {
        "PrivateKeyCiphertextBlob": result.private_key_ciphertext,
        "PublicKey": result.public_key,
        "KeyId": result.key.arn,
        "KeyPairSpec": result.key_pair_spec,
        "KeyMaterialId": result.key_material_id,
    }
    if with_plaintext:
        out["PrivateKeyPlaintext"] = result.private_key_plaintext
    return out


def generate_data_key_pair(caller: Caller, p: Params) -> dict[str, Any]:
    return _data_key_pair(caller, p, with_plaintext=True)


def generate_data_key_pair_without_plaintext(caller: Caller, p: Params) -> dict[str, Any]:
    return _data_key_pair(caller, p, with_plaintext=False)


def create_alias(caller: Caller, p: Params) -> dict[str, Any]:
    services.alias_create(caller=caller, name=p["AliasName"], key=_key(caller, p, "TargetKeyId"))
    return {}


def update_alias(caller: Caller, p: Params) -> dict[str, Any]:
    services.alias_update(caller=caller, name=p["AliasName"], key=_key(caller, p, "TargetKeyId"))
    return {}


def delete_alias(caller: Caller, p: Params) -> dict[str, Any]:
    services.alias_delete(caller=caller, name=p["AliasName"])
    return {}


def list_aliases(caller: Caller, p: Params) -> dict[str, Any]:
    key = _key(caller, p) if p.get("KeyId") else None
    return services.alias_list(caller=caller, key=key, limit=p.get("Limit"), marker=p.get("Marker"))


def tag_resource(caller: Caller, p: Params) -> dict[str, Any]:
    services.key_tag(caller=caller, key=_key(caller, p), tags=p["Tags"])
    return {}


def untag_resource(caller: Caller, p: Params) -> dict[str, Any]:
    services.key_untag(caller=caller, key=_key(caller, p), tag_keys=p["TagKeys"])
    return {}


def list_resource_tags(caller: Caller, p: Params) -> dict[str, Any]:
    return services.key_list_tags(caller=caller, key=_key(caller, p), limit=p.get("Limit"), marker=p.get("Marker"))


def enable_key_rotation(caller: Caller, p: Params) -> dict[str, Any]:
    services.key_enable_rotation(caller=caller, key=_key(caller, p), period_days=p.get("RotationPeriodInDays"))
    return {}


def disable_key_rotation(caller: Caller, p: Params) -> dict[str, Any]:
    services.key_disable_rotation(caller=caller, key=_key(caller, p))
    return {}


def get_key_rotation_status(caller: Caller, p: Params) -> dict[str, Any]:
    return services.key_rotation_status(caller=caller, key=_key(caller, p))


def rotate_key_on_demand(caller: Caller, p: Params) -> dict[str, Any]:
    key = _key(caller, p)
    services.key_rotate(caller=caller, key=key, rotation_type="ON_DEMAND")
    return {"KeyId": key.arn}


def list_key_rotations(caller: Caller, p: Params) -> dict[str, Any]:
    return services.key_list_rotations(
        caller=caller,
        key=_key(caller, p),
        include_initial=p.get("IncludeKeyMaterial") == "ALL_KEY_MATERIAL",
        limit=p.get("Limit"),
        marker=p.get("Marker"),
    )


def create_grant(caller: Caller, p: Params) -> dict[str, Any]:
    grant, token = policy_services.grant_create(
        caller=caller,
        key=_key(caller, p),
        grantee_principal=p.get("GranteePrincipal"),
        grantee_service_principal=p.get("GranteeServicePrincipal"),
        retiring_service_principal=p.get("RetiringServicePrincipal"),
        operations=p.get("Operations", []),
        retiring_principal=p.get("RetiringPrincipal"),
        constraints=p.get("Constraints"),
        name=p.get("Name"),
        dry_run=bool(p.get("DryRun")),
    )
    return {"GrantToken": token, "GrantId": grant.grant_id}


def list_grants(caller: Caller, p: Params) -> dict[str, Any]:
    return policy_services.grant_list(
        caller=caller,
        key=_key(caller, p),
        grant_id=p.get("GrantId"),
        grantee_principal=p.get("GranteePrincipal"),
        limit=p.get("Limit"),
        marker=p.get("Marker"),
    )


def list_retirable_grants(caller: Caller, p: Params) -> dict[str, Any]:
    return policy_services.grant_list_retirable(
        caller=caller,
        retiring_principal=p.get("RetiringPrincipal"),
        retiring_service_principal=p.get("RetiringServicePrincipal"),
        limit=p.get("Limit"),
        marker=p.get("Marker"),
    )


def retire_grant(caller: Caller, p: Params) -> dict[str, Any]:
    key = _key(caller, p) if p.get("KeyId") else None
    policy_services.grant_retire(
        caller=caller, token=p.get("GrantToken"), key=key, grant_id=p.get("GrantId"), dry_run=bool(p.get("DryRun"))
    )
    return {}


def revoke_grant(caller: Caller, p: Params) -> dict[str, Any]:
    policy_services.grant_revoke(
        caller=caller, key=_key(caller, p), grant_id=p["GrantId"], dry_run=bool(p.get("DryRun"))
    )
    return {}


def _check_policy_name(p: Params) -> None:
    if p.get("PolicyName", "default") != "default":
        raise NotFound("A key has one key policy, named 'default'.")


def get_key_policy(caller: Caller, p: Params) -> dict[str, Any]:
    _check_policy_name(p)
    key = _key(caller, p)
    return {"Policy": services.key_get_policy(caller=caller, key=key), "PolicyName": "default"}


def put_key_policy(caller: Caller, p: Params) -> dict[str, Any]:
    _check_policy_name(p)
    services.key_put_policy(
        caller=caller,
        key=_key(caller, p),
        policy=p["Policy"],
        bypass_lockout_check=bool(p.get("BypassPolicyLockoutSafetyCheck")),
    )
    return {}


def list_key_policies(caller: Caller, p: Params) -> dict[str, Any]:
    return {"PolicyNames": services.key_list_policies(caller=caller, key=_key(caller, p)), "Truncated": False}


def get_key_last_usage(caller: Caller, p: Params) -> dict[str, Any]:
    # Key id or key ARN only: AWS does not accept aliases here.
    return services.key_last_usage(caller=caller, key=_key(caller, p))


def get_parameters_for_import(caller: Caller, p: Params) -> dict[str, Any]:
    return services.key_get_parameters_for_import(
        caller=caller,
        key=_key(caller, p),
        wrapping_algorithm=p["WrappingAlgorithm"],
        wrapping_key_spec=p["WrappingKeySpec"],
    )


def import_key_material(caller: Caller, p: Params) -> dict[str, Any]:
    return services.key_import_material(
        caller=caller,
        key=_key(caller, p),
        import_token=p["ImportToken"],
        encrypted_key_material=p["EncryptedKeyMaterial"],
        expiration_model=p.get("ExpirationModel"),
        valid_to=p.get("ValidTo"),
        import_type=p.get("ImportType"),
        key_material_description=p.get("KeyMaterialDescription"),
        key_material_id=p.get("KeyMaterialId"),
    )


def delete_imported_key_material(caller: Caller, p: Params) -> dict[str, Any]:
    return services.key_delete_imported_material(
        caller=caller, key=_key(caller, p), key_material_id=p.get("KeyMaterialId")
    )


def create_custom_key_store(caller: Caller, p: Params) -> dict[str, Any]:
    store = services.custom_key_store_create(caller=caller, params=p)
    return {"CustomKeyStoreId": store.id}


def describe_custom_key_stores(caller: Caller, p: Params) -> dict[str, Any]:
    return services.custom_key_store_describe(
        caller=caller,
        store_id=p.get("CustomKeyStoreId"),
        name=p.get("CustomKeyStoreName"),
        limit=p.get("Limit"),
        marker=p.get("Marker"),
    )


def update_custom_key_store(caller: Caller, p: Params) -> dict[str, Any]:
    services.custom_key_store_update(caller=caller, params=p)
    return {}


def delete_custom_key_store(caller: Caller, p: Params) -> dict[str, Any]:
    services.custom_key_store_delete(caller=caller, store_id=p["CustomKeyStoreId"])
    return {}


def connect_custom_key_store(caller: Caller, p: Params) -> dict[str, Any]:
    services.custom_key_store_connect(caller=caller, store_id=p["CustomKeyStoreId"])
    return {}


def disconnect_custom_key_store(caller: Caller, p: Params) -> dict[str, Any]:
    services.custom_key_store_disconnect(caller=caller, store_id=p["CustomKeyStoreId"])
    return {}


HANDLERS: dict[str, Handler] = {
    "CreateKey": create_key,
    "DescribeKey": describe_key,
    "ReplicateKey": replicate_key,
    "UpdatePrimaryRegion": update_primary_region,
    "ListKeys": list_keys,
    "UpdateKeyDescription": update_key_description,
    "EnableKey": enable_key,
    "DisableKey": disable_key,
    "ScheduleKeyDeletion": schedule_key_deletion,
    "CancelKeyDeletion": cancel_key_deletion,
    "Encrypt": encrypt,
    "Decrypt": decrypt,
    "ReEncrypt": re_encrypt,
    "GenerateDataKey": generate_data_key,
    "GenerateDataKeyWithoutPlaintext": generate_data_key_without_plaintext,
    "GenerateRandom": generate_random,
    "Sign": sign,
    "Verify": verify,
    "GetPublicKey": get_public_key,
    "GenerateMac": generate_mac,
    "VerifyMac": verify_mac,
    "DeriveSharedSecret": derive_shared_secret,
    "Encapsulate": encapsulate,
    "Decapsulate": decapsulate,
    "GenerateDataKeyPair": generate_data_key_pair,
    "GenerateDataKeyPairWithoutPlaintext": generate_data_key_pair_without_plaintext,
    "CreateAlias": create_alias,
    "UpdateAlias": update_alias,
    "DeleteAlias": delete_alias,
    "ListAliases": list_aliases,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListResourceTags": list_resource_tags,
    "EnableKeyRotation": enable_key_rotation,
    "DisableKeyRotation": disable_key_rotation,
    "GetKeyRotationStatus": get_key_rotation_status,
    "RotateKeyOnDemand": rotate_key_on_demand,
    "ListKeyRotations": list_key_rotations,
    "GetKeyPolicy": get_key_policy,
    "PutKeyPolicy": put_key_policy,
    "ListKeyPolicies": list_key_policies,
    "GetKeyLastUsage": get_key_last_usage,
    "CreateGrant": create_grant,
    "ListGrants": list_grants,
    "ListRetirableGrants": list_retirable_grants,
    "RetireGrant": retire_grant,
    "RevokeGrant": revoke_grant,
    "GetParametersForImport": get_parameters_for_import,
    "ImportKeyMaterial": import_key_material,
    "DeleteImportedKeyMaterial": delete_imported_key_material,
    "CreateCustomKeyStore": create_custom_key_store,
    "DescribeCustomKeyStores": describe_custom_key_stores,
    "UpdateCustomKeyStore": update_custom_key_store,
    "DeleteCustomKeyStore": delete_custom_key_store,
    "ConnectCustomKeyStore": connect_custom_key_store,
    "DisconnectCustomKeyStore": disconnect_custom_key_store,
}
