"""Reading keys and aliases for a caller.

``key_get_for`` understands every way AWS lets a client name a key: key id,
key ARN, alias name and alias ARN. It finds the key; whether the caller may
use it is ``authorize``'s decision, so that another account's key gives
AccessDenied (as in AWS) rather than pretending it does not exist.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from django.db.models import Count, QuerySet

from keys.models import Alias, Key, KeyManager
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidMarker, NotFound

_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):key/([0-9a-fA-F-]{36})$")
_ALIAS_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):(alias/.+)$")


def _key_arn(caller: Caller, account_id: str, key_id: str) -> str:
    return f"arn:aws:kms:{caller.region}:{account_id}:key/{key_id}"


def _parse_uuid(text: str) -> uuid.UUID | None:
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    return value if str(value) == text.lower() else None


def _get_by_id(caller: Caller, key_uuid: uuid.UUID, account_id: str, region: str) -> Key:
    key = (
        Key.objects.select_related("current_material")
        .filter(id=key_uuid, region=region, deleted_at__isnull=True)
        .exclude(manager=KeyManager.OWNED)
        .first()
    )
    # A key id alone names a key of the caller's own account only.
    if key is None or key.account_id != account_id:
        raise NotFound(f"Key '{_key_arn(caller, account_id, str(key_uuid))}' does not exist")
    return key


def _get_by_alias(caller: Caller, name: str, account_id: str, region: str) -> Key:
    alias = (
        Alias.objects.select_related("key", "key__current_material")
        .filter(account_id=account_id, region=region, name=name, key__deleted_at__isnull=True)
        .first()
    )
    if alias is None:
        raise NotFound(f"Alias arn:aws:kms:{region}:{account_id}:{name} is not found.")
    return alias.key


def key_get_for(*, caller: Caller, key_ref: str, allow_alias: bool = True) -> Key:
    """Resolve ``key_ref`` in the caller's region; raise ``NotFound`` if absent.

    A key ARN or alias ARN may name another account (cross-account use);
    a bare key id or alias name always means the caller's account.
    """
    ref = key_ref.strip()
    if (match := _KEY_ARN.match(ref)) is not None:
        region, account_id, raw_id = match.groups()
        key_uuid = _parse_uuid(raw_id)
        if key_uuid is None or region != caller.region:
            raise NotFound(f"Key '{ref}' does not exist")
        return _get_by_id(caller, key_uuid, account_id, region)
    if (key_uuid := _parse_uuid(ref)) is not None:
        return _get_by_id(caller, key_uuid, caller.account_id, caller.region)
    if allow_alias:
        if (match := _ALIAS_ARN.match(ref)) is not None:
            region, account_id, name = match.groups()
            if region != caller.region:
                raise NotFound(f"Alias {ref} is not found.")
            return _get_by_alias(caller, name, account_id, region)
        if ref.startswith("alias/"):
            return _get_by_alias(caller, ref, caller.account_id, caller.region)
    raise NotFound(f"Invalid keyId '{key_ref}'")


def key_get_by_uuid(*, key_uuid: uuid.UUID) -> Key | None:
    """The key a ciphertext blob names, whatever its account (or None)."""
    return Key.objects.filter(id=key_uuid).first()


def key_list_for(*, caller: Caller) -> QuerySet[Key]:
    """Keys visible to the caller in its account and region, in a stable order."""
    return Key.objects.visible().filter(account_id=caller.account_id, region=caller.region).order_by("created_at", "id")


def alias_list_for(*, caller: Caller, key: Key | None = None) -> QuerySet[Alias]:
    qs = Alias.objects.filter(account_id=caller.account_id, region=caller.region, key__deleted_at__isnull=True)
    if key is not None:
        qs = qs.filter(key=key)
    return qs.order_by("name")


def encode_marker(values: Sequence[Any]) -> str:
    """An opaque paging marker (the sort values of the last item returned)."""
    return base64.urlsafe_b64encode(json.dumps(list(values), default=str).encode()).decode()


def decode_marker(marker: str, arity: int) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(marker.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMarker("The marker is not valid.") from exc
    if not isinstance(values, list) or len(values) != arity:
        raise InvalidMarker("The marker is not valid.")
    return values


def key_counts_by_kind() -> list[tuple[str, int]]:
    """(kind label, number of live keys) for the three kinds, in display order."""
    counts = {
        row["manager"]: row["n"]
        for row in Key.objects.filter(deleted_at__isnull=True).values("manager").annotate(n=Count("id"))
    }
    return [(label, counts.get(value, 0)) for value, label in KeyManager.choices]
