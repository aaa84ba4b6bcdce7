"""Platform owned keys: kmsweb's own keys for its own secrets.

Each purpose (``access-key-secrets``, later TOTP secrets, webhook secrets,
audit signing) has one key with manager OWNED, no account, and no way onto
the wire. Unwrapped platform material is cached per process: access-key
secrets are decrypted on every API request, and re-reading the material each
time would cost the API a query per call.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_record
from keys import crypto
from keys.crypto.errors import CryptoError
from keys.models import Key, KeyManager, KeyMaterial
from keys.services.material import material_create, material_unwrap
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InternalError

ROTATION_DAYS = 365
# How long a process keeps encrypting under the version it knows before it
# looks for a newer one (after a rotation elsewhere); old versions decrypt
# for ever, so a stale process only delays adoption.
CURRENT_VERSION_SECONDS = 60.0
_lock = threading.Lock()
_current: dict[str, tuple[uuid.UUID, int, float]] = {}
_materials: dict[tuple[uuid.UUID, int], bytes] = {}


@dataclass(frozen=True)
class PlatformSecretField:
    """A model field holding blobs made by ``platform_encrypt``, and the
    encryption context each row binds (re-encrypted by ``rotate_root_key
    --rotate-owned``). Add an entry for every new kind of platform secret."""

    purpose: str
    model: str
    field: str
    context: Callable[[Any], dict[str, str]]


PLATFORM_SECRET_FIELDS: list[PlatformSecretField] = [
    PlatformSecretField(
        "access-key-secrets", "policies.AccessKey", "secret_ciphertext", lambda o: {"accessKeyId": o.access_key_id}
    ),
    PlatformSecretField(
        "totp-secrets", "policies.TotpDevice", "secret_ciphertext", lambda o: {"userId": str(o.user_id)}
    ),
    PlatformSecretField(
        "audit-signing", "audit.SigningKey", "private_key_ciphertext", lambda o: {"fingerprint": o.fingerprint}
    ),
    # An alarm without a webhook has no secret (an empty field, skipped).
    # A custom key store's token PIN or XKS proxy secret access key.
    PlatformSecretField(
        "custom-key-store-secrets",
        "keys.CustomKeyStore",
        "secret_ciphertext",
        lambda o: {"customKeyStoreId": o.id},
    ),
    PlatformSecretField(
        "webhook-secrets", "audit.Alarm", "webhook_secret_ciphertext", lambda o: {"kmsweb:alarm": str(o.pk)}
    ),
]


def platform_key_get_or_create(*, purpose: str) -> Key:
    """The platform owned key for ``purpose``, created (and audited) on first use."""
    key = Key.objects.select_related("current_material").filter(manager=KeyManager.OWNED, purpose=purpose).first()
    if key is not None:
        return key
    caller = Caller.system("platform-keys")
    try:
        # Not ``audited``: it would turn the IntegrityError of a lost race
        # into an InternalError; the event commits with the key or not at all.
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
                rotation_period_days=ROTATION_DAYS,
                next_rotation_at=now + timedelta(days=ROTATION_DAYS),
            )
            key.current_material = material_create(key=key, version=1, now=now)
            key.save(update_fields=["current_material"])
            audit_record(caller=caller, event_name="CreateKey", request_parameters={"Purpose": purpose}, keys=[key])
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
    if current is None or current[2] < time.monotonic():
        key = platform_key_get_or_create(purpose=purpose)
        assert key.current_material is not None
        current = (key.id, key.current_material.version, time.monotonic() + CURRENT_VERSION_SECONDS)
        with _lock:
            _current[purpose] = current
    key_id, version, _ = current
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


def _rows(model: Any, batch: int) -> Iterator[list[Any]]:
    last: Any = None
    while True:
        qs = model.objects.order_by("pk")
        if last is not None:
            qs = qs.filter(pk__gt=last)
        rows = list(qs[:batch])
        if rows:
            yield rows
        if len(rows) < batch:
            return
        last = rows[-1].pk


def platform_secrets_reencrypt(*, batch: int = 200) -> dict[str, int]:
    """Re-encrypt every platform secret not under its purpose's current key
    version; returns counts per purpose. Idempotent and resumable: a row
    already current is skipped, each batch commits on its own, and old
    versions stay, so a row missed (or written meanwhile by a process that
    had not yet seen the new version) still decrypts.
    """
    platform_cache_clear()
    counts: dict[str, int] = {}
    for spec in PLATFORM_SECRET_FIELDS:
        model = apps.get_model(spec.model)
        key = Key.objects.filter(manager=KeyManager.OWNED, purpose=spec.purpose).select_related("current_material")
        owned = key.first()
        if owned is None or owned.current_material is None:
            counts[spec.purpose] = 0
            continue
        current = (owned.id, owned.current_material.version)
        done = 0
        for rows in _rows(model, batch):
            with transaction.atomic():
                for row in rows:
                    stored = getattr(row, spec.field)
                    if not stored:
                        continue
                    blob = bytes(stored)
                    try:
                        header = crypto.parse_header(blob)
                    except CryptoError:
                        continue
                    if (header.key_id, header.version) == current:
                        continue
                    context = spec.context(row)
                    plaintext = platform_decrypt(purpose=spec.purpose, blob=blob, context=context)
                    fresh = platform_encrypt(purpose=spec.purpose, plaintext=plaintext, context=context)
                    # Only this row and only while it still holds what was read.
                    model.objects.filter(pk=row.pk, **{spec.field: blob}).update(**{spec.field: fresh})
                    done += 1
        counts[spec.purpose] = done
    return counts


def _mac_key(material: bytes, purpose: str) -> bytes:
    # A key of its own for MACs, derived from the purpose's material, so the
    # same bytes never serve as both an AES-GCM key and an HMAC key.
    return hmac.new(material, f"kmsweb:mac-key:{purpose}".encode(), hashlib.sha256).digest()


def platform_mac_key(*, purpose: str, version: int | None = None) -> tuple[int, bytes]:
    """(version, key) of an HMAC key under ``purpose``'s platform key: the
    current version, or the given one (to check a MAC made before a rotation)."""
    key = platform_key_get_or_create(purpose=purpose)
    if version is None:
        assert key.current_material is not None
        version = key.current_material.version
    return version, _mac_key(_material(key.id, version), purpose)
