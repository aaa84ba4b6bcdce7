"""ML-KEM (FIPS 203) key pairs: generation, encapsulation and decapsulation.

Keys travel as everywhere in kmsweb: the private key as PKCS#8 DER (wrapped
by the root key at rest), the public key as DER SubjectPublicKeyInfo
(RFC 9935), which is what GetPublicKey returns and what any ML-KEM library
encapsulates against. The shared secret is 32 bytes at every level.

``cryptography`` (OpenSSL) does ML-KEM-768 and ML-KEM-1024; ML-KEM-512,
which it does not offer, is done by PyCryptodome's mlkem-native (a
constant-time C implementation) through the FIPS 203 encapsulation and
decapsulation functions its HPKE module also calls.

Decapsulation follows FIPS 203's implicit rejection: a ciphertext of the
right length always gives a 32-byte secret, a pseudo-random one when the
ciphertext was altered or made for another key. Only a wrong length is an
error.
"""

from __future__ import annotations

from typing import Any

from Crypto.PublicKey import MLKEM as pyc_mlkem
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem

from keys.crypto.errors import CryptoError

SHARED_SECRET_LENGTH = 32
# FIPS 203, Table 3: bytes of an encapsulation key and of a ciphertext per level.
PUBLIC_KEY_LENGTHS = {512: 800, 768: 1184, 1024: 1568}
CIPHERTEXT_LENGTHS = {512: 768, 768: 1088, 1024: 1568}

_OPENSSL: dict[int, Any] = {768: mlkem.MLKEM768PrivateKey, 1024: mlkem.MLKEM1024PrivateKey}


class CiphertextLengthError(CryptoError):
    """The ciphertext's length does not fit the key's ML-KEM level."""


def generate(level: int) -> tuple[bytes, bytes]:
    """A new ML-KEM key pair of ``level``: (PKCS#8 DER private key, DER SPKI public key)."""
    if level in _OPENSSL:
        private = _OPENSSL[level].generate()
        private_der = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public_der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return bytes(private_der), bytes(public_der)
    key = pyc_mlkem.generate(param_set=pyc_mlkem.ML_KEM_512)
    return bytes(key.export_key(format="DER")), bytes(key.public_key().export_key(format="DER"))


def encapsulate(level: int, public_der: bytes) -> tuple[bytes, bytes]:
    """A fresh shared secret and its ciphertext for the public key: (secret, ciphertext)."""
    if level in _OPENSSL:
        public: Any = serialization.load_der_public_key(public_der)
        secret, ciphertext = public.encapsulate()
        return bytes(secret), bytes(ciphertext)
    secret, ciphertext = pyc_mlkem.import_key(public_der)._encaps()
    return bytes(secret), bytes(ciphertext)


def decapsulate(level: int, private_der: bytes, ciphertext: bytes) -> bytes:
    """The 32-byte shared secret of ``ciphertext``; ``CiphertextLengthError`` for a wrong length only."""
    if len(ciphertext) != CIPHERTEXT_LENGTHS[level]:
        raise CiphertextLengthError(
            f"an ML-KEM-{level} ciphertext is {CIPHERTEXT_LENGTHS[level]} bytes, not {len(ciphertext)}"
        )
    if level in _OPENSSL:
        private: Any = serialization.load_der_private_key(private_der, password=None)
        return bytes(private.decapsulate(ciphertext))
    return bytes(pyc_mlkem.import_key(private_der)._decaps(ciphertext))
