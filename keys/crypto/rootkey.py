"""Root-key providers: what wraps every key's material at rest.

A provider wraps and unwraps short secrets (key material, platform keys)
with AES-256-GCM. The wrapped form names the root key that made it, so a
rotated root key can still unwrap old material until everything has been
re-wrapped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keys.crypto.errors import CryptoError, DecryptionError, InvalidBlobError

_WRAP_FORMAT = 0x01
_NONCE_LEN = 12


class RootKeyProvider(Protocol):
    """Wraps and unwraps secrets under a root key that never leaves it."""

    key_id: str

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...


class LocalRootKey:
    """A 256-bit root key held in this process (from env or a 0600 file)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a root key is 32 bytes (256 bits)")
        self._aead = AESGCM(key)
        # A key check value, not the key: HMAC of a fixed label, so the id
        # says which root key wrapped material without revealing anything.
        self.key_id = "local:" + hmac.new(key, b"kmsweb root key id", hashlib.sha256).hexdigest()[:16]

    @classmethod
    def from_base64(cls, text: str) -> LocalRootKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except ValueError as exc:
            raise ValueError("the root key is not valid base64") from exc
        return cls(raw)

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE_LEN)
        return bytes([_WRAP_FORMAT]) + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        if len(wrapped) < 1 + _NONCE_LEN + 16 or wrapped[0] != _WRAP_FORMAT:
            raise InvalidBlobError("not a wrapped secret of a known format")
        nonce = wrapped[1 : 1 + _NONCE_LEN]
        try:
            return self._aead.decrypt(nonce, wrapped[1 + _NONCE_LEN :], aad)
        except Exception as exc:  # cryptography raises InvalidTag
            raise DecryptionError("wrapped secret failed authentication") from exc


class RootKeyring:
    """Every root key this server holds; the last one listed is current.

    New material is wrapped by the current key; material wrapped by an older
    key is unwrapped by that key (found by the ``root_key_id`` stored next to
    it) until ``rotate_root_key`` has re-wrapped it. The text form is one key
    per line, ``[label:]base64``, oldest first; blank lines and ``#``
    comments are ignored. A single bare base64 line is the original format.
    """

    def __init__(self, keys: Sequence[RootKeyProvider], current: RootKeyProvider | None = None) -> None:
        if not keys:
            raise ValueError("no root key given")
        self._keys = {k.key_id: k for k in keys}
        self.current = current if current is not None else keys[-1]
        self.key_id = self.current.key_id

    @classmethod
    def parse(cls, text: str) -> RootKeyring:
        return cls(cls.parse_keys(text))

    @staticmethod
    def parse_keys(text: str) -> list[LocalRootKey]:
        """The keys of a keyring's text form, oldest first (none for an empty text)."""
        keys = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            # Base64 has no ':', so a label is everything before the last one.
            encoded = line.rsplit(":", 1)[-1]
            try:
                keys.append(LocalRootKey.from_base64(encoded))
            except ValueError as exc:
                raise ValueError(f"root key line {number}: {exc}") from exc
        return keys

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def get(self, key_id: str) -> RootKeyProvider | None:
        return self._keys.get(key_id)

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        return self.current.wrap(plaintext, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """Unwrap with whichever held key made ``wrapped``, current first.

        Callers that stored the wrapping key's id should use ``get`` instead;
        this is for those that did not (GCM's tag tells the keys apart)."""
        error: CryptoError | None = None
        for root in (self.current, *(k for k in self._keys.values() if k is not self.current)):
            try:
                return root.unwrap(wrapped, aad)
            except CryptoError as exc:  # another key's format, or its tag failed
                error = exc
        assert error is not None
        raise error


def new_root_key_line(label: str) -> str:
    """A fresh random root key as a keyring line ``label:base64``."""
    return f"{label}:{base64.b64encode(os.urandom(32)).decode('ascii')}"


def generate_root_key(path: Path) -> None:
    """Write a new random root key, base64, to ``path`` with mode 0600.

    Refuses to overwrite: losing a root key loses every key it wraps.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(os.urandom(32)).decode("ascii") + "\n")
