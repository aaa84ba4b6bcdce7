"""Encrypt, Decrypt, ReEncrypt, GenerateDataKey(WithoutPlaintext), GenerateRandom.

Each is one audited call: resolve, authorize, check state, then let
``keys.crypto`` do the work. Plaintexts and data keys are returned to the
caller and go nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audit.services import Operation, audited
from keys import crypto, selectors
from keys.crypto import asymmetric
from keys.crypto.errors import CryptoError
from keys.crypto.specs import SPECS, oaep_max_plaintext
from keys.models import Key, KeyMaterial
from keys.services.common import require_key_usage, require_symmetric_encryption, require_usable_for_crypto
from keys.services.material import material_unwrap
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    DryRunOperation,
    IncorrectKey,
    InvalidCiphertext,
    InvalidKeyUsage,
    NotFound,
    ValidationError,
)
from policies.authorization import authorize

SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
MAX_PLAINTEXT = 4096
DATA_KEY_SPECS = {"AES_256": 32, "AES_128": 16}
_INVALID_CIPHERTEXT = "The ciphertext is invalid, was altered, or was not encrypted under this key and context."


@dataclass(frozen=True)
class EncryptResult:
    ciphertext: bytes
    key: Key
    key_material_id: str


@dataclass(frozen=True)
class DecryptResult:
    plaintext: bytes
    key: Key
    key_material_id: str


@dataclass(frozen=True)
class DataKeyResult:
    ciphertext: bytes
    plaintext: bytes | None
    key: Key
    key_material_id: str


def _check_algorithm(key: Key, algorithm: str | None, operation: str = "Encrypt") -> str:
    """The key's usage must be ENCRYPT_DECRYPT and the algorithm one its spec offers."""
    require_key_usage(key, "ENCRYPT_DECRYPT", operation)
    chosen = algorithm or SYMMETRIC_DEFAULT
    if chosen not in SPECS[key.key_spec].encryption:
        raise InvalidKeyUsage(f"{key.arn} does not support the encryption algorithm {chosen}.")
    return chosen


def _check_no_context(context: Mapping[str, str] | None) -> None:
    # RSAES-OAEP has nothing to bind a context to; accepting one silently
    # would let a caller believe it was enforced.
    if context:
        raise ValidationError("EncryptionContext is supported only on operations with symmetric encryption KMS keys.")


def _context_params(context: Mapping[str, str] | None, algorithm: str | None) -> dict[str, Any]:
    return {"EncryptionContext": dict(context or {}), "EncryptionAlgorithm": algorithm or SYMMETRIC_DEFAULT}


def _seal(key: Key, plaintext: bytes, context: Mapping[str, str] | None) -> tuple[bytes, str]:
    material = key.current_material
    if material is None:
        raise NotFound(f"{key.arn} has no key material.")
    blob = crypto.encrypt(
        material_unwrap(material), key_id=key.blob_id, version=material.version, plaintext=plaintext, context=context
    )
    return blob, material.material_id


def _prepare(
    op: Operation,
    caller: Caller,
    key: Key,
    action: str,
    context: Mapping[str, str] | None,
    dry_run: bool,
    algorithm: str = SYMMETRIC_DEFAULT,
) -> None:
    if key not in op.keys:
        op.keys.append(key)
    authorize(
        caller=caller,
        action=action,
        key=key,
        context={"EncryptionContext": dict(context or {}), "kms:EncryptionAlgorithm": algorithm},
    )
    require_usable_for_crypto(key)
    if dry_run:
        raise DryRunOperation("The request would have succeeded, but the DryRun flag is set.")


def key_encrypt(
    *,
    caller: Caller,
    key: Key,
    plaintext: bytes,
    context: Mapping[str, str] | None = None,
    algorithm: str | None = None,
    dry_run: bool = False,
) -> EncryptResult:
    """Encrypt up to 4096 bytes under the key's current material."""
    params = {"KeyId": str(key.id), **_context_params(context, algorithm)}
    with audited(caller, "Encrypt", request_parameters=params) as op:
        op.keys.append(key)
        if len(plaintext) > MAX_PLAINTEXT or not plaintext:
            raise ValidationError(
                "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
                f"Member must have length between 1 and {MAX_PLAINTEXT}"
            )
        chosen = _check_algorithm(key, algorithm)
        if chosen != SYMMETRIC_DEFAULT:
            return _rsa_encrypt(op, caller, key, plaintext, context, chosen, dry_run)
        _prepare(op, caller, key, "kms:Encrypt", context, dry_run)
        blob, material_id = _seal(key, plaintext, context)
        op.additional_event_data["keyMaterialId"] = material_id
        return EncryptResult(blob, key, material_id)


