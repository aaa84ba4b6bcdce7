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
from keys.services.store_keys import store_decrypt, store_encrypt, store_random
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
_INCORRECT_KEY = "The key ID in the request does not identify a KMS key that can perform this operation."


def _plaintext_too_long(limit: int) -> ValidationError:
    return ValidationError(
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        f"Member must have length less than or equal to {limit}"
    )


def _is_symmetric_family(key: Key) -> bool:
    """Symmetric encryption and HMAC keys: a ciphertext names its key, so a KeyId is only compared."""
    return key.key_spec == SYMMETRIC_DEFAULT or key.key_spec.startswith("HMAC_")


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


def _seal(
    caller: Caller, key: Key, plaintext: bytes, context: Mapping[str, str] | None, operation: str
) -> tuple[bytes, str]:
    material = key.current_material
    if material is None:
        raise NotFound(f"{key.arn} has no key material.")
    if key.custom_key_store_id is not None:
        blob = store_encrypt(
            caller=caller, key=key, material=material, plaintext=plaintext, context=context, operation=operation
        )
        return blob, material.material_id
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
    algorithm: str = SYMMETRIC_DEFAULT,
) -> None:
    """Authorize ``action`` on the key, then check its state (AWS's order: permission, state, type)."""
    if key not in op.keys:
        op.keys.append(key)
    authorize(
        caller=caller,
        action=action,
        key=key,
        context={"EncryptionContext": dict(context or {}), "kms:EncryptionAlgorithm": algorithm},
    )
    require_usable_for_crypto(key)


def _dry_run(dry_run: bool) -> None:
    if dry_run:
        raise DryRunOperation()


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
        if not plaintext:
            # The wire's model refuses it first; the dashboard's form arrives here.
            raise ValidationError(
                "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
                "Member must have length greater than or equal to 1"
            )
        if len(plaintext) > MAX_PLAINTEXT:
            raise _plaintext_too_long(MAX_PLAINTEXT)
        # AWS's order: the caller's permission, then the key's state, then its type.
        _prepare(op, caller, key, "kms:Encrypt", context, algorithm or SYMMETRIC_DEFAULT)
        chosen = _check_algorithm(key, algorithm)
        if chosen != SYMMETRIC_DEFAULT:
            return _rsa_encrypt(key, plaintext, context, chosen, dry_run)
        _dry_run(dry_run)
        blob, material_id = _seal(caller, key, plaintext, context, "Encrypt")
        op.additional_event_data["keyMaterialId"] = material_id
        return EncryptResult(blob, key, material_id)


