"""HMAC keys: material and the MAC algorithms of RFC 2104 over SHA-2."""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os

from keys.crypto.specs import Spec

_DIGESTS = {
    "HMAC_SHA_224": hashlib.sha224,
    "HMAC_SHA_256": hashlib.sha256,
    "HMAC_SHA_384": hashlib.sha384,
    "HMAC_SHA_512": hashlib.sha512,
}


def generate_hmac_material(spec: Spec) -> bytes:
    """Key material as long as the spec's digest (HMAC_256: 32 bytes)."""
    return os.urandom(spec.bits // 8)


def mac(material: bytes, *, algorithm: str, message: bytes) -> bytes:
    return _hmac.new(material, message, _DIGESTS[algorithm]).digest()


def mac_matches(material: bytes, *, algorithm: str, message: bytes, tag: bytes) -> bool:
    """Constant-time comparison of ``tag`` with the MAC of ``message``."""
    return _hmac.compare_digest(mac(material, algorithm=algorithm, message=message), tag)
