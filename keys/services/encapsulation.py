"""Encapsulate and Decapsulate with ML-KEM keys (key usage ENCAPSULATE_DECAPSULATE).

Encapsulate makes a fresh 32-byte shared secret and its ciphertext with the
key's public key; Decapsulate recovers the secret with the private key,
which never leaves kmsweb. As AWS documents, Decapsulate refuses only a
ciphertext whose length does not fit the key's ML-KEM level
(InvalidCiphertextException); any other ciphertext gives a 32-byte value,
pseudo-random when the ciphertext was altered or made for another key
(FIPS 203 implicit rejection), so callers confirm both sides agree.

Each call is authorized and audited like the other cryptographic
operations; the shared secret and its ciphertext are never recorded
(``kmsweb.lib.operations`` redacts both members).
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.services import audited
from keys.crypto import kem
from keys.crypto.specs import ENCAPSULATE_DECAPSULATE, SPECS, Spec
from keys.models import Key, KeyMaterial
from keys.services.common import require_key_usage, require_usable_for_crypto
from keys.services.material import material_unwrap
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import DRY_RUN_MESSAGE, DryRunOperation, InvalidCiphertext, InvalidKeyUsage, NotFound
from policies.authorization import authorize


@dataclass(frozen=True)
class Encapsulation:
    """Encapsulate's answer: the shared secret (secret!) and its ciphertext."""

    key: Key
    shared_secret: bytes
    ciphertext: bytes


def _current(key: Key) -> KeyMaterial:
    if key.current_material is None:
        raise NotFound(f"{key.arn} has no key material.")
    return key.current_material


def _check(key: Key, algorithm: str, operation: str) -> Spec:
    """State first (DisabledException before anything else), then usage, then the algorithm."""
    require_usable_for_crypto(key)
    require_key_usage(key, ENCAPSULATE_DECAPSULATE, operation)
    spec = SPECS[key.key_spec]
    if algorithm not in spec.encapsulation:
        raise InvalidKeyUsage(f"Algorithm {algorithm} is incompatible with key spec {key.key_spec}.")
    return spec


def key_encapsulate(*, caller: Caller, key: Key, algorithm: str, dry_run: bool = False) -> Encapsulation:
    """Encapsulate: a new shared secret and its ciphertext for the key's public key."""
    params = {"KeyId": str(key.id), "EncapsulationAlgorithm": algorithm}
    with audited(caller, "Encapsulate", request_parameters=params) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:Encapsulate", key=key)
        spec = _check(key, algorithm, "Encapsulate")
        if dry_run:
            raise DryRunOperation(DRY_RUN_MESSAGE)
        material = _current(key)
        secret, ciphertext = kem.encapsulate(spec.bits, bytes(material.public_key or b""))
        op.additional_event_data["keyMaterialId"] = material.material_id
        return Encapsulation(key=key, shared_secret=secret, ciphertext=ciphertext)


def key_decapsulate(
    *, caller: Caller, key: Key, ciphertext: bytes, algorithm: str, dry_run: bool = False
) -> tuple[bytes, Key]:
    """Decapsulate: the shared secret of ``ciphertext``; only a wrong length is refused."""
    params = {"KeyId": str(key.id), "EncapsulationAlgorithm": algorithm}
    with audited(caller, "Decapsulate", request_parameters=params) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:Decapsulate", key=key)
        spec = _check(key, algorithm, "Decapsulate")
        if len(ciphertext) != kem.CIPHERTEXT_LENGTHS[spec.bits]:
            raise InvalidCiphertext(
                f"The SharedSecretCiphertextBlob is {len(ciphertext)} bytes; an {key.key_spec} ciphertext "
                f"is {kem.CIPHERTEXT_LENGTHS[spec.bits]} bytes."
            )
        if dry_run:
            raise DryRunOperation(DRY_RUN_MESSAGE)
        material = _current(key)
        secret = kem.decapsulate(spec.bits, material_unwrap(material), ciphertext)
        op.additional_event_data["keyMaterialId"] = material.material_id
        return secret, key
