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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Max, Prefetch, Q, QuerySet

from keys.crypto.asymmetric import public_pem
from keys.crypto.specs import SPECS
from keys.filters import KeyFilter
from keys.models import Alias, ExpirationModel, Key, KeyManager, KeyMaterial, KeyOrigin, KeySpec, KeyState
from kmsweb import generations
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidMarker, NotFound
from kmsweb.ttlcache import TTLCache

_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):key/(mrk-[0-9a-f]{32}|[0-9a-fA-F-]{36})$")
# A multi-Region key's id: ``mrk-`` and 32 lowercase hex digits.
_MRK_ID = re.compile(r"^mrk-([0-9a-f]{32})$")
_ALIAS_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):(alias/.+)$")
# Keys are shown by alias first; templates read ``key.aliases.all`` without a query per row.
_ALIASES_BY_NAME = Prefetch("aliases", queryset=Alias.objects.order_by("name"))


def _key_arn(caller: Caller, account_id: str, key_id: str) -> str:
    return f"arn:aws:kms:{caller.region}:{account_id}:key/{key_id}"


def _parse_uuid(text: str) -> uuid.UUID | None:
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    return value if str(value) == text.lower() else None


def _parse_mrk(text: str) -> uuid.UUID | None:
    match = _MRK_ID.match(text)
    return uuid.UUID(hex=match.group(1)) if match else None


def _cache_seconds() -> float:
    return float(settings.KMSWEB_AUTH_CACHE_SECONDS)


# key uuid -> Key (with its current material) or None; the API reads a key on
# every call. Every state, policy or material change goes through
# ``keys.services.common.key_lock`` or ``key_forget``, which bump the keys'
# generation: the next request of every process reads the key again.
KEY_CACHE: TTLCache[Key | None] = TTLCache(_cache_seconds, generations.KEYS)


def _load_key(key_uuid: uuid.UUID) -> Key | None:
    return (
        Key.objects.select_related("current_material")
        .filter(id=key_uuid, deleted_at__isnull=True)
        .exclude(manager=KeyManager.OWNED)
        .first()
    )


def _load_related_key(multi_region_id: uuid.UUID, region: str) -> Key | None:
    return (
        Key.objects.select_related("current_material")
        .filter(multi_region_id=multi_region_id, region=region, deleted_at__isnull=True)
        .exclude(manager=KeyManager.OWNED)
        .first()
    )


def _related_key(multi_region_id: uuid.UUID, region: str) -> Key | None:
    """The live key of multi-Region key ``multi_region_id`` in ``region`` (cached like ``KEY_CACHE``'s others)."""
    return KEY_CACHE.get_or_load(("mrk", multi_region_id, region), lambda: _load_related_key(multi_region_id, region))


def _get_by_id(caller: Caller, key_uuid: uuid.UUID, account_id: str, region: str) -> Key:
    key = KEY_CACHE.get_or_load(key_uuid, lambda: _load_key(key_uuid))
    # A key id alone names a key of the caller's own account and region only.
    if key is None or key.account_id != account_id or key.region != region:
        raise NotFound(f"Key '{_key_arn(caller, account_id, str(key_uuid))}' does not exist")
    return key


def _get_by_mrk(caller: Caller, multi_region_id: uuid.UUID, account_id: str, region: str) -> Key:
    key = _related_key(multi_region_id, region)
    if key is None or key.account_id != account_id:
        raise NotFound(f"Key '{_key_arn(caller, account_id, f'mrk-{multi_region_id.hex}')}' does not exist")
    return key


def _get_by_alias(caller: Caller, name: str, account_id: str, region: str) -> Key:
    alias = (
        Alias.objects.select_related("key", "key__current_material")
        .filter(account_id=account_id, region=region, name=name, key__deleted_at__isnull=True)
        .first()
    )
    if alias is None:
        raise NotFound(f"Alias arn:aws:kms:{region}:{account_id}:{name} is not found.")
    key = alias.key
    # kms:RequestAlias: policies may allow a key only when it is named by an alias.
    key.requested_as = name
    return key


