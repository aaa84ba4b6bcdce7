"""RSA, ECC, Ed25519, ML-DSA and ML-KEM key pairs: generation, signatures, RSAES-OAEP and ECDH.

Private keys travel as PKCS#8 DER (wrapped by the root key at rest), public
keys as DER SubjectPublicKeyInfo, exactly what GetPublicKey returns. The
wire formats match AWS KMS: ECDSA signatures are DER (r, s), RSASSA-PSS
uses MGF1 with the message hash and a salt as long as the hash, ML-DSA is
the pure FIPS 204 signature with an empty context, ECDH returns the raw
shared secret (the x coordinate). ED25519_SHA_512 is PureEdDSA (RFC 8032's
Ed25519) over the raw message; ED25519_PH_SHA_512 is HashEdDSA (Ed25519ph,
empty context) whose message is the digest the caller sends, so that digest
is hashed once more with SHA-512 as AWS documents. ``cryptography`` has no
Ed25519ph: PyCryptodome's RFC 8032 signer does that one. ML-KEM lives in
``keys.crypto.kem``.
"""

from __future__ import annotations

import base64
import functools
import textwrap
from dataclasses import dataclass
from typing import Any

from Crypto.Hash import SHA512
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, padding, rsa, utils

from keys.crypto import kem
from keys.crypto.errors import CryptoError
from keys.crypto.specs import SPECS, Spec


class SignatureInvalid(CryptoError):
    """The signature does not match the message under this key."""


class PeerKeyError(CryptoError):
    """A peer public key that cannot be read, or is not on the key's curve."""


@dataclass(frozen=True)
class KeyPair:
    """A new key pair: PKCS#8 DER private key (wrap it at once) and DER SPKI public key."""

    private_der: bytes
    public_der: bytes


_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
    "secp256k1": ec.SECP256K1,
}
_MLDSA: dict[int, Any] = {44: mldsa.MLDSA44PrivateKey, 65: mldsa.MLDSA65PrivateKey, 87: mldsa.MLDSA87PrivateKey}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA_1": hashes.SHA1,
    "SHA_256": hashes.SHA256,
    "SHA_384": hashes.SHA384,
    "SHA_512": hashes.SHA512,
}


def _hash_of(algorithm: str) -> hashes.HashAlgorithm:
    return _HASHES["SHA_" + algorithm.rsplit("_", 1)[1]]()


def generate_key_pair(spec_name: str) -> KeyPair:
    """A new key pair of an RSA, ECC, Ed25519, ML-DSA or ML-KEM spec."""
    spec = SPECS[spec_name]
    private: Any
    if spec.family == "mlkem":
        private_der, public_der = kem.generate(spec.bits)
        return KeyPair(private_der=private_der, public_der=public_der)
    if spec.family == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=spec.bits)
    elif spec.family == "ecc":
        private = ec.generate_private_key(_CURVES[spec.curve]())
    elif spec.family == "mldsa":
        private = _MLDSA[spec.bits].generate()
    elif spec.family == "eddsa":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"{spec_name} is not an asymmetric key spec")
    return KeyPair(
        private_der=private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        public_der=public_der_of(private),
    )


