"""Sign, Verify, GetPublicKey, GenerateMac, VerifyMac, DeriveSharedSecret and
GenerateDataKeyPair(WithoutPlaintext).

Each is one audited, authorized call, like the symmetric operations. The
audit event records what CloudTrail records (key, algorithm, message type,
key pair spec), never the message, signature, MAC, shared secret or
private key: ``audit.services.REDACTED_MEMBERS`` drops those members.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audit.services import Operation, audited
from keys import crypto
from keys.crypto import asymmetric
from keys.crypto import hmac as hmac_crypto
from keys.crypto.errors import CryptoError
from keys.crypto.specs import (
    DATA_KEY_PAIR_SPECS,
    DIGEST_LENGTHS,
    ED25519_MESSAGE_TYPES,
    EXTERNAL_MU_LENGTH,
    GENERATE_VERIFY_MAC,
    KEY_AGREEMENT,
    SIGN_VERIFY,
    SPECS,
    Spec,
)
from keys.models import Key, KeyMaterial
from keys.services.common import require_key_usage, require_symmetric_encryption, require_usable_for_crypto
from keys.services.material import material_unwrap
from keys.services.store_keys import store_encrypt
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    DryRunOperation,
    InvalidKeyUsage,
    KmsInvalidMac,
    KmsInvalidSignature,
    NotFound,
    UnsupportedOperation,
    ValidationError,
)
from policies.authorization import authorize


@dataclass(frozen=True)
class PublicKeyResult:
    key: Key
    public_key: bytes
    metadata: dict[str, Any]


@dataclass(frozen=True)
class DataKeyPairResult:
    key: Key
    key_pair_spec: str
    public_key: bytes
    private_key_ciphertext: bytes
    private_key_plaintext: bytes | None
    key_material_id: str


def _current(key: Key) -> KeyMaterial:
    if key.current_material is None:
        raise NotFound(f"{key.arn} has no key material.")
    return key.current_material


def _begin(op: Operation, caller: Caller, key: Key, action: str, context: Mapping[str, Any]) -> Spec:
    """Authorize with the request's condition keys, then check the key can act."""
    op.keys.append(key)
    authorize(caller=caller, action=action, key=key, context=dict(context))
    require_usable_for_crypto(key)
    return SPECS[key.key_spec]


def _check_signing(key: Key, spec: Spec, algorithm: str, message_type: str, message: bytes) -> None:
    """AWS's rules for a signing request, after the key usage is known to be SIGN_VERIFY."""
    if algorithm not in spec.signing:
        raise InvalidKeyUsage(f"Algorithm {algorithm} is incompatible with key spec {key.key_spec}.")
    if spec.family == "mldsa":
        if message_type == "DIGEST":
            raise ValidationError(f"MessageType DIGEST is not supported with signing algorithm {algorithm}.")
        if message_type == "EXTERNAL_MU" and len(message) != EXTERNAL_MU_LENGTH:
            raise ValidationError(f"Message must be {EXTERNAL_MU_LENGTH} bytes when the MessageType is EXTERNAL_MU.")
        return
    if message_type == "EXTERNAL_MU":
        raise ValidationError(f"MessageType EXTERNAL_MU is not supported with signing algorithm {algorithm}.")
    if spec.family == "eddsa" and message_type != ED25519_MESSAGE_TYPES[algorithm]:
        # AWS: ED25519_SHA_512 signs the RAW message only, ED25519_PH_SHA_512 a DIGEST only.
        raise ValidationError(f"Signing algorithm {algorithm} requires MessageType {ED25519_MESSAGE_TYPES[algorithm]}.")
    if message_type == "DIGEST" and len(message) != DIGEST_LENGTHS[algorithm]:
        raise ValidationError(f"Digest is invalid length for algorithm {algorithm}.")