def _rsa_encrypt(
    op: Operation,
    caller: Caller,
    key: Key,
    plaintext: bytes,
    context: Mapping[str, str] | None,
    algorithm: str,
    dry_run: bool,
    action: str = "kms:Encrypt",
) -> EncryptResult:
    """RSAES-OAEP under the key's public key: the ciphertext is the raw RSA output, as AWS's."""
    _prepare(op, caller, key, action, context, False, algorithm)
    _check_no_context(context)
    limit = oaep_max_plaintext(SPECS[key.key_spec], algorithm)
    if len(plaintext) > limit:
        raise ValidationError(
            f"Plaintext is {len(plaintext)} bytes; {key.key_spec} with {algorithm} encrypts at most {limit} bytes."
        )
    if dry_run:
        raise DryRunOperation("The request would have succeeded, but the DryRun flag is set.")
    material = _current(key)
    blob = asymmetric.rsa_encrypt(bytes(material.public_key or b""), algorithm=algorithm, plaintext=plaintext)
    return EncryptResult(blob, key, material.material_id)


def _current(key: Key) -> KeyMaterial:
    if key.current_material is None:
        raise NotFound(f"{key.arn} has no key material.")
    return key.current_material


def _open(
    op: Operation,
    caller: Caller,
    blob: bytes,
    context: Mapping[str, str] | None,
    key_ref_key: Key | None,
    action: str,
    dry_run: bool,
) -> DecryptResult:
    """Find the key and material a blob names, authorize, and decrypt it."""
    try:
        header = crypto.parse_header(blob)
    except CryptoError as exc:
        raise InvalidCiphertext(_INVALID_CIPHERTEXT) from exc
    if key_ref_key is not None and key_ref_key.blob_id != header.key_id:
        op.keys.append(key_ref_key)
        raise IncorrectKey("The key ID in the request does not identify a KMS key that can perform this operation.")
    # A deleted, platform owned or unknown key, or a version that no longer
    # exists, all look the same: the blob cannot be decrypted here.
    key = selectors.key_get_for_ciphertext(key_uuid=header.key_id, region=caller.region)
    if key is None or key.region != caller.region:
        raise InvalidCiphertext(_INVALID_CIPHERTEXT)
    material = selectors.material_get_for(key=key, version=header.version)
    if material is None:
        raise InvalidCiphertext(_INVALID_CIPHERTEXT)
    _prepare(op, caller, key, action, context, dry_run)
    try:
        plaintext = crypto.decrypt(material_unwrap(material), blob, context)
    except CryptoError as exc:
        raise InvalidCiphertext(_INVALID_CIPHERTEXT) from exc
    op.additional_event_data["keyMaterialId"] = material.material_id
    return DecryptResult(plaintext, key, material.material_id)


def key_decrypt(
    *,
    caller: Caller,
    ciphertext: bytes,
    context: Mapping[str, str] | None = None,
    key: Key | None = None,
    algorithm: str | None = None,
    dry_run: bool = False,
) -> DecryptResult:
    """Decrypt a blob; the key comes from the blob, and a given ``key`` must match it."""
    params: dict[str, Any] = _context_params(context, algorithm)
    if key is not None:
        params["KeyId"] = str(key.id)
    with audited(caller, "Decrypt", request_parameters=params) as op:
        if key is not None:
            if key.key_spec != SYMMETRIC_DEFAULT:
                return _rsa_decrypt(op, caller, key, ciphertext, context, algorithm, dry_run)
            _check_algorithm(key, algorithm, "Decrypt")
        elif algorithm not in (None, SYMMETRIC_DEFAULT):
            # An asymmetric ciphertext carries no key id: without KeyId there
            # is no key to try, as in AWS.
            raise InvalidCiphertext(_INVALID_CIPHERTEXT)
        return _open(op, caller, ciphertext, context, key, "kms:Decrypt", dry_run)


def _rsa_decrypt(
    op: Operation,
    caller: Caller,
    key: Key,
    ciphertext: bytes,
    context: Mapping[str, str] | None,
    algorithm: str | None,
    dry_run: bool,
    action: str = "kms:Decrypt",
) -> DecryptResult:
    """RSAES-OAEP decryption with the key's private key (KeyId and algorithm are required)."""
    if key not in op.keys:
        op.keys.append(key)
    chosen = algorithm or SYMMETRIC_DEFAULT
    _prepare(op, caller, key, action, context, False, chosen)
    chosen = _check_algorithm(key, algorithm, "Decrypt" if action == "kms:Decrypt" else "ReEncrypt")
    _check_no_context(context)
    if dry_run:
        raise DryRunOperation("The request would have succeeded, but the DryRun flag is set.")
    material = _current(key)
    try:
        plaintext = asymmetric.rsa_decrypt(material_unwrap(material), algorithm=chosen, ciphertext=ciphertext)
    except CryptoError as exc:
        raise InvalidCiphertext(_INVALID_CIPHERTEXT) from exc
    return DecryptResult(plaintext, key, material.material_id)


