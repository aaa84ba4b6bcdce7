"""ECDSA P-256 with SHA-256: the audit trail's digest and manifest signatures.

Signatures are DER-encoded (what ``openssl dgst -sha256 -verify`` reads);
a public key's fingerprint is the SHA-256 of its DER SubjectPublicKeyInfo
(``openssl pkey -pubin -outform DER | openssl dgst -sha256``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from keys.crypto.errors import CryptoError


class SignatureError(CryptoError):
    """A signature does not verify, or a key cannot be read."""


@dataclass(frozen=True)
class SigningKeyPair:
    """A new key pair: the private key as PKCS#8 DER (to be encrypted at once), the public as PEM."""

    private_der: bytes
    public_pem: str
    fingerprint: str


def public_key_fingerprint(public_pem: str | bytes) -> str:
    key = _load_public(public_pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def generate_signing_key() -> SigningKeyPair:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return SigningKeyPair(private_der=der, public_pem=pem, fingerprint=public_key_fingerprint(pem))


def sign(private_der: bytes, data: bytes) -> bytes:
    private = serialization.load_der_private_key(private_der, password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise SignatureError("the audit signing key is not an EC key")
    return private.sign(data, ec.ECDSA(hashes.SHA256()))


def _load_public(public_pem: str | bytes) -> ec.EllipticCurvePublicKey:
    raw = public_pem.encode("ascii") if isinstance(public_pem, str) else public_pem
    try:
        key = serialization.load_pem_public_key(raw)
    except ValueError as exc:
        raise SignatureError("not a PEM public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SignatureError("not an ECDSA P-256 public key")
    return key


def verify(public_pem: str | bytes, signature: bytes, data: bytes) -> None:
    """Raise ``SignatureError`` unless ``signature`` is valid for ``data``."""
    try:
        _load_public(public_pem).verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureError("signature does not match") from exc


def verify_prehashed(public_pem: str | bytes, signature: bytes, sha256: bytes) -> None:
    """Raise ``SignatureError`` unless ``signature`` is valid for the data whose SHA-256 is ``sha256``.

    An ECDSA/SHA-256 signature signs the data's hash, so a digest's
    signature can be checked from its ``digestSha256`` alone (the audit
    anchor's lines carry only the hash).
    """
    try:
        _load_public(public_pem).verify(signature, sha256, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("signature does not match") from exc