def _rsa_encrypt(
    key: Key,
    plaintext: bytes,
    context: Mapping[str, str] | None,
    algorithm: str,
    dry_run: bool,
) -> EncryptResult:
    """RSAES-OAEP under the key's public key: the ciphertext is the raw RSA output, as AWS's.

    The caller has authorized and checked the key's state and algorithm.
    """
    _check_no_context(context)
    limit = oaep_max_plaintext(SPECS[key.key_spec], algorithm)
    if len(plaintext) > limit:
        raise _plaintext_too_long(limit)
    _dry_run(dry_run)
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
    algorithm: str | None = None,
) -> DecryptResult:
    """Find the key and material a blob names, authorize, check state and algorithm, and decrypt it."""
    try:
        header = crypto.parse_header(blob)
    except CryptoError as exc:
        raise InvalidCiphertext(_INVALID_CIPHERTEXT) from exc
    if key_ref_key is not None and key_ref_key.blob_id != header.key_id:
        op.keys.append(key_ref_key)
        raise IncorrectKey(_INCORRECT_KEY)
    # A deleted, platform owned or unknown key, or a version that no longer
    # exists, all look the same: the blob cannot be decrypted here.
    key = selectors.key_get_for_ciphertext(key_uuid=header.key_id, region=caller.region)
    if key is None or key.region != caller.region:
        raise InvalidCiphertext(_INVALID_CIPHERTEXT)
    material = selectors.material_get_for(key=key, version=header.version)
    if material is None:
        raise InvalidCiphertext(_INVALID_CIPHERTEXT)
    _prepare(op, caller, key, action, context, algorithm or SYMMETRIC_DEFAULT)
    _check_algorithm(key, algorithm, "Decrypt" if action == "kms:Decrypt" else "ReEncrypt")
    _dry_run(dry_run)
    if key.custom_key_store_id is not None:
        operation = "Decrypt" if action == "kms:Decrypt" else "ReEncrypt"
        plaintext = store_decrypt(
            caller=caller, key=key, material=material, blob=blob, context=context, operation=operation
        )
        op.additional_event_data["keyMaterialId"] = material.material_id
        return DecryptResult(plaintext, key, material.material_id)
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
        if key is not None and not _is_symmetric_family(key):
            return _rsa_decrypt(op, caller, key, ciphertext, context, algorithm, dry_run)
        if key is None and algorithm not in (None, SYMMETRIC_DEFAULT):
            # An asymmetric ciphertext carries no key id: without KeyId there
            # is no key to try, as in AWS.
            raise InvalidCiphertext(_INVALID_CIPHERTEXT)
        # A KeyId naming a symmetric or HMAC key is compared with the key the
        # blob names: another key (an HMAC key always) is IncorrectKeyException.
        return _open(op, caller, ciphertext, context, key, "kms:Decrypt", dry_run, algorithm)


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
    _prepare(op, caller, key, action, context, chosen)
    chosen = _check_algorithm(key, algorithm, "Decrypt" if action == "kms:Decrypt" else "ReEncrypt")
    _check_no_context(context)
    _dry_run(dry_run)
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
        if source_key is not None and not _is_symmetric_family(source_key):
            opened = _rsa_decrypt(
                op, caller, source_key, ciphertext, source_context, source_algorithm, False, "kms:ReEncryptFrom"
            )
        else:
            if source_key is None and source_algorithm not in (None, SYMMETRIC_DEFAULT):
                raise InvalidCiphertext(_INVALID_CIPHERTEXT)
            opened = _open(
                op, caller, ciphertext, source_context, source_key, "kms:ReEncryptFrom", False, source_algorithm
            )
        _prepare(
            op,
            caller,
            destination_key,
            "kms:ReEncryptTo",
            destination_context,
            destination_algorithm or SYMMETRIC_DEFAULT,
        )
        chosen = _check_algorithm(destination_key, destination_algorithm, "ReEncrypt")
        if chosen != SYMMETRIC_DEFAULT:
            return _rsa_encrypt(destination_key, opened.plaintext, destination_context, chosen, dry_run), opened
        _dry_run(dry_run)
        blob, material_id = _seal(caller, destination_key, opened.plaintext, destination_context, "ReEncrypt")
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
                    f"constraint: Member must have value {_bound(size)}"
                )
        _prepare(op, caller, key, f"kms:{event}", context)
        require_symmetric_encryption(key, event)
        _dry_run(dry_run)
        data_key = crypto.random_bytes(size)
        blob, material_id = _seal(caller, key, data_key, context, event)
        op.additional_event_data["keyMaterialId"] = material_id
        return DataKeyResult(blob, data_key if with_plaintext else None, key, material_id)


def _bound(number_of_bytes: int) -> str:
    """The broken bound of NumberOfBytes (1-1024), in the model's words."""
    return "greater than or equal to 1" if number_of_bytes < 1 else "less than or equal to 1024"


def random_generate(*, caller: Caller, number_of_bytes: int | None, custom_key_store_id: str | None = None) -> bytes:
    """GenerateRandom: 1-1024 cryptographically secure random bytes, from a
    connected CloudHSM key store's token when ``custom_key_store_id`` names one."""
    params: dict[str, Any] = {"NumberOfBytes": number_of_bytes}
    if custom_key_store_id:
        params["CustomKeyStoreId"] = custom_key_store_id
    with audited(caller, "GenerateRandom", request_parameters=params):
        authorize(caller=caller, action="kms:GenerateRandom")
        if number_of_bytes is None:
            raise ValidationError(
                "1 validation error detected: Value null at 'numberOfBytes' failed to satisfy constraint: "
                "Member must not be null"
            )
        if not 1 <= number_of_bytes <= 1024:
            raise ValidationError(
                f"1 validation error detected: Value '{number_of_bytes}' at 'numberOfBytes' failed to satisfy "
                f"constraint: Member must have value {_bound(number_of_bytes)}"
            )
        if custom_key_store_id:
            return store_random(caller=caller, store_id=custom_key_store_id, number_of_bytes=number_of_bytes)
        return crypto.random_bytes(number_of_bytes)