def key_get_for(*, caller: Caller, key_ref: str, allow_alias: bool = True) -> Key:
    """Resolve ``key_ref`` in the caller's region; raise ``NotFound`` if absent.

    A key ARN or alias ARN may name another account (cross-account use);
    a bare key id or alias name always means the caller's account.
    """
    ref = key_ref.strip()
    if (match := _KEY_ARN.match(ref)) is not None:
        region, account_id, raw_id = match.groups()
        if region != caller.region:
            raise NotFound(f"Key '{ref}' does not exist")
        if (mrk_uuid := _parse_mrk(raw_id)) is not None:
            return _get_by_mrk(caller, mrk_uuid, account_id, region)
        key_uuid = _parse_uuid(raw_id)
        if key_uuid is None:
            raise NotFound(f"Key '{ref}' does not exist")
        return _get_by_id(caller, key_uuid, account_id, region)
    if (key_uuid := _parse_uuid(ref)) is not None:
        return _get_by_id(caller, key_uuid, caller.account_id, caller.region)
    if (mrk_uuid := _parse_mrk(ref)) is not None:
        return _get_by_mrk(caller, mrk_uuid, caller.account_id, caller.region)
    if allow_alias:
        if (match := _ALIAS_ARN.match(ref)) is not None:
            region, account_id, name = match.groups()
            if region != caller.region:
                raise NotFound(f"Alias {ref} is not found.")
            return _get_by_alias(caller, name, account_id, region)
        if ref.startswith("alias/"):
            return _get_by_alias(caller, ref, caller.account_id, caller.region)
    raise NotFound(f"Invalid keyId '{key_ref}'")


KEY_REF_HELP = "An alias (alias/orders), alias ARN, key id or key ARN."


def key_ref_names_alias(key_ref: str) -> bool:
    """Whether ``key_ref`` names a key by alias (``alias/...`` or an alias ARN)."""
    ref = key_ref.strip()
    return ref.startswith("alias/") or _ALIAS_ARN.match(ref) is not None


def key_resolve_ref(*, caller: Caller, key_ref: str) -> Key:
    """The key a dashboard field names, however people name it: an alias, an
    alias ARN, a key id or a key ARN (every dashboard key field accepts all four).

    Raises ``NotFound`` with a message meant for the person who typed it.
    """
    try:
        return key_get_for(caller=caller, key_ref=key_ref)
    except NotFound as exc:
        ref = key_ref.strip()
        if key_ref_names_alias(ref):
            raise NotFound(f"No alias '{ref}' in this account.") from exc
        if _KEY_ARN.match(ref) or _parse_uuid(ref):
            raise NotFound(f"No key '{ref}' in this account.") from exc
        raise NotFound(f"'{ref}' is not an alias, alias ARN, key id or key ARN.") from exc


def key_get_by_uuid(*, key_uuid: uuid.UUID) -> Key | None:
    """The key a ciphertext blob names, whatever its account (or None)."""
    return Key.objects.filter(id=key_uuid).first()


def key_get_for_ciphertext(*, key_uuid: uuid.UUID, region: str) -> Key | None:
    """The live, non-owned key of ``region`` a ciphertext blob names, whatever its account, or None.

    A multi-Region key's blob names the id its related keys share: the
    related key of ``region`` opens it, whichever region encrypted it.
    Read through ``KEY_CACHE`` with its current material, like ``key_get_for``:
    Decrypt of the current version then needs no query of its own.
    """
    key = KEY_CACHE.get_or_load(key_uuid, lambda: _load_key(key_uuid))
    if key is not None and key.region == region and key.blob_id == key_uuid:
        return key
    return _related_key(key_uuid, region)


def related_keys(*, key: Key) -> list[Key]:
    """Every live key of ``key``'s multi-Region key (``key`` included), primary first, then by region."""
    if key.multi_region_id is None:
        return [key]
    keys = Key.objects.filter(multi_region_id=key.multi_region_id, deleted_at__isnull=True)
    return sorted(keys, key=lambda k: (k.multi_region_type != "PRIMARY", k.region))


def material_get_for(*, key: Key, version: int) -> KeyMaterial | None:
    """Version ``version`` of ``key``'s material (None if it does not exist).

    The current version comes with the key; older versions (ciphertext made
    before a rotation) are read from the database.
    """
    current = key.current_material
    if current is not None and current.version == version:
        return current
    return KeyMaterial.objects.filter(key_id=key.pk, version=version).first()


