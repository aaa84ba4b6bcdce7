"""Imported key material (Origin EXTERNAL): GetParametersForImport,
ImportKeyMaterial, DeleteImportedKeyMaterial and the expiry job.

The import token
----------------
GetParametersForImport makes an RSA wrapping key pair and saves it as an
``ImportParameters`` row, the private half wrapped by the root key. The token
returned to the client is ``platform_encrypt`` (AES-256-GCM under the
platform owned key ``import-tokens``) of a small JSON document naming that
row, the KMS key, the wrapping algorithm and spec, and the expiry time. It
cannot be forged or altered without the platform key, and each of its claims
is checked again against the row at import time: a token for another key,
for other parameters, past its 24 hours, or already spent is refused.

Material versions
-----------------
The first imported material is version 1 of the key. Deleting it (or its
expiry) empties the wrapped bytes but keeps the row, its ``material_id`` and
its keyed fingerprint (HMAC-SHA256 under a platform owned key, never the
material). Re-importing material whose fingerprint matches fills the same
row again, so ciphertexts made before the deletion decrypt again; other
material is refused with IncorrectKeyMaterialException.

A symmetric encryption key also takes new material (ImportType
NEW_KEY_MATERIAL) for on-demand rotation: it becomes the next version,
PENDING_ROTATION, one at a time, until RotateKeyOnDemand makes it current
(keys.services.rotation). Material pending rotation is not yet bound to the
key: deleting it removes it, and other material may be imported instead.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import audited
from keys.crypto import importing as imp
from keys.crypto.errors import CryptoError
from keys.crypto.specs import SYMMETRIC_DEFAULT
from keys.models import (
    ExpirationModel,
    ImportParameters,
    Key,
    KeyMaterial,
    KeyOrigin,
    KeyState,
)
from keys.services import jobs as key_jobs
from keys.services.common import PENDING_DELETION_STATES, key_forget, key_lock, require_not_pending_deletion
from keys.services.material import material_aad, root_key_provider, root_keyring
from keys.services.platform import platform_decrypt, platform_encrypt, platform_mac_key
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    ExpiredImportToken,
    IncorrectKeyMaterial,
    InternalError,
    InvalidCiphertext,
    InvalidImportToken,
    InvalidState,
    NotFound,
    UnsupportedOperation,
    ValidationError,
)
from policies.authorization import authorize

TOKEN_PURPOSE = "import-tokens"  # noqa: S105 - a platform key purpose, not a secret
FINGERPRINT_PURPOSE = "imported-material-fingerprints"
PARAMETERS_LIFETIME = timedelta(hours=24)
MAX_VALID_TO = timedelta(days=365)
_TOKEN_CONTEXT = {"kmsweb:use": "ImportToken"}
_TOKEN_FORMAT = 1
_IMPORT_TYPES = ("NEW_KEY_MATERIAL", "EXISTING_KEY_MATERIAL")


def _require_external(key: Key, operation: str) -> None:
    if key.origin != KeyOrigin.EXTERNAL:
        raise UnsupportedOperation(
            f"{key.arn} origin is {key.origin} which is not valid for this operation ({operation})."
        )


def _private_key_aad(params_id: uuid.UUID, key_id: uuid.UUID) -> bytes:
    return f"kmsweb:import-wrapping-key:{params_id}:{key_id}".encode()


def key_get_parameters_for_import(
    *, caller: Caller, key: Key, wrapping_algorithm: str, wrapping_key_spec: str
) -> dict[str, Any]:
    """GetParametersForImport: a new RSA wrapping public key (DER) and an import
    token for ``key``, both valid 24 hours.

    Only for EXTERNAL-origin keys not pending deletion. Side effects: one
    ``ImportParameters`` row (private key wrapped by the root key), one
    audited GetParametersForImport event. The public key, token and private
    key are never recorded.
    """
    params = {"KeyId": str(key.id), "WrappingAlgorithm": wrapping_algorithm, "WrappingKeySpec": wrapping_key_spec}
    with audited(caller, "GetParametersForImport", request_parameters=params) as op:
        op.keys.append(key)
        authorize(
            caller=caller,
            action="kms:GetParametersForImport",
            key=key,
            context={"kms:WrappingAlgorithm": wrapping_algorithm, "kms:WrappingKeySpec": wrapping_key_spec},
        )
        _require_external(key, "GetParametersForImport")
        if wrapping_algorithm not in imp.WRAPPING_ALGORITHMS:
            # RSAES_PKCS1_V1_5: AWS stopped accepting it on 10 October 2023;
            # SM2PKE exists only in China Regions.
            raise UnsupportedOperation(f"{wrapping_algorithm} is not a supported wrapping algorithm.")
        if wrapping_key_spec not in imp.WRAPPING_KEY_BITS:
            raise UnsupportedOperation(f"{wrapping_key_spec} is not a supported wrapping key spec.")
        require_not_pending_deletion(key)
        private_der, public_der = imp.generate_wrapping_key(wrapping_key_spec)
        now = timezone.now()
        valid_to = now + PARAMETERS_LIFETIME
        provider = root_key_provider()
        row_id = uuid.uuid4()
        ImportParameters.objects.create(
            id=row_id,
            key=key,
            wrapping_algorithm=wrapping_algorithm,
            wrapping_key_spec=wrapping_key_spec,
            wrapped_private_key=provider.wrap(private_der, _private_key_aad(row_id, key.id)),
            root_key_id=provider.key_id,
            public_key=public_der,
            created_at=now,
            valid_to=valid_to,
        )
        claims = {
            "v": _TOKEN_FORMAT,
            "id": str(row_id),
            "key": str(key.id),
            "alg": wrapping_algorithm,
            "spec": wrapping_key_spec,
            "exp": int(valid_to.timestamp()),
        }
        token = platform_encrypt(
            purpose=TOKEN_PURPOSE, plaintext=json.dumps(claims, sort_keys=True).encode(), context=_TOKEN_CONTEXT
        )
        op.response_elements = {"KeyId": key.arn, "ParametersValidTo": valid_to.isoformat()}
        return {"KeyId": key.arn, "ImportToken": token, "PublicKey": public_der, "ParametersValidTo": valid_to}


def _read_token(token: bytes, key: Key, now: datetime) -> ImportParameters:
    """The locked ``ImportParameters`` row ``token`` names, after checking every claim."""
    try:
        claims = json.loads(platform_decrypt(purpose=TOKEN_PURPOSE, blob=token, context=_TOKEN_CONTEXT))
        row_id = uuid.UUID(claims["id"])
        token_key = uuid.UUID(claims["key"])
        expires = int(claims["exp"])
    except (InternalError, ValueError, KeyError, TypeError) as exc:
        raise InvalidImportToken("The import token is invalid.") from exc
    if token_key != key.id:
        raise InvalidImportToken(f"The import token is not valid for {key.arn}.")
    if now.timestamp() >= expires:
        raise ExpiredImportToken("The import token has expired. Use GetParametersForImport to get a new one.")
    row = ImportParameters.objects.select_for_update().filter(pk=row_id, key=key).first()
    if row is None or row.wrapping_algorithm != claims.get("alg") or row.wrapping_key_spec != claims.get("spec"):
        raise InvalidImportToken("The import token is invalid.")
    if row.used_at is not None:
        raise InvalidImportToken("The import token has already been used. Use GetParametersForImport to get a new one.")
    if now >= row.valid_to:
        raise ExpiredImportToken("The import token has expired. Use GetParametersForImport to get a new one.")
    return row


def _unwrap(row: ImportParameters, wrapped: bytes) -> bytes:
    root = root_keyring().get(row.root_key_id)
    if root is None:
        # Its root key was retired since: the wrapping key is gone with it.
        raise ExpiredImportToken("The import token has expired. Use GetParametersForImport to get a new one.")
    try:
        private_der = root.unwrap(bytes(row.wrapped_private_key), _private_key_aad(row.id, row.key_id))
    except CryptoError as exc:
        raise InternalError("An import wrapping key failed its integrity check.") from exc
    try:
        return imp.unwrap_material(private_der, row.wrapping_algorithm, wrapped)
    except CryptoError as exc:
        raise InvalidCiphertext(
            "The EncryptedKeyMaterial could not be decrypted with the wrapping key and algorithm of this import token."
        ) from exc


def _fingerprint(key: Key, material: bytes, version: int | None = None) -> str:
    mac_version, mac_key = platform_mac_key(purpose=FINGERPRINT_PURPOSE, version=version)
    return f"{mac_version}:{imp.material_fingerprint(mac_key, key.key_id, material)}"


def _related_material(key: Key, version: int = 1) -> KeyMaterial | None:
    """The material ``version`` another related multi-Region key holds (or None)."""
    if key.multi_region_id is None:
        return None
    return (
        KeyMaterial.objects.filter(
            key__multi_region_id=key.multi_region_id, key__deleted_at__isnull=True, version=version
        )
        .exclude(key=key)
        .exclude(fingerprint="")
        .first()
    )


def _matches(row: KeyMaterial, key: Key, material: bytes) -> bool:
    version, _, _ = row.fingerprint.partition(":")
    if not version.isdigit():
        return False
    return imp.fingerprints_equal(row.fingerprint, _fingerprint(key, material, int(version)))


def _check_expiration(model: str | None, valid_to: datetime | None, now: datetime) -> str:
    model = model or ExpirationModel.EXPIRES
    if model == ExpirationModel.EXPIRES:
        if valid_to is None:
            raise ValidationError("A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES.")
        if valid_to <= now:
            raise ValidationError("The validTo date must be in the future.")
        if valid_to > now + MAX_VALID_TO:
            raise ValidationError("The validTo date must be at most 365 days from now.")
    elif valid_to is not None:
        raise ValidationError("A validTo date is only valid if the ExpirationModel is KEY_MATERIAL_EXPIRES.")
    return model


def key_import_material(
    *,
    caller: Caller,
    key: Key,
    import_token: bytes,
    encrypted_key_material: bytes,
    expiration_model: str | None = None,
    valid_to: datetime | None = None,
    import_type: str | None = None,
    key_material_description: str | None = None,
    key_material_id: str | None = None,
) -> dict[str, Any]:
    """ImportKeyMaterial: import, or re-import the same, material into an EXTERNAL key.

    The first import creates material version 1 and makes a PendingImport key
    Enabled. A re-import (ImportType EXISTING_KEY_MATERIAL, the default once
    the key has material) must be material the key has (checked by its keyed
    fingerprint); it refills a deleted material and resets its expiration.
    NEW_KEY_MATERIAL into a symmetric key that has material adds the next
    version, pending rotation (one at a time); asymmetric and HMAC keys keep
    their first material. The token is spent on success only; any failure
    changes nothing and is audited with AWS's error.
    """
    params: dict[str, Any] = {"KeyId": str(key.id), "ExpirationModel": expiration_model or ExpirationModel.EXPIRES}
    if valid_to is not None:
        params["ValidTo"] = valid_to
    for name, value in (
        ("ImportType", import_type),
        ("KeyMaterialDescription", key_material_description),
        ("KeyMaterialId", key_material_id),
    ):
        if value is not None:
            params[name] = value
    with audited(caller, "ImportKeyMaterial", request_parameters=params) as op:
        op.keys.append(key)
        context: dict[str, Any] = {"kms:ExpirationModel": expiration_model or ExpirationModel.EXPIRES}
        if valid_to is not None:
            context["kms:ValidTo"] = int(valid_to.timestamp())
        authorize(caller=caller, action="kms:ImportKeyMaterial", key=key, context=context)
        _require_external(key, "ImportKeyMaterial")
        now = timezone.now()
        model = _check_expiration(expiration_model, valid_to, now)
        if import_type == "NEW_KEY_MATERIAL" and key_material_id:
            raise ValidationError("A KeyMaterialId cannot be specified when the ImportType is NEW_KEY_MATERIAL.")
        key = key_lock(key)
        require_not_pending_deletion(key)
        row = _read_token(import_token, key, now)
        material = _unwrap(row, encrypted_key_material)
        try:
            imp.check_material(key.key_spec, material)
        except imp.MaterialError as exc:
            raise IncorrectKeyMaterial(f"The key material is not valid for a {key.key_spec} key: {exc}.") from exc
        existing = list(KeyMaterial.objects.filter(key=key).order_by("version"))
        provider = root_key_provider()
        found = next((m for m in existing if _matches(m, key, material)), None)
        kept_valid_to = valid_to if model == ExpirationModel.EXPIRES else None
        if not existing or (found is None and import_type == "NEW_KEY_MATERIAL"):
            if existing and key.key_spec != SYMMETRIC_DEFAULT:
                raise UnsupportedOperation(
                    f"{key.arn} already has key material: the key material of a {key.key_spec} key cannot change."
                )
            if existing and any(m.pending_rotation for m in existing):
                raise InvalidState(
                    f"{key.arn} already has key material pending rotation. Rotate the key or delete that "
                    "key material first."
                )
            version = existing[-1].version + 1 if existing else 1
            # A multi-Region key's related keys hold one material per version:
            # once any of them has this version, the others take only that same material.
            shared = _related_material(key, version)
            if shared is not None:
                if not _matches(shared, key, material):
                    raise IncorrectKeyMaterial(
                        f"The key material is not the key material of the multi-Region key {key.key_id}; "
                        "import the same key material into each of its related keys."
                    )
                if key_material_id and key_material_id != shared.material_id:
                    raise IncorrectKeyMaterial(
                        f"The key material does not match the KeyMaterialId {key_material_id} of {key.arn}."
                    )
            elif not existing and (import_type == "EXISTING_KEY_MATERIAL" or key_material_id):
                raise IncorrectKeyMaterial(f"No key material has been imported into {key.arn} yet.")
            fingerprint = shared.fingerprint if shared is not None else _fingerprint(key, material)
            target = KeyMaterial.objects.create(
                key=key,
                version=version,
                # AWS derives the id from the key and the material; the keyed
                # fingerprint does the same without revealing a plain hash.
                material_id=fingerprint.partition(":")[2],
                wrapped=provider.wrap(material, material_aad(key.id, version)),
                root_key_id=provider.key_id,
                created_at=now,
                fingerprint=fingerprint,
                description=key_material_description or "",
                expiration_model=model,
                valid_to=kept_valid_to,
                # Asymmetric keys keep their public key beside the private one.
                public_key=imp.derived_public_key(key.key_spec, material),
            )
        else:
            if found is None:
                raise IncorrectKeyMaterial(
                    f"The key material is not the key material that was previously imported into {key.arn}."
                )
            if import_type == "NEW_KEY_MATERIAL":
                raise IncorrectKeyMaterial(
                    f"ImportType NEW_KEY_MATERIAL, but this key material is already associated with {key.arn}."
                )
            target = found
            if key_material_id and key_material_id != target.material_id:
                raise IncorrectKeyMaterial(
                    f"The key material does not match the KeyMaterialId {key_material_id} of {key.arn}."
                )
            target.wrapped = provider.wrap(material, material_aad(key.id, target.version))
            target.root_key_id = provider.key_id
            target.destroyed_at = None
            target.expiration_model = model
            target.valid_to = kept_valid_to
            if key_material_description is not None:
                target.description = key_material_description
            target.save(
                update_fields=["wrapped", "root_key_id", "destroyed_at", "description", "expiration_model", "valid_to"]
            )
        updates: dict[str, Any] = {}
        if key.current_material_id is None or key.current_material_id == target.pk:
            # The key's expiration is its current material's.
            updates.update(current_material=target, expiration_model=model, valid_to=kept_valid_to)
        missing = KeyMaterial.objects.filter(key=key, destroyed_at__isnull=False).exclude(
            rotation_type="", version__gt=1
        )
        if key.state == KeyState.PENDING_IMPORT and not missing.exists():
            # Enabled once every material bound to the key is there again.
            updates["state"] = KeyState.ENABLED
        if updates:
            Key.objects.filter(pk=key.pk).update(**updates)
        ImportParameters.objects.filter(pk=row.pk).update(used_at=now)
        op.additional_event_data["keyMaterialId"] = target.material_id
        op.response_elements = {"KeyId": key.arn, "KeyMaterialId": target.material_id}
        return {"KeyId": key.arn, "KeyMaterialId": target.material_id}


def _destroy(key: Key, materials: list[KeyMaterial], now: datetime) -> None:
    """Empty the wrapped bytes of ``materials`` and move ``key`` to PendingImport
    (unless it is pending deletion, which it stays, as in AWS)."""
    KeyMaterial.objects.filter(pk__in=[m.pk for m in materials]).update(wrapped=b"", root_key_id="", destroyed_at=now)
    updates: dict[str, Any] = {}
    if key.current_material_id in {m.pk for m in materials}:
        updates.update(expiration_model="", valid_to=None)
    if key.state not in PENDING_DELETION_STATES:
        updates["state"] = KeyState.PENDING_IMPORT
    Key.objects.filter(pk=key.pk).update(**updates)


def key_delete_imported_material(*, caller: Caller, key: Key, key_material_id: str | None = None) -> dict[str, Any]:
    """DeleteImportedKeyMaterial: destroy imported material (the current one unless
    ``key_material_id`` names another); the key becomes PendingImport (a key
    pending deletion keeps its state) and ciphertexts under that material
    fail until the same material is imported again. Material pending
    rotation is not bound to the key: it is removed and the key keeps its
    state."""
    params: dict[str, Any] = {"KeyId": str(key.id)}
    if key_material_id is not None:
        params["KeyMaterialId"] = key_material_id
    with audited(caller, "DeleteImportedKeyMaterial", request_parameters=params) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:DeleteImportedKeyMaterial", key=key)
        _require_external(key, "DeleteImportedKeyMaterial")
        key = key_lock(key)
        materials = list(KeyMaterial.objects.filter(key=key).order_by("version"))
        if key_material_id is not None:
            materials = [m for m in materials if m.material_id == key_material_id]
            if not materials:
                raise NotFound(f"Key material {key_material_id} is not associated with {key.arn}.")
        else:
            materials = [m for m in materials if m.pk == key.current_material_id]
        pending = [m for m in materials if m.pending_rotation]
        if pending:
            KeyMaterial.objects.filter(pk__in=[m.pk for m in pending]).delete()
        else:
            _destroy(key, materials, timezone.now())
        result: dict[str, Any] = {"KeyId": key.arn}
        if materials:
            result["KeyMaterialId"] = materials[-1].material_id
            op.additional_event_data["keyMaterialId"] = materials[-1].material_id
        op.response_elements = dict(result)
        return result


def _expired(key: Key, material: KeyMaterial, now: datetime) -> bool:
    if material.valid_to is not None:
        return material.valid_to <= now
    # Without a ValidTo of its own, the current material expires with the key's ValidTo.
    return material.pk == key.current_material_id and key.valid_to is not None and key.valid_to <= now


def keys_expire_imported_material(*, caller: Caller, now: datetime) -> dict[str, int]:
    """Delete imported material whose ValidTo is ``now`` or past (the
    ``expire_imported_material`` job).

    Per key, in its own transaction: claim it with SELECT ... FOR UPDATE SKIP
    LOCKED if still due, destroy the expired material and move the key to
    PendingImport (a key pending deletion keeps its state; expired material
    pending rotation is removed and the key keeps its state) and record AWS's CloudTrail
    event DeleteExpiredKeyMaterial (an AwsServiceEvent). A key another
    worker holds, or one re-imported meanwhile, is skipped; a second run
    finds nothing due. Also removes import parameters past their 24 hours.
    Returns counts: expired, skipped, parameters_removed.
    """
    counts = {"expired": 0, "skipped": 0, "parameters_removed": 0}
    for pk in key_jobs._ids(Key.objects.material_expired(now)):
        with transaction.atomic():
            key = key_jobs._claim_one(Key.objects.material_expired(now), pk)
            if key is None:
                counts["skipped"] += 1
                continue
            key_forget(key)  # the claim holds the row lock; the API's cache forgets the key
            with audited(caller, "DeleteExpiredKeyMaterial", request_parameters=None) as op:
                op.keys.append(key)
                materials = [
                    m for m in KeyMaterial.objects.filter(key=key, destroyed_at__isnull=True) if _expired(key, m, now)
                ]
                pending = [m for m in materials if m.pending_rotation]
                KeyMaterial.objects.filter(pk__in=[m.pk for m in pending]).delete()
                if len(pending) < len(materials):
                    _destroy(key, [m for m in materials if not m.pending_rotation], now)
                if materials:
                    op.additional_event_data["keyMaterialId"] = materials[-1].material_id
            counts["expired"] += 1
    counts["parameters_removed"] = ImportParameters.objects.filter(valid_to__lt=now).delete()[0]
    return counts
