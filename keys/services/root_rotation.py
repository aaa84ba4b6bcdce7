"""Rotating the root key (and the platform owned keys) without downtime.

The root key file holds several keys, oldest first; the last is current
(see ``keys.crypto.RootKeyring``). ``root_key_add`` appends a new key;
every process re-reads the file when it changes and from then on wraps new
material under the new key while still unwrapping under the old ones.
``root_key_rotate`` then re-wraps every ``KeyMaterial`` row (customer,
service and platform owned keys alike) in short batches, each its own
transaction, so requests are served throughout. It is idempotent and
resumable: only rows not yet under the current key are touched. Old keys
can leave the file once ``root_key_status`` shows they wrap nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from audit.services import audited
from keys.crypto import new_root_key_line
from keys.crypto.errors import CryptoError
from keys.crypto.pkcs11 import TokenError
from keys.models import Key, KeyManager, KeyMaterial, KeyState, RotationType
from keys.services.material import material_rewrap, root_keyring, token_root_key
from keys.services.platform import platform_cache_clear, platform_secrets_reencrypt
from keys.services.rotation import key_rotate
from kmsweb.generations import KEYS, generation_bump
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InternalError, ValidationError

EVENT_SOURCE = "kmsweb"
BATCH = 200


def root_key_add(*, label: str | None = None) -> str:
    """Append a new random root key to KMSWEB_ROOT_KEY_FILE; return its id.

    The file is replaced atomically (write, fsync, rename; mode 0600) and
    keeps every older key, so no process ever reads a file without the key
    its material is wrapped under. When the current root key is the PKCS#11
    token's (KMSWEB_ROOT_KEY_CURRENT=pkcs11), the token generates it instead
    (sensitive, not extractable) under KMSWEB_ROOT_KEY_PKCS11_KEY_LABEL; a
    token that already holds that label is refused.
    """
    if settings.KMSWEB_ROOT_KEY_CURRENT == "pkcs11":
        token = token_root_key()
        assert token is not None  # the settings refuse pkcs11 without a library
        try:
            token.create()
        except TokenError as exc:
            raise ValidationError(f"The token root key cannot be created: {exc}") from exc
        return root_keyring(reload=True).key_id
    path = getattr(settings, "KMSWEB_ROOT_KEY_FILE", None)
    if not path:
        raise ValidationError(
            "The root key comes from KMSWEB_ROOT_KEY: add the new key there as a new last line "
            "(label:base64) and restart, or use KMSWEB_ROOT_KEY_FILE."
        )
    target = Path(path)
    old = target.read_text(encoding="utf-8")
    line = new_root_key_line(label or f"root-{timezone.now():%Y%m%dT%H%M%SZ}")
    text = old.rstrip("\n") + "\n" + line + "\n"
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".root_key.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return root_keyring(reload=True).key_id


def root_key_status() -> dict[str, Any]:
    """How many material versions each root key wraps, and which one is current."""
    keyring = root_keyring(reload=True)
    wraps = {
        row["root_key_id"]: row["n"]
        # A custom key store's keys (no root_key_id) are not wrapped by kmsweb.
        for row in KeyMaterial.objects.filter(destroyed_at__isnull=True)
        .exclude(root_key_id="")
        .values("root_key_id")
        .annotate(n=Count("id"))
        .order_by()
    }
    return {
        "current": keyring.key_id,
        "held": keyring.key_ids,
        "wraps": wraps,
        "unknown": sorted(set(wraps) - set(keyring.key_ids)),
    }


def _rewrap_all(batch: int) -> dict[str, int]:
    keyring = root_keyring(reload=True)
    counts = {"rewrapped": 0, "failed": 0}
    last = 0
    while True:
        with transaction.atomic():
            rows = list(
                KeyMaterial.objects.select_for_update()
                # Deleted imported material has nothing wrapped left.
                .filter(pk__gt=last, destroyed_at__isnull=True)
                .exclude(root_key_id=keyring.key_id)
                .exclude(root_key_id="")
                .order_by("pk")[:batch]
            )
            changed = []
            for row in rows:
                try:
                    material_rewrap(row, keyring)
                except (CryptoError, InternalError):
                    counts["failed"] += 1
                    continue
                changed.append(row)
            # One UPDATE per batch, not per row.
            KeyMaterial.objects.bulk_update(changed, ["wrapped", "root_key_id"])
            counts["rewrapped"] += len(changed)
        if changed:
            # Cached keys hold their current material row, which the batch
            # re-wrapped: every process reads it again. Both wrappings stay
            # readable while the old root key is in the keyring, so the bump
            # may follow the commit.
            generation_bump(KEYS)
        if rows:
            last = rows[-1].pk
        if len(rows) < batch:
            return counts


def _rotate_owned(caller: Caller) -> int:
    rotated = 0
    now = timezone.now()
    for key in Key.objects.filter(manager=KeyManager.OWNED, state=KeyState.ENABLED, deleted_at__isnull=True):
        key_rotate(caller=caller, key=key, rotation_type=RotationType.AUTOMATIC, now=now)
        rotated += 1
    platform_cache_clear()
    return rotated


def root_key_rotate(
    *, caller: Caller, new_key: bool = False, rotate_owned: bool = False, batch: int = BATCH
) -> dict[str, Any]:
    """Re-wrap all key material under the current root key (audited as RotateRootKey).

    ``new_key`` first appends a new root key to the key file; ``rotate_owned``
    also gives every platform owned key a new material version and
    re-encrypts the secrets they protect under it. Returns the counts the
    audit event records.
    """
    with audited(caller, "RotateRootKey", event_source=EVENT_SOURCE, atomic=False) as op:
        if new_key:
            root_key_add()
        keyring = root_keyring(reload=True)
        result: dict[str, Any] = {"rootKeyId": keyring.key_id}
        if rotate_owned:
            result["ownedKeysRotated"] = _rotate_owned(caller)
            result["secretsReencrypted"] = platform_secrets_reencrypt(batch=batch)
        result.update(_rewrap_all(batch))
        status = root_key_status()
        result["remainingUnderOldKeys"] = sum(n for k, n in status["wraps"].items() if k != keyring.key_id)
        op.additional_event_data.update(result)
        op.response_elements = {"RootKeyId": keyring.key_id}
        if result["failed"]:
            raise InternalError(f"{result['failed']} key material versions could not be re-wrapped.")
        return result
