"""Key material at rest: created, wrapped by the root key, unwrapped for use.

Plaintext material exists only in local variables of these functions and
their callers in ``keys.services``; it never reaches a model field
unwrapped, a log line or a task argument.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from datetime import datetime
from pathlib import Path

from django.conf import settings

from keys.crypto import RootKeyProvider, RootKeyring, generate_material
from keys.crypto.asymmetric import generate_key_pair
from keys.crypto.errors import CryptoError
from keys.crypto.hmac import generate_hmac_material
from keys.crypto.pkcs11 import Pkcs11RootKey, Pkcs11Token, TokenError
from keys.crypto.specs import SPECS
from keys.models import Key, KeyMaterial
from kmsweb.lib.errors import InternalError, InvalidState, UnsupportedOperation

# How often a process looks at the root key file's mtime (one stat call).
ROOT_KEY_RECHECK_SECONDS = 10.0
_keyring_lock = threading.Lock()
_keyring: dict[str, object] = {}


def _root_key_text() -> tuple[str, float | None]:
    path = getattr(settings, "KMSWEB_ROOT_KEY_FILE", None)
    if path:
        try:
            return Path(path).read_text(encoding="utf-8"), os.stat(path).st_mtime
        except OSError as exc:
            raise InternalError(f"The root key file cannot be read: {exc.strerror}") from exc
    return settings.KMSWEB_ROOT_KEY or "", None


def root_keyring(*, reload: bool = False) -> RootKeyring:
    """The root keys this process holds (KMSWEB_ROOT_KEY / KMSWEB_ROOT_KEY_FILE).

    The file is re-read when its mtime changes (looked at, one ``stat``, at
    most every ``ROOT_KEY_RECHECK_SECONDS``), or at once with
    ``reload=True``: after ``rotate_root_key`` adds a key, running processes
    wrap with it and unwrap under old and new keys without a restart.
    """
    path = getattr(settings, "KMSWEB_ROOT_KEY_FILE", None)
    source = (path, None if path else settings.KMSWEB_ROOT_KEY, _token_settings())
    keyring = _keyring.get("keyring")
    now = time.monotonic()
    if isinstance(keyring, RootKeyring) and _keyring.get("source") == source and not reload:
        if path is None or now < float(_keyring["checked"]) + ROOT_KEY_RECHECK_SECONDS:  # type: ignore[arg-type]
            return keyring
        try:
            unchanged = os.stat(path).st_mtime == _keyring.get("mtime")
        except OSError:
            unchanged = True  # keep serving with the keys already held
        if unchanged:
            _keyring["checked"] = now
            return keyring
    with _keyring_lock:
        text, mtime = _root_key_text()
        keyring = _build_keyring(text)
        _keyring.update(keyring=keyring, mtime=mtime, checked=now, source=source)
    return keyring


def _token_settings() -> tuple[str, str, str, str, str]:
    return (
        settings.KMSWEB_ROOT_KEY_PKCS11_LIBRARY,
        settings.KMSWEB_ROOT_KEY_PKCS11_TOKEN_LABEL,
        settings.KMSWEB_ROOT_KEY_PKCS11_PIN,
        settings.KMSWEB_ROOT_KEY_PKCS11_KEY_LABEL,
        settings.KMSWEB_ROOT_KEY_CURRENT,
    )


def token_root_key() -> Pkcs11RootKey | None:
    """The root key inside a PKCS#11 token (KMSWEB_ROOT_KEY_PKCS11_*), or None if none is configured."""
    library, label, pin, key_label, _ = _token_settings()
    if not library:
        return None
    return Pkcs11RootKey(Pkcs11Token(library=library, label=label, pin=pin), key_label)


def _build_keyring(text: str) -> RootKeyring:
    """The file's (or KMSWEB_ROOT_KEY's) keys and the token's; the current one per KMSWEB_ROOT_KEY_CURRENT."""
    try:
        local = RootKeyring.parse_keys(text)
    except ValueError as exc:
        raise InternalError(f"The root key cannot be read: {exc}") from exc
    token = token_root_key()
    keys: list[RootKeyProvider] = [*local]
    if token is not None:
        keys.append(token)
    current: RootKeyProvider | None
    if settings.KMSWEB_ROOT_KEY_CURRENT == "pkcs11":
        current = token
    else:
        current = local[-1] if local else None
    if current is None:
        raise InternalError(f"No {settings.KMSWEB_ROOT_KEY_CURRENT} root key is configured.")
    return RootKeyring(keys, current)