def custom_key_store_key_counts(*, store_ids: Sequence[str]) -> dict[str, int]:
    """How many live keys each of these custom key stores holds (one query)."""
    rows = (
        Key.objects.filter(custom_key_store_id__in=store_ids, deleted_at__isnull=True)
        .values("custom_key_store_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {row["custom_key_store_id"]: row["n"] for row in rows}


def key_list_for(*, caller: Caller) -> QuerySet[Key]:
    """Keys visible to the caller in its account and region, in a stable order."""
    return Key.objects.visible().filter(account_id=caller.account_id, region=caller.region).order_by("created_at", "id")


SUGGESTIONS = 10


def key_suggestions_for(*, caller: Caller, text: str) -> list[tuple[str, Key]]:
    """Type-ahead for key fields: (what to fill in, key) pairs whose alias,
    description or id contains ``text``; aliases first, as people name keys."""
    text = text.strip()[:256]
    if not text:
        return []
    keys = key_list_for(caller=caller)
    out: list[tuple[str, Key]] = []
    aliases = (
        Alias.objects.filter(key__in=keys, name__icontains=text.removeprefix("alias/"))
        .select_related("key")
        .order_by("name")[:SUGGESTIONS]
    )
    out += [(a.name, a.key) for a in aliases]
    seen = {k.pk for _, k in out}
    more = keys.filter(Q(description__icontains=text) | Q(id__startswith=text.lower())).exclude(pk__in=seen)
    for key in more.prefetch_related(_ALIASES_BY_NAME)[: SUGGESTIONS - len(out)]:
        first = next(iter(key.aliases.all()), None)
        out.append((first.name if first else str(key.id), key))
    return out[:SUGGESTIONS]


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
    # Markers only ever hold strings and integers; anything else is forged and
    # must not reach a query (PostgreSQL fails on a list or dict parameter).
    if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
        raise InvalidMarker("The marker is not valid.")
    return values


# --- Dashboard reads -------------------------------------------------------


@dataclass(frozen=True)
class KeyRow:
    key: Key
    aliases: list[str]
    last_used: datetime | None


@dataclass(frozen=True)
class KeyTable:
    """One page of the key table, with what the pager needs."""

    rows: list[KeyRow]
    total: int
    page: int
    pages: int
    per_page: int

    @property
    def start(self) -> int:
        return 0 if self.total == 0 else (self.page - 1) * self.per_page + 1

    @property
    def end(self) -> int:
        return min(self.page * self.per_page, self.total)

    @property
    def previous(self) -> int | None:
        return self.page - 1 if self.page > 1 else None

    @property
    def next(self) -> int | None:
        return self.page + 1 if self.page < self.pages else None


def key_table_for(*, caller: Caller, flt: KeyFilter) -> KeyTable:
    """A page of the caller's keys under ``flt``: four queries whatever the page size."""
    from audit.selectors import last_used_by_key

    qs = flt.apply(key_list_for(caller=caller))
    total = qs.count()
    pages = max(1, -(-total // flt.per_page))
    page = min(flt.page, pages)
    offset = (page - 1) * flt.per_page
    keys = list(qs.prefetch_related(_ALIASES_BY_NAME)[offset : offset + flt.per_page])
    last_used = last_used_by_key(key_ids=[str(k.id) for k in keys])
    rows = [KeyRow(k, [a.name for a in k.aliases.all()], last_used.get(str(k.id))) for k in keys]
    return KeyTable(rows=rows, total=total, page=page, pages=pages, per_page=flt.per_page)


def key_counts_for(*, caller: Caller) -> dict[str, int]:
    """Tab counts: the caller's customer and AWS managed keys, and platform keys."""
    counts = {
        row["manager"]: row["n"]
        for row in key_list_for(caller=caller).values("manager").annotate(n=Count("id")).order_by()
    }
    owned = Key.objects.filter(manager=KeyManager.OWNED, deleted_at__isnull=True).count()
    return {"customer": counts.get(KeyManager.CUSTOMER, 0), "aws": counts.get(KeyManager.AWS, 0), "owned": owned}


def owned_key_summary() -> list[dict[str, Any]]:
    """Platform owned keys without their ids: purpose, versions, dates."""
    rows = (
        Key.objects.filter(manager=KeyManager.OWNED, deleted_at__isnull=True)
        .annotate(versions=Count("materials"), last_rotation=Max("materials__created_at"))
        .order_by("purpose")
        .values("purpose", "versions", "created_at", "last_rotation")
    )
    return [{**row, "last_rotation": row["last_rotation"] if row["versions"] > 1 else None} for row in rows]


def key_overview_for(*, caller: Caller) -> dict[str, Any]:
    """The home page's numbers: keys per kind and state, rotation gaps, pending deletions."""
    qs: Any = key_list_for(caller=caller)  # a KeyQuerySet (rotatable())
    by_kind: dict[str, dict[str, int]] = {}
    for row in qs.values("manager", "state").annotate(n=Count("id")).order_by():
        by_kind.setdefault(row["manager"], {})[row["state"]] = row["n"]
    kinds = []
    for value, label in ((KeyManager.CUSTOMER, "Customer managed"), (KeyManager.AWS, "Service managed")):
        states = sorted(by_kind.get(value, {}).items())
        kinds.append({"label": label, "total": sum(n for _, n in states), "states": states})
    owned = Key.objects.filter(manager=KeyManager.OWNED, deleted_at__isnull=True).count()
    kinds.append({"label": "Platform owned", "total": owned, "states": [], "note": "kmsweb's own, never exposed"})
    no_rotation = qs.rotatable().filter(manager=KeyManager.CUSTOMER, state=KeyState.ENABLED, rotation_enabled=False)
    return {
        "account_id": caller.account_id,
        "region": caller.region,
        "kinds": kinds,
        "without_rotation_count": no_rotation.count(),
        "without_rotation": list(no_rotation.prefetch_related(_ALIASES_BY_NAME).order_by("created_at")[:10]),
        "pending_deletion": list(
            qs.filter(state__in=(KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION))
            .prefetch_related(_ALIASES_BY_NAME)
            .order_by(F("deletion_date").asc(nulls_last=True))[:10]
        ),
    }


def rotation_entry(key: Key, material: KeyMaterial) -> dict[str, Any]:
    """One material version as ListKeyRotations reports it (the API and the key page).

    The first material and material pending rotation have no RotationDate
    nor RotationType, as in AWS.
    """
    if material.pk == key.current_material_id:
        state = "CURRENT"
    elif material.pending_rotation:
        state = "PENDING_ROTATION"
    else:
        state = "NON_CURRENT"
    entry: dict[str, Any] = {"KeyId": key.key_id, "KeyMaterialId": material.material_id, "KeyMaterialState": state}
    if material.rotation_type:
        entry["RotationDate"] = material.rotated_at or material.created_at
        entry["RotationType"] = material.rotation_type
    elif material.version == 1 and key.origin != KeyOrigin.EXTERNAL:
        entry["RotationDate"] = material.created_at
    if key.origin == KeyOrigin.EXTERNAL:
        # AWS's newer members for imported material.
        entry["ImportState"] = "PENDING_IMPORT" if material.destroyed_at else "IMPORTED"
        if material.description:
            entry["KeyMaterialDescription"] = material.description
        model = material.expiration_model or (key.expiration_model if material.pk == key.current_material_id else "")
        if not material.destroyed_at and model:
            entry["ExpirationModel"] = model
            valid_to = material.valid_to or (key.valid_to if material.pk == key.current_material_id else None)
            if model == ExpirationModel.EXPIRES and valid_to is not None:
                entry["ValidTo"] = valid_to
    return entry


@dataclass(frozen=True)
class RotationOutlook:
    """When the rotation job will next rotate a key, or why it will not."""

    next_at: datetime | None
    note: str
    due: bool = False


ROTATION_JOB_NOTE = "the rotate_keys job rotates it on its next run (hourly)"


def rotation_outlook(key: Key, now: datetime) -> RotationOutlook:
    """The key page's "next rotation": the job's rules (``Key.objects.due_for_rotation``,
    enabled keys only) in words, as AWS describes them for disabled keys and keys
    pending deletion: skipped meanwhile, rotated at once when back if the date has passed."""
    if key.is_deleted:
        return RotationOutlook(None, "The key is deleted.")
    if key.key_spec != KeySpec.SYMMETRIC_DEFAULT:
        return RotationOutlook(None, "Only symmetric encryption keys rotate automatically.")
    if key.origin == KeyOrigin.EXTERNAL:
        return RotationOutlook(None, "Keys with imported key material do not rotate automatically.")
    if key.manager == KeyManager.CUSTOMER and not key.rotation_enabled:
        return RotationOutlook(None, "Automatic rotation is off.")
    scheduled = key.next_rotation_at
    when = f"{scheduled:%Y-%m-%d %H:%M} UTC" if scheduled else ""
    if key.state in (KeyState.DISABLED, KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION):
        why = "disabled" if key.state == KeyState.DISABLED else "pending deletion"
        back = "enabled again" if key.state == KeyState.DISABLED else "its deletion is cancelled and it is enabled"
        if scheduled and scheduled <= now:
            then = f"it was due on {when}, so once {back} {ROTATION_JOB_NOTE}"
        elif scheduled:
            then = f"once {back} it rotates on {when}"
        else:
            then = f"it rotates once {back}"
        return RotationOutlook(None, f"Not rotated while the key is {why}: {then}.")
    if scheduled is None:
        return RotationOutlook(None, "No automatic rotation is scheduled.")
    if scheduled <= now:
        return RotationOutlook(scheduled, f"Due since {when}: {ROTATION_JOB_NOTE}.", due=True)
    return RotationOutlook(scheduled, "")


MATERIAL_COLUMNS = (
    "pk",
    "version",
    "material_id",
    "created_at",
    "rotation_type",
    "destroyed_at",
    "description",
    "expiration_model",
    "valid_to",
    "rotated_at",
)


@dataclass(frozen=True)
class KeyDetail:
    aliases: list[Alias]
    tags: list[Any]
    # The material versions, newest first, as ListKeyRotations entries (initial material included).
    rotations: list[dict[str, Any]]
    rotation: RotationOutlook
    last_used: datetime | None
    # Live grants (not retired, revoked or expired), oldest first.
    grants: list[Any]
    # DescribeKey's algorithm lists (EncryptionAlgorithms, SigningAlgorithms, ...).
    algorithms: dict[str, list[str]]
    # The public key of an asymmetric key, PEM; None for symmetric and HMAC keys.
    public_pem: str | None
    # A multi-Region key's related keys (itself included), primary first; empty for a single-Region key.
    related: list[Key]

    @property
    def material_present(self) -> bool:
        """Some material is usable (imported material may be deleted or expired)."""
        return any(r.get("ImportState", "IMPORTED") == "IMPORTED" for r in self.rotations)

    @property
    def pending_rotation(self) -> bool:
        """Imported material waits for RotateKeyOnDemand."""
        return any(r["KeyMaterialState"] == "PENDING_ROTATION" for r in self.rotations)


def key_detail_for(*, caller: Caller, key: Key) -> KeyDetail:
    """What the key page shows besides the key row itself."""
    from django.utils import timezone

    from audit.selectors import last_used_by_key
    from policies.models import Grant

    return KeyDetail(
        aliases=list(key.aliases.order_by("name")),
        tags=list(key.tags.order_by("tag_key")),
        rotations=[
            {"Version": m.version, **rotation_entry(key, m)}
            for m in key.materials.order_by("-version").only(*MATERIAL_COLUMNS)
        ],
        rotation=rotation_outlook(key, timezone.now()),
        last_used=last_used_by_key(key_ids=[str(key.id)]).get(str(key.id)),
        grants=list(Grant.objects.live(timezone.now()).filter(key=key).order_by("created_at", "id")),
        algorithms=SPECS[key.key_spec].algorithms_for(key.key_usage),
        public_pem=key_public_pem(key),
        related=related_keys(key=key) if key.is_multi_region else [],
    )


def key_public_pem(key: Key) -> str | None:
    """The current public key of an asymmetric key as PEM (public data, not a secret)."""
    material = key.current_material
    if material is None or not material.public_key:
        return None
    return public_pem(bytes(material.public_key))


def public_key_pem(public_der: bytes) -> str:
    """PEM text of a DER SubjectPublicKeyInfo."""
    return public_pem(public_der)