def key_sign(
    *,
    caller: Caller,
    key: Key,
    message: bytes,
    algorithm: str,
    message_type: str | None = None,
    dry_run: bool = False,
) -> tuple[bytes, Key]:
    """Sign a message (RAW, up to 4096 bytes), a digest, or an ML-DSA mu with the key's private key."""
    kind = message_type or "RAW"
    params = {"KeyId": str(key.id), "SigningAlgorithm": algorithm, "MessageType": kind}
    with audited(caller, "Sign", request_parameters=params) as op:
        spec = _begin(op, caller, key, "kms:Sign", {"kms:SigningAlgorithm": algorithm, "kms:MessageType": kind})
        require_key_usage(key, SIGN_VERIFY, "Sign")
        _check_signing(key, spec, algorithm, kind, message)
        if dry_run:
            raise DryRunOperation()
        private = material_unwrap(_current(key))
        return asymmetric.sign(spec, private, algorithm=algorithm, message=message, message_type=kind), key


def key_verify(
    *,
    caller: Caller,
    key: Key,
    message: bytes,
    signature: bytes,
    algorithm: str,
    message_type: str | None = None,
    dry_run: bool = False,
) -> Key:
    """Verify a signature with the key's public key; a mismatch is KMSInvalidSignatureException."""
    kind = message_type or "RAW"
    params = {"KeyId": str(key.id), "SigningAlgorithm": algorithm, "MessageType": kind}
    with audited(caller, "Verify", request_parameters=params) as op:
        spec = _begin(op, caller, key, "kms:Verify", {"kms:SigningAlgorithm": algorithm, "kms:MessageType": kind})
        require_key_usage(key, SIGN_VERIFY, "Verify")
        _check_signing(key, spec, algorithm, kind, message)
        if dry_run:
            raise DryRunOperation()
        try:
            asymmetric.verify(
                spec,
                bytes(_current(key).public_key or b""),
                algorithm=algorithm,
                message=message,
                message_type=kind,
                signature=signature,
            )
        except CryptoError as exc:
            raise KmsInvalidSignature("The signature is not valid for this message, key and algorithm.") from exc
        op.response_elements = {"SignatureValid": True}
        return key


def key_get_public_key(*, caller: Caller, key: Key) -> PublicKeyResult:
    """GetPublicKey: the DER SubjectPublicKeyInfo and what the key may do with it."""
    with audited(caller, "GetPublicKey", request_parameters={"KeyId": str(key.id)}) as op:
        spec = _begin(op, caller, key, "kms:GetPublicKey", {})
        if not spec.is_asymmetric:
            raise UnsupportedOperation(f"{key.arn} key spec is {key.key_spec} which is not valid for GetPublicKey.")
        public = bytes(_current(key).public_key or b"")
        meta: dict[str, Any] = {
            "KeyId": key.arn,
            "CustomerMasterKeySpec": key.key_spec,
            "KeySpec": key.key_spec,
            "KeyUsage": key.key_usage,
            **spec.algorithms_for(key.key_usage),
        }
        return PublicKeyResult(key, public, meta)


def _check_mac(key: Key, spec: Spec, algorithm: str, operation: str) -> None:
    require_key_usage(key, GENERATE_VERIFY_MAC, operation)
    if algorithm not in spec.mac:
        raise InvalidKeyUsage(f"Algorithm {algorithm} is incompatible with key spec {key.key_spec}.")


def key_generate_mac(
    *, caller: Caller, key: Key, message: bytes, algorithm: str, dry_run: bool = False
) -> tuple[bytes, Key]:
    """GenerateMac with an HMAC key."""
    params = {"KeyId": str(key.id), "MacAlgorithm": algorithm}
    with audited(caller, "GenerateMac", request_parameters=params) as op:
        spec = _begin(op, caller, key, "kms:GenerateMac", {"kms:MacAlgorithm": algorithm})
        _check_mac(key, spec, algorithm, "GenerateMac")
        if dry_run:
            raise DryRunOperation()
        return hmac_crypto.mac(material_unwrap(_current(key)), algorithm=algorithm, message=message), key


