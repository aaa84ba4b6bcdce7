"""Platform owned keys: kmsweb's own keys for its own secrets.

Each purpose (``access-key-secrets``, later TOTP secrets, webhook secrets,
audit signing) has one key with manager OWNED, no account, and no way onto
the wire. Unwrapped platform material is cached per process: access-key
secrets are decrypted on every API request, and re-reading the material each
time would cost the API a query per call.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audited
from keys import crypto
from keys.crypto.errors import CryptoError
from keys.models import Key, KeyManager, KeyMaterial
from keys.services.material import material_create, material_unwrap
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InternalError

_lock = threading.Lock()
_current: dict[str, tuple[uuid.UUID, int]] = {}
_materials: dict[tuple[uuid.UUID, int], bytes] = {}


def platform_key_get_or_create(*, purpose: str) -> Key:
    """The platform owned key for ``purpose``, created (and audited) on first use."""
    key = Key.objects.select_related("current_material").filter(manager=KeyManager.OWNED, purpose=purpose).first()
    if key is not None:
        return key
    caller = Caller.system("platform-keys")
    try:
        with audited(caller, "CreateKey", request_parameters={"Purpose": purpose}) as op:
            with transaction.atomic():
                now = timezone.now()
                key = Key.objects.create(
                    account=None,
                    region="",
                    manager=KeyManager.OWNED,
                    purpose=purpose,
                    description=f"kmsweb platform key: {purpose}",
                    created_at=now,
                    rotation_enabled=True,
                    rotation_period_days=365,
                )
                key.current_material = material_create(key=key, version=1, now=now)
                key.save(update_fields=["current_material"])
            op.keys.append(key)
    except IntegrityError:
        # Another process created it first: use theirs.
        key = Key.objects.select_related("current_material").get(manager=KeyManager.OWNED, purpose=purpose)
    return key


def _material(key_id: uuid.UUID, version: int) -> bytes:
    cached = _materials.get((key_id, version))
    if cached is not None:
        return cached
    row = KeyMaterial.objects.filter(key_id=key_id, version=version, key__manager=KeyManager.OWNED).first()
    if row is None:
        raise InternalError("A platform secret refers to key material that does not exist.")
    raw = material_unwrap(row)
    with _lock:
        _materials[(key_id, version)] = raw
    return raw


def platform_encrypt(*, purpose: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
    """Encrypt a platform secret under the current version of its purpose's key."""
    current = _current.get(purpose)
    if current is None:
        key = platform_key_get_or_create(purpose=purpose)
        assert key.current_material is not None
        current = (key.id, key.current_material.version)
        with _lock:
            _current[purpose] = current
    key_id, version = current
    context = {"kmsweb:purpose": purpose, **context}
    return crypto.encrypt(
        _material(key_id, version), key_id=key_id, version=version, plaintext=plaintext, context=context
    )


def platform_decrypt(*, purpose: str, blob: bytes, context: Mapping[str, str]) -> bytes:
    """Decrypt a platform secret made by :func:`platform_encrypt` with the same context."""
    try:
        header = crypto.parse_header(blob)
        material = _material(header.key_id, header.version)
        return crypto.decrypt(material, blob, {"kmsweb:purpose": purpose, **context})
    except CryptoError as exc:
        raise InternalError("A platform secret failed its integrity check.") from exc


def platform_cache_clear() -> None:
    """Forget cached platform material (tests, and after a root-key rotation)."""
    with _lock:
        _current.clear()
        _materials.clear()
