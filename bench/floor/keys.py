"""The floor's data key and ciphertext format (no Django imports here).

The runner imports this module too, to build the Decrypt request body that
the floor in ``crypto_audit`` mode can decrypt: the key is a fixed benchmark
key, not a secret.

Ciphertext blob: 1 version byte (0x01) || 12-byte nonce || AES-256-GCM
ciphertext with its 16-byte tag; the key id is the associated data.
"""

import hashlib
import os

BLOB_VERSION = b"\x01"
NONCE_LEN = 12


def floor_key() -> bytes:
    hex_key = os.environ.get("FLOOR_KEY_HEX", "")
    if hex_key:
        key = bytes.fromhex(hex_key)
        if len(key) != 32:
            raise RuntimeError("FLOOR_KEY_HEX must be 64 hex digits (32 bytes)")
        return key
    return hashlib.sha256(b"kmsweb bench floor key").digest()


def seal(aead, key_id: str, plaintext: bytes, nonce: bytes | None = None) -> bytes:
    nonce = nonce if nonce is not None else os.urandom(NONCE_LEN)
    return BLOB_VERSION + nonce + aead.encrypt(nonce, plaintext, key_id.encode())


def open_blob(aead, key_id: str, blob: bytes) -> bytes:
    if blob[:1] != BLOB_VERSION or len(blob) < 1 + NONCE_LEN + 16:
        raise ValueError("not a floor ciphertext")
    nonce = blob[1 : 1 + NONCE_LEN]
    return aead.decrypt(nonce, blob[1 + NONCE_LEN :], key_id.encode())