def key_verify_mac(
    *, caller: Caller, key: Key, message: bytes, mac: bytes, algorithm: str, dry_run: bool = False
) -> Key:
    """VerifyMac: a MAC that does not match is KMSInvalidMacException."""
    params = {"KeyId": str(key.id), "MacAlgorithm": algorithm}
    with audited(caller, "VerifyMac", request_parameters=params) as op:
        spec = _begin(op, caller, key, "kms:VerifyMac", {"kms:MacAlgorithm": algorithm})
        _check_mac(key, spec, algorithm, "VerifyMac")
        if dry_run:
            raise DryRunOperation()
        if not hmac_crypto.mac_matches(material_unwrap(_current(key)), algorithm=algorithm, message=message, tag=mac):
            raise KmsInvalidMac("The MAC is not valid for this message, key and algorithm.")
        op.response_elements = {"MacValid": True}
        return key


def key_derive_shared_secret(
    *, caller: Caller, key: Key, algorithm: str, public_key: bytes, dry_run: bool = False
) -> tuple[bytes, Key]:
    """DeriveSharedSecret: ECDH of the key's private key with a peer public key on the same curve."""
    params = {"KeyId": str(key.id), "KeyAgreementAlgorithm": algorithm}
    with audited(caller, "DeriveSharedSecret", request_parameters=params) as op:
        spec = _begin(op, caller, key, "kms:DeriveSharedSecret", {"kms:KeyAgreementAlgorithm": algorithm})
        require_key_usage(key, KEY_AGREEMENT, "DeriveSharedSecret")
        if algorithm not in spec.key_agreement:
            raise InvalidKeyUsage(f"Algorithm {algorithm} is incompatible with key spec {key.key_spec}.")
        if dry_run:
            raise DryRunOperation()
        try:
            secret = asymmetric.derive_shared_secret(spec, material_unwrap(_current(key)), public_key)
        except asymmetric.PeerKeyError as exc:
            raise ValidationError(f"The PublicKey is not a valid {key.key_spec} public key: {exc}.") from exc
        return secret, key


def key_generate_data_key_pair(
    *,
    caller: Caller,
    key: Key,
    key_pair_spec: str,
    context: Mapping[str, str] | None = None,
    with_plaintext: bool = True,
    dry_run: bool = False,
) -> DataKeyPairResult:
    """A new RSA, ECC, Ed25519 or ML-KEM key pair whose private key is encrypted under a symmetric key.

    The private key (PKCS#8 DER) is sealed like a data key, with the
    encryption context, so Decrypt returns it; it is returned in the clear
    only by GenerateDataKeyPair, and is never stored.
    """
    event = "GenerateDataKeyPair" if with_plaintext else "GenerateDataKeyPairWithoutPlaintext"
    params = {"KeyId": str(key.id), "KeyPairSpec": key_pair_spec, "EncryptionContext": dict(context or {})}
    with audited(caller, event, request_parameters=params) as op:
        op.keys.append(key)
        authorize(
            caller=caller,
            action=f"kms:{event}",
            key=key,
            context={
                "EncryptionContext": dict(context or {}),
                "kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "kms:DataKeyPairSpec": key_pair_spec,
            },
        )
        require_usable_for_crypto(key)
        require_symmetric_encryption(key, event)
        if key_pair_spec not in DATA_KEY_PAIR_SPECS:
            raise UnsupportedOperation(f"KeyPairSpec {key_pair_spec} is not supported by kmsweb.")
        if dry_run:
            raise DryRunOperation()
        pair = asymmetric.generate_key_pair(key_pair_spec)
        material = _current(key)
        if key.custom_key_store_id is not None:
            blob = store_encrypt(
                caller=caller, key=key, material=material, plaintext=pair.private_der, context=context, operation=event
            )
        else:
            blob = crypto.encrypt(
                material_unwrap(material),
                key_id=key.blob_id,
                version=material.version,
                plaintext=pair.private_der,
                context=context,
            )
        op.additional_event_data["keyMaterialId"] = material.material_id
        return DataKeyPairResult(
            key=key,
            key_pair_spec=key_pair_spec,
            public_key=pair.public_der,
            private_key_ciphertext=blob,
            private_key_plaintext=pair.private_der if with_plaintext else None,
            key_material_id=material.material_id,
        )
