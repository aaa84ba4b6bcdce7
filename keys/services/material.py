"""Key material at rest: created, wrapped by the root key, unwrapped for use.

Plaintext material exists only in local variables of these functions and
their callers in ``keys.services``; it never reaches a model field
unwrapped, a log line or a task argument.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import datetime

from django.conf import settings

from keys.crypto import LocalRootKey, RootKeyProvider, generate_material
from keys.crypto.errors import CryptoError
from keys.models import Key, KeyMaterial
from kmsweb.lib.errors import InternalError


@functools.cache
def root_key_provider() -> RootKeyProvider:
    """The configured root key (KMSWEB_ROOT_KEY / KMSWEB_ROOT_KEY_FILE)."""
    return LocalRootKey.from_base64(settings.KMSWEB_ROOT_KEY)


def _aad(key_id: object, version: int) -> bytes:
    # Binding the key id and version stops a wrapped blob being moved to
    # another key or version row in the database.
    return f"kmsweb:material:{key_id}:{version}".encode()


def new_material_id() -> str:
    """A 64-hex-digit KeyMaterialId, as AWS shows them."""
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def material_create(*, key: Key, version: int, now: datetime, rotation_type: str = "") -> KeyMaterial:
    """Generate, wrap and save one version of ``key``'s material (no commit of its own)."""
    provider = root_key_provider()
    raw = generate_material()
    return KeyMaterial.objects.create(
        key=key,
        version=version,
        material_id=new_material_id(),
        wrapped=provider.wrap(raw, _aad(key.id, version)),
        root_key_id=provider.key_id,
        created_at=now,
        rotation_type=rotation_type,
    )


def material_unwrap(material: KeyMaterial) -> bytes:
    """The plaintext material of one version, for the duration of one operation."""
    provider = root_key_provider()
    if material.root_key_id != provider.key_id:
        raise InternalError("Key material is wrapped by a root key this server does not hold.")
    try:
        return provider.unwrap(bytes(material.wrapped), _aad(material.key_id, material.version))
    except CryptoError as exc:
        raise InternalError("Key material failed its integrity check.") from exc
