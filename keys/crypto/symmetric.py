"""SYMMETRIC_DEFAULT: AES-256-GCM and kmsweb's ciphertext blob.

Blob layout (all integers big-endian)::

    format  1 byte   0x01
    key id  16 bytes the key's UUID
    version 4 bytes  the key material version that encrypted it
    iv      12 bytes random
    body    n bytes  AES-256-GCM ciphertext
    tag     16 bytes GCM tag

The AAD is the 21-byte header followed by the canonical encryption context,
so neither the key id, the version nor the context can be swapped without
the tag failing. Decrypt reads the key id and version from the header and
needs no KeyId from the caller.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keys.crypto.context import canonical_context
from keys.crypto.errors import DecryptionError, InvalidBlobError

FORMAT_V1 = 0x01
HEADER_LEN = 1 + 16 + 4
IV_LEN = 12
TAG_LEN = 16
MIN_BLOB_LEN = HEADER_LEN + IV_LEN + TAG_LEN


@dataclass(frozen=True)
class BlobHeader:
    """What a ciphertext blob says about itself before it is authenticated."""

    key_id: uuid.UUID
    version: int


def generate_material() -> bytes:
    """New 256-bit symmetric key material."""
    return os.urandom(32)


def random_bytes(n: int) -> bytes:
    """Cryptographically secure random bytes (GenerateRandom, data keys)."""
    return os.urandom(n)


def _header(key_id: uuid.UUID, version: int) -> bytes:
    return bytes([FORMAT_V1]) + key_id.bytes + struct.pack(">I", version)


def parse_header(blob: bytes) -> BlobHeader:
    """Read the key id and material version; raises ``InvalidBlobError``."""
    if len(blob) < MIN_BLOB_LEN or blob[0] != FORMAT_V1:
        raise InvalidBlobError("not a kmsweb ciphertext blob")
    key_id = uuid.UUID(bytes=blob[1:17])
    (version,) = struct.unpack(">I", blob[17:21])
    return BlobHeader(key_id=key_id, version=version)


def encrypt(
    material: bytes,
    *,
    key_id: uuid.UUID,
    version: int,
    plaintext: bytes,
    context: Mapping[str, str] | None = None,
) -> bytes:
    """Encrypt ``plaintext`` under one version of a key's material."""
    header = _header(key_id, version)
    iv = os.urandom(IV_LEN)
    sealed = AESGCM(material).encrypt(iv, plaintext, header + canonical_context(context))
    return header + iv + sealed


def decrypt(material: bytes, blob: bytes, context: Mapping[str, str] | None = None) -> bytes:
    """Decrypt a blob made by :func:`encrypt` with the same material and context."""
    parse_header(blob)
    header = blob[:HEADER_LEN]
    iv = blob[HEADER_LEN : HEADER_LEN + IV_LEN]
    try:
        return AESGCM(material).decrypt(iv, blob[HEADER_LEN + IV_LEN :], header + canonical_context(context))
    except InvalidTag as exc:
        raise DecryptionError("ciphertext failed authentication") from exc


def external_aad(key_id: uuid.UUID, version: int, context: Mapping[str, str] | None) -> bytes:
    """The AAD a key outside kmsweb (a custom key store's) must bind: the
    header and the canonical context, as :func:`encrypt` binds them."""
    return _header(key_id, version) + canonical_context(context)


def external_blob(key_id: uuid.UUID, version: int, iv: bytes, sealed: bytes) -> bytes:
    """The blob of an AES-GCM result made outside kmsweb (``sealed`` is ciphertext then tag)."""
    if len(iv) != IV_LEN or len(sealed) < TAG_LEN:
        raise InvalidBlobError("an external AES-GCM result has the wrong IV or tag length")
    return _header(key_id, version) + iv + sealed


def external_parts(blob: bytes) -> tuple[bytes, bytes]:
    """(iv, ciphertext then tag) of a blob, for decryption outside kmsweb."""
    parse_header(blob)
    return blob[HEADER_LEN : HEADER_LEN + IV_LEN], blob[HEADER_LEN + IV_LEN :]