def root_key_provider() -> RootKeyring:
    """The current root key (and the older ones still held), see ``root_keyring``."""
    return root_keyring()


def root_keyring_forget() -> None:
    """Drop the cached keyring (tests that change the root key settings)."""
    with _keyring_lock:
        _keyring.clear()


def material_aad(key_id: object, version: int) -> bytes:
    # Binding the key id and version stops a wrapped blob being moved to
    # another key or version row in the database.
    return f"kmsweb:material:{key_id}:{version}".encode()


def new_material_id() -> str:
    """A 64-hex-digit KeyMaterialId, as AWS shows them."""
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def material_create(*, key: Key, version: int, now: datetime, rotation_type: str = "") -> KeyMaterial:
    """Generate, wrap and save one version of ``key``'s material (no commit of its own).

    The material follows the key spec: 256 random bits for SYMMETRIC_DEFAULT,
    digest-sized random bytes for HMAC, and for RSA, ECC and ML-DSA the
    private key as PKCS#8 DER (wrapped) with its public key beside it.
    """
    provider = root_key_provider()
    spec = SPECS[key.key_spec]
    public: bytes | None = None
    if spec.is_asymmetric:
        pair = generate_key_pair(spec.name)
        raw, public = pair.private_der, pair.public_der
    elif spec.family == "hmac":
        raw = generate_hmac_material(spec)
    else:
        raw = generate_material()
    return KeyMaterial.objects.create(
        key=key,
        version=version,
        material_id=new_material_id(),
        wrapped=provider.wrap(raw, material_aad(key.id, version)),
        public_key=public,
        root_key_id=provider.key_id,
        created_at=now,
        rotation_type=rotation_type,
    )


def _wrapping_key(root_key_id: str) -> RootKeyProvider:
    root = root_keyring().get(root_key_id)
    if root is None:
        # Another process may have just added a root key: look once more.
        root = root_keyring(reload=True).get(root_key_id)
    if root is None:
        raise InternalError("Key material is wrapped by a root key this server does not hold.")
    return root


def material_unwrap(material: KeyMaterial) -> bytes:
    """The plaintext material of one version, for the duration of one operation."""
    if material.destroyed_at is not None:
        # Imported material that was deleted or expired (the key's state
        # normally refuses first; this guards every other path).
        raise InvalidState(f"The key material {material.material_id} has been deleted; import it again.")
    if not material.root_key_id:
        # A custom key store's key: its material is in the store, never here.
        raise UnsupportedOperation(f"The key material {material.material_id} is held by a custom key store.")
    root = _wrapping_key(material.root_key_id)
    try:
        return root.unwrap(bytes(material.wrapped), material_aad(material.key_id, material.version))
    except TokenError as exc:
        raise InternalError(f"The root key's PKCS#11 token cannot be used: {exc}") from exc
    except CryptoError as exc:
        raise InternalError("Key material failed its integrity check.") from exc


def material_rewrap(material: KeyMaterial, keyring: RootKeyring) -> bool:
    """Re-wrap one version under ``keyring``'s current root key (no save).

    Returns False when it already is. The plaintext exists only here.
    """
    if material.root_key_id == keyring.key_id or material.destroyed_at is not None or not material.root_key_id:
        # Already current, imported material deleted, or a custom key store's key: nothing to re-wrap.
        return False
    aad = material_aad(material.key_id, material.version)
    raw = _wrapping_key(material.root_key_id).unwrap(bytes(material.wrapped), aad)
    material.wrapped = keyring.wrap(raw, aad)
    material.root_key_id = keyring.key_id
    return True


def material_replicate(*, source: KeyMaterial, key: Key) -> KeyMaterial:
    """Copy one material version of a multi-Region key to a related key (no commit of its own).

    The copy has the same version, KeyMaterialId and material, wrapped anew
    for ``key``'s row (the wrapping binds the row's id and version).
    """
    provider = root_key_provider()
    raw = material_unwrap(source)
    return KeyMaterial.objects.create(
        key=key,
        version=source.version,
        material_id=source.material_id,
        wrapped=provider.wrap(raw, material_aad(key.id, source.version)),
        public_key=source.public_key,
        root_key_id=provider.key_id,
        created_at=source.created_at,
        rotation_type=source.rotation_type,
        fingerprint=source.fingerprint,
        description=source.description,
    )