def key_reencrypt(
    *,
    caller: Caller,
    ciphertext: bytes,
    destination_key: Key,
    source_context: Mapping[str, str] | None = None,
    destination_context: Mapping[str, str] | None = None,
    source_key: Key | None = None,
    source_algorithm: str | None = None,
    destination_algorithm: str | None = None,
    dry_run: bool = False,
) -> tuple[EncryptResult, DecryptResult]:
    """Decrypt under the source key and encrypt under the destination, server side.

    Needs kms:ReEncryptFrom on the source and kms:ReEncryptTo on the destination.
    """
    params: dict[str, Any] = {
        "DestinationKeyId": str(destination_key.id),
        "SourceEncryptionContext": dict(source_context or {}),
        "DestinationEncryptionContext": dict(destination_context or {}),
        "SourceEncryptionAlgorithm": source_algorithm or SYMMETRIC_DEFAULT,
        "DestinationEncryptionAlgorithm": destination_algorithm or SYMMETRIC_DEFAULT,
    }
    with audited(caller, "ReEncrypt", request_parameters=params) as op:
        # An RSA source needs its KeyId and algorithm (its ciphertext names no key); an
        # RSA destination encrypts with RSAES-OAEP under its public key.
        if source_key is not None and source_key.key_spec != SYMMETRIC_DEFAULT:
            opened = _rsa_decrypt(
                op, caller, source_key, ciphertext, source_context, source_algorithm, False, "kms:ReEncryptFrom"
            )
        else:
            if source_key is not None:
                _check_algorithm(source_key, source_algorithm, "ReEncrypt")
            elif source_algorithm not in (None, SYMMETRIC_DEFAULT):
                raise InvalidCiphertext(_INVALID_CIPHERTEXT)
            opened = _open(op, caller, ciphertext, source_context, source_key, "kms:ReEncryptFrom", False)
        chosen = _check_algorithm(destination_key, destination_algorithm, "ReEncrypt")
        if chosen != SYMMETRIC_DEFAULT:
            sealed = _rsa_encrypt(
                op, caller, destination_key, opened.plaintext, destination_context, chosen, dry_run, "kms:ReEncryptTo"
            )
            return sealed, opened
        _prepare(op, caller, destination_key, "kms:ReEncryptTo", destination_context, dry_run)
        blob, material_id = _seal(destination_key, opened.plaintext, destination_context)
        op.additional_event_data["destinationKeyMaterialId"] = material_id
        return EncryptResult(blob, destination_key, material_id), opened


def key_generate_data_key(
    *,
    caller: Caller,
    key: Key,
    key_spec: str | None = None,
    number_of_bytes: int | None = None,
    context: Mapping[str, str] | None = None,
    with_plaintext: bool = True,
    dry_run: bool = False,
) -> DataKeyResult:
    """A fresh random data key, returned encrypted under ``key`` (and in the clear if asked)."""
    event = "GenerateDataKey" if with_plaintext else "GenerateDataKeyWithoutPlaintext"
    params: dict[str, Any] = {"KeyId": str(key.id), "EncryptionContext": dict(context or {})}
    if key_spec:
        params["KeySpec"] = key_spec
    if number_of_bytes is not None:
        params["NumberOfBytes"] = number_of_bytes
    with audited(caller, event, request_parameters=params) as op:
        op.keys.append(key)
        require_symmetric_encryption(key, event)
        if (key_spec is None) == (number_of_bytes is None):
            raise ValidationError("Please specify either number of bytes or key spec.")
        if key_spec is not None:
            size = DATA_KEY_SPECS.get(key_spec)
            if size is None:
                raise ValidationError(
                    f"1 validation error detected: Value '{key_spec}' at 'keySpec' failed to satisfy constraint: "
                    "Member must satisfy enum value set: [AES_256, AES_128]"
                )
        else:
            assert number_of_bytes is not None
            size = number_of_bytes
            if not 1 <= size <= 1024:
                raise ValidationError(
                    f"1 validation error detected: Value '{size}' at 'numberOfBytes' failed to satisfy "
                    "constraint: Member must have value between 1 and 1024"
                )
        _prepare(op, caller, key, f"kms:{event}", context, dry_run)
        data_key = crypto.random_bytes(size)
        blob, material_id = _seal(key, data_key, context)
        op.additional_event_data["keyMaterialId"] = material_id
        return DataKeyResult(blob, data_key if with_plaintext else None, key, material_id)


def random_generate(*, caller: Caller, number_of_bytes: int | None) -> bytes:
    """GenerateRandom: 1-1024 cryptographically secure random bytes."""
    with audited(caller, "GenerateRandom", request_parameters={"NumberOfBytes": number_of_bytes}):
        authorize(caller=caller, action="kms:GenerateRandom")
        if number_of_bytes is None or not 1 <= number_of_bytes <= 1024:
            raise ValidationError(
                f"1 validation error detected: Value '{number_of_bytes}' at 'numberOfBytes' failed to satisfy "
                "constraint: Member must have value between 1 and 1024"
            )
        return crypto.random_bytes(number_of_bytes)
