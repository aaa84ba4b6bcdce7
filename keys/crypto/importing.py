"""Importing key material (Origin EXTERNAL): wrapping key pairs, unwrapping,
and what material each key spec accepts.

AWS's wrapping algorithms, and how a client produces ``EncryptedKeyMaterial``
for each (the openssl commands are in docs/IMPORT.md):

* ``RSAES_OAEP_SHA_1`` / ``RSAES_OAEP_SHA_256``: the material itself,
  RSA-OAEP encrypted under the wrapping public key (the OAEP hash and the
  MGF1 hash are both SHA-1, or both SHA-256).
* ``RSA_AES_KEY_WRAP_SHA_1`` / ``RSA_AES_KEY_WRAP_SHA_256``: an ephemeral
  256-bit AES key, RSA-OAEP encrypted as above, followed by the material
  wrapped under that AES key with AES Key Wrap with Padding (RFC 5649,
  ``openssl enc -id-aes256-wrap-pad``). The RSA part is exactly the modulus
  length, so the split needs no length field.

``RSAES_PKCS1_V1_5`` is refused: AWS stopped supporting it on 10 October 2023.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

from keys.crypto.errors import CryptoError, DecryptionError

WRAPPING_ALGORITHMS = ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_1", "RSA_AES_KEY_WRAP_SHA_256")
WRAPPING_KEY_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}


class MaterialError(CryptoError):
    """The unwrapped material is not valid material for the key's spec."""


def generate_wrapping_key(spec: str) -> tuple[bytes, bytes]:
    """A new RSA wrapping key pair: (private PKCS#8 DER, public SubjectPublicKeyInfo DER)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=WRAPPING_KEY_BITS[spec])
    private_der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_der, public_der


def _oaep(algorithm: str) -> padding.OAEP:
    # SHA-1 in OAEP (and MGF1) is what AWS offers for RSAES_OAEP_SHA_1: no collision use.
    digest: hashes.HashAlgorithm = hashes.SHA256() if algorithm.endswith("SHA_256") else hashes.SHA1()  # noqa: S303
    return padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)


def unwrap_material(private_der: bytes, algorithm: str, wrapped: bytes) -> bytes:
    """The plaintext material from ``EncryptedKeyMaterial``; ``DecryptionError`` if it
    was not wrapped under this key pair with this algorithm."""
    if algorithm not in WRAPPING_ALGORITHMS:
        raise DecryptionError(f"unsupported wrapping algorithm {algorithm}")
    private = serialization.load_der_private_key(private_der, password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise DecryptionError("the wrapping key is not an RSA key")
    rsa_len = private.key_size // 8
    try:
        if algorithm.startswith("RSAES_OAEP"):
            return private.decrypt(wrapped, _oaep(algorithm))
        if len(wrapped) <= rsa_len:
            raise DecryptionError("too short for an RSA-wrapped AES key followed by wrapped material")
        aes_key = private.decrypt(wrapped[:rsa_len], _oaep(algorithm))
        if len(aes_key) not in (16, 24, 32):
            raise DecryptionError("the RSA-wrapped AES key has the wrong length")
        return aes_key_unwrap_with_padding(aes_key, wrapped[rsa_len:])
    except (ValueError, InvalidUnwrap) as exc:  # cryptography: "Decryption failed" / bad unwrap
        raise DecryptionError("the key material is not wrapped under this wrapping key") from exc


# --- what each key spec accepts -------------------------------------------------------------
# A validator raises MaterialError; the table is keyed by KeySpec so the
# asymmetric and HMAC specs only add entries here.


def _exact(length: int) -> Callable[[bytes], None]:
    def check(material: bytes) -> None:
        if len(material) != length:
            raise MaterialError(f"key material must be {length * 8} bits; got {len(material) * 8}")

    return check


def _between(low: int, high: int) -> Callable[[bytes], None]:
    def check(material: bytes) -> None:
        if not low <= len(material) <= high:
            raise MaterialError(f"key material must be {low} to {high} bytes; got {len(material)}")

    return check


def _rsa(bits: int) -> Callable[[bytes], None]:
    def check(material: bytes) -> None:
        key = _load_private(material)
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != bits:
            raise MaterialError(f"key material must be an RSA {bits}-bit private key (PKCS #8 DER)")

    return check


def _ecc(curve: type[ec.EllipticCurve]) -> Callable[[bytes], None]:
    def check(material: bytes) -> None:
        key = _load_private(material)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, curve):
            raise MaterialError(f"key material must be an {curve.name} private key (PKCS #8 DER)")

    return check


def _load_private(material: bytes) -> object:
    try:
        return serialization.load_der_private_key(material, password=None)
    except (ValueError, TypeError) as exc:
        raise MaterialError("key material is not a PKCS #8 DER private key") from exc


# AWS, "Requirements for imported key material": symmetric keys 256 bits;
# HMAC keys between the digest length and the block size; asymmetric keys a
# PKCS #8 DER private key of the spec's size or curve.
MATERIAL_VALIDATORS: dict[str, Callable[[bytes], None]] = {
    "SYMMETRIC_DEFAULT": _exact(32),
    "HMAC_224": _between(28, 64),
    "HMAC_256": _between(32, 64),
    "HMAC_384": _between(48, 128),
    "HMAC_512": _between(64, 128),
    "RSA_2048": _rsa(2048),
    "RSA_3072": _rsa(3072),
    "RSA_4096": _rsa(4096),
    "ECC_NIST_P256": _ecc(ec.SECP256R1),
    "ECC_NIST_P384": _ecc(ec.SECP384R1),
    "ECC_NIST_P521": _ecc(ec.SECP521R1),
    "ECC_SECG_P256K1": _ecc(ec.SECP256K1),
}


def check_material(key_spec: str, material: bytes) -> None:
    """Raise ``MaterialError`` unless ``material`` is valid imported material for ``key_spec``."""
    validator = MATERIAL_VALIDATORS.get(key_spec)
    if validator is None:
        raise MaterialError(f"key material cannot be imported for key spec {key_spec}")
    validator(material)


def derived_public_key(key_spec: str, material: bytes) -> bytes | None:
    """The DER SubjectPublicKeyInfo of imported asymmetric material (AWS derives
    the public key from the imported private key); None for symmetric and HMAC
    material. Call after :func:`check_material`."""
    if key_spec not in MATERIAL_VALIDATORS or not key_spec.startswith(("RSA_", "ECC_")):
        return None
    private = _load_private(material)
    assert isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def material_fingerprint(mac_key: bytes, key_id: str, material: bytes) -> str:
    """A keyed fingerprint of imported material: HMAC-SHA256 over the key id and the
    material. It tells a re-import of the same material from different material
    without keeping the material anywhere, and without letting anyone who reads
    the database test guesses of low-entropy (HMAC) material."""
    data = b"kmsweb:imported-material:" + key_id.encode() + b":" + material
    return hmac.new(mac_key, data, hashlib.sha256).hexdigest()


def fingerprints_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