def public_der_of(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def public_pem(public_der: bytes) -> str:
    """The PEM form of a DER SubjectPublicKeyInfo (what ``openssl`` reads).

    Written out rather than re-encoded, so it also serves the key types
    ``cryptography`` cannot load (ML-KEM-512).
    """
    body = "\n".join(textwrap.wrap(base64.b64encode(public_der).decode("ascii"), 64))
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"


def _load_private(private_der: bytes) -> Any:
    # kmsweb made these keys itself (and they are authenticated on unwrap),
    # so the RSA consistency check, most of a parse's cost, is skipped. Not
    # cached: a private key lives only as long as the one operation.
    return serialization.load_der_private_key(private_der, password=None, unsafe_skip_rsa_key_validation=True)


@functools.lru_cache(maxsize=256)
def _load_public(public_der: bytes) -> Any:
    return serialization.load_der_public_key(public_der)


def _rsa_padding(algorithm: str) -> padding.AsymmetricPadding:
    digest = _hash_of(algorithm)
    if algorithm.startswith("RSASSA_PSS_"):
        return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    return padding.PKCS1v15()


def _prepared(algorithm: str, message_type: str) -> hashes.HashAlgorithm | utils.Prehashed:
    digest = _hash_of(algorithm)
    return utils.Prehashed(digest) if message_type == "DIGEST" else digest


def sign(spec: Spec, private_der: bytes, *, algorithm: str, message: bytes, message_type: str) -> bytes:
    """Sign ``message`` (RAW, DIGEST, or for ML-DSA EXTERNAL_MU). Inputs are already validated."""
    if spec.family == "eddsa" and algorithm == "ED25519_PH_SHA_512":
        return bytes(eddsa.new(ECC.import_key(private_der), "rfc8032").sign(SHA512.new(message)))
    private = _load_private(private_der)
    if spec.family == "eddsa":
        return bytes(private.sign(message))
    if spec.family == "mldsa":
        return bytes(private.sign_mu(message) if message_type == "EXTERNAL_MU" else private.sign(message))
    if spec.family == "ecc":
        return bytes(private.sign(message, ec.ECDSA(_prepared(algorithm, message_type))))
    return bytes(private.sign(message, _rsa_padding(algorithm), _prepared(algorithm, message_type)))


def verify(
    spec: Spec, public_der: bytes, *, algorithm: str, message: bytes, message_type: str, signature: bytes
) -> None:
    """Raise ``SignatureInvalid`` unless ``signature`` is valid for ``message``."""
    try:
        if spec.family == "eddsa" and algorithm == "ED25519_PH_SHA_512":
            eddsa.new(ECC.import_key(public_der), "rfc8032").verify(SHA512.new(message), signature)
            return
        public = _load_public(public_der)
        if spec.family == "eddsa":
            public.verify(signature, message)
        elif spec.family == "mldsa":
            if message_type == "EXTERNAL_MU":
                public.verify_mu(signature, message)
            else:
                public.verify(signature, message)
        elif spec.family == "ecc":
            public.verify(signature, message, ec.ECDSA(_prepared(algorithm, message_type)))
        else:
            public.verify(signature, message, _rsa_padding(algorithm), _prepared(algorithm, message_type))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureInvalid("signature does not match") from exc


def _oaep(algorithm: str) -> padding.OAEP:
    digest = _hash_of(algorithm)
    return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)


def rsa_encrypt(public_der: bytes, *, algorithm: str, plaintext: bytes) -> bytes:
    """RSAES-OAEP with MGF1 over the same hash, no label (as AWS)."""
    return bytes(_load_public(public_der).encrypt(plaintext, _oaep(algorithm)))


def rsa_decrypt(private_der: bytes, *, algorithm: str, ciphertext: bytes) -> bytes:
    """Raise ``CryptoError`` when the ciphertext is not for this key and algorithm."""
    try:
        return bytes(_load_private(private_der).decrypt(ciphertext, _oaep(algorithm)))
    except ValueError as exc:
        raise CryptoError("decryption failed") from exc


def derive_shared_secret(spec: Spec, private_der: bytes, peer_public_der: bytes) -> bytes:
    """ECDH: the raw shared secret with a peer's DER SubjectPublicKeyInfo on the same curve."""
    try:
        peer = serialization.load_der_public_key(peer_public_der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PeerKeyError("the public key is not a DER-encoded SubjectPublicKeyInfo") from exc
    if not isinstance(peer, ec.EllipticCurvePublicKey) or peer.curve.name != spec.curve:
        raise PeerKeyError(f"the public key is not on the curve of {spec.name}")
    return bytes(_load_private(private_der).exchange(ec.ECDH(), peer))
