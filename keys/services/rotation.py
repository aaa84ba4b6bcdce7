"""Key rotation: automatic schedules and on-demand rotation.

Rotation adds a material version and makes it current; older versions keep
decrypting. Automatic rotation is scheduled ``rotation_period_days`` after
it is enabled and after each automatic rotation; on-demand rotation does not
move that schedule, as in AWS.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from audit.services import audited
from compliance.triggers import compliance_evaluation_request
from keys.models import Key, KeyMaterial, KeyOrigin, MultiRegionKeyType, RotationType
from keys.selectors import decode_marker, encode_marker, rotation_entry
from keys.services.common import (
    key_forget,
    key_lock,
    require_customer_managed,
    require_generated_material,
    require_symmetric_for_rotation,
    require_usable_for_crypto,
)
from keys.services.material import material_create, material_replicate
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidMarker, InvalidState, LimitExceeded, UnsupportedOperation, ValidationError
from policies.authorization import authorize

DEFAULT_ROTATION_DAYS = 365
MIN_ROTATION_DAYS = 90
MAX_ROTATION_DAYS = 2560
MAX_ON_DEMAND_ROTATIONS = 10


def key_enable_rotation(*, caller: Caller, key: Key, period_days: int | None = None) -> None:
    """EnableKeyRotation with a period of 90-2560 days (default 365)."""
    days = DEFAULT_ROTATION_DAYS if period_days is None else period_days
    with audited(
        caller, "EnableKeyRotation", request_parameters={"KeyId": str(key.id), "RotationPeriodInDays": days}
    ) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:EnableKeyRotation", key=key, context={"kms:RotationPeriodInDays": days})
        if not MIN_ROTATION_DAYS <= days <= MAX_ROTATION_DAYS:
            raise ValidationError(
                f"1 validation error detected: Value '{days}' at 'rotationPeriodInDays' failed to satisfy "
                "constraint: Member must have value "
                + (
                    f"greater than or equal to {MIN_ROTATION_DAYS}"
                    if days < MIN_ROTATION_DAYS
                    else f"less than or equal to {MAX_ROTATION_DAYS}"
                )
            )
        require_customer_managed(key, "EnableKeyRotation")
        require_symmetric_for_rotation(key, "EnableKeyRotation")
        require_generated_material(key, "EnableKeyRotation")
        require_not_replica(key, "EnableKeyRotation")
        key = key_lock(key)
        require_usable_for_crypto(key)
        rotation_schedule(key=key, days=days, now=timezone.now())
        _share_rotation_settings(key)
        compliance_evaluation_request()


def rotation_schedule(*, key: Key, days: int, now: datetime) -> None:
    """Turn automatic rotation on (or change its period); the caller audits.

    A first enable rotates ``days`` from now; a new period counts from the
    start of the current cycle.
    """
    if key.rotation_enabled and key.next_rotation_at and key.rotation_period_days:
        cycle_start = key.next_rotation_at - timedelta(days=key.rotation_period_days)
        next_at = max(cycle_start + timedelta(days=days), now)
    else:
        next_at = now + timedelta(days=days)
    Key.objects.filter(pk=key.pk).update(rotation_enabled=True, rotation_period_days=days, next_rotation_at=next_at)
    key.rotation_enabled, key.rotation_period_days, key.next_rotation_at = True, days, next_at


def require_not_replica(key: Key, operation: str) -> None:
    """Rotation is a shared property of multi-Region keys: it is managed on the primary key only."""
    if key.multi_region_type == MultiRegionKeyType.REPLICA:
        raise UnsupportedOperation(
            f"{operation} is not supported on the multi-Region replica key {key.arn}: "
            "rotation is managed on its primary key."
        )


def _share_rotation_settings(key: Key) -> None:
    """Hand a multi-Region primary key's rotation settings to its replicas."""
    if key.multi_region_type != MultiRegionKeyType.PRIMARY:
        return
    Key.objects.filter(multi_region_id=key.multi_region_id, deleted_at__isnull=True).exclude(pk=key.pk).update(
        rotation_enabled=key.rotation_enabled,
        rotation_period_days=key.rotation_period_days,
        next_rotation_at=key.next_rotation_at,
    )


def _rotate_replicas(key: Key, material: KeyMaterial, updates: dict[str, Any]) -> None:
    """Give the new version of a multi-Region primary key to each of its live replicas."""
    if key.multi_region_type != MultiRegionKeyType.PRIMARY:
        return
    replicas = Key.objects.filter(multi_region_id=key.multi_region_id, deleted_at__isnull=True).exclude(pk=key.pk)
    for replica in replicas.select_for_update(of=("self",)).order_by("pk"):
        if key.origin == KeyOrigin.EXTERNAL:
            # Imported material: each replica holds its own import of the same
            # material, made current by ``_replicas_pending_rotation``'s check.
            copy = KeyMaterial.objects.get(key=replica, material_id=material.material_id)
        else:
            copy = material_replicate(source=material, key=replica)
        Key.objects.filter(pk=replica.pk).update(**{**updates, "current_material": copy})


def _replicas_pending_rotation(key: Key) -> list[Key]:
    """A multi-Region primary key with imported material rotates only when each live
    replica holds the same material pending rotation (imported into each related key, as in AWS)."""
    if key.multi_region_type != MultiRegionKeyType.PRIMARY:
        return []
    pending = next((m for m in KeyMaterial.objects.filter(key=key, version__gt=1, rotation_type="")), None)
    replicas = list(
        Key.objects.filter(multi_region_id=key.multi_region_id, deleted_at__isnull=True)
        .exclude(pk=key.pk)
        .select_for_update(of=("self",))
        .order_by("pk")
    )
    for replica in replicas:
        if (
            pending is None
            or not KeyMaterial.objects.filter(
                key=replica,
                material_id=pending.material_id,
                version=pending.version,
                rotation_type="",
                destroyed_at__isnull=True,
            ).exists()
        ):
            raise InvalidState(
                f"No available key material pending rotation for the key: {key.arn}. Import the same new key "
                f"material into each replica key first ({replica.arn} has none)."
            )
    return replicas


def key_disable_rotation(*, caller: Caller, key: Key) -> None:
    """DisableKeyRotation."""
    with audited(caller, "DisableKeyRotation", request_parameters={"KeyId": str(key.id)}) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:DisableKeyRotation", key=key)
        require_customer_managed(key, "DisableKeyRotation")
        require_symmetric_for_rotation(key, "DisableKeyRotation")
        require_generated_material(key, "DisableKeyRotation")
        require_not_replica(key, "DisableKeyRotation")
        key = key_lock(key)
        require_usable_for_crypto(key)
        Key.objects.filter(pk=key.pk).update(rotation_enabled=False, next_rotation_at=None)
        key.rotation_enabled, key.next_rotation_at = False, None
        _share_rotation_settings(key)
        compliance_evaluation_request()


def key_rotation_status(*, caller: Caller, key: Key) -> dict[str, Any]:
    """GetKeyRotationStatus."""
    with audited(caller, "GetKeyRotationStatus", request_parameters={"KeyId": str(key.id)}) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:GetKeyRotationStatus", key=key)
        result: dict[str, Any] = {"KeyRotationEnabled": key.rotation_enabled, "KeyId": key.arn}
        if key.rotation_enabled:
            result["RotationPeriodInDays"] = key.rotation_period_days
            result["NextRotationDate"] = key.next_rotation_at
        return result


def key_rotate(
    *, caller: Caller, key: Key, rotation_type: str, now: datetime | None = None, locked: bool = False
) -> KeyMaterial:
    """Add a material version and make it current (audited as RotateKey).

    Used by RotateKeyOnDemand and by the automatic-rotation job; an automatic
    rotation also moves the next rotation date one period on from ``now``.
    A multi-Region primary key's new version goes to its replicas in the
    same transaction; replicas are rotated only through their primary.
    ``locked=True`` says the caller already holds ``key``'s row lock in this
    transaction and read it with its current material (the job's claim), so
    it is not read again.
    """
    event = "RotateKeyOnDemand" if rotation_type == RotationType.ON_DEMAND else "RotateKey"
    with audited(caller, event, request_parameters={"KeyId": str(key.id)}) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:RotateKeyOnDemand", key=key)
        if rotation_type == RotationType.ON_DEMAND:
            require_customer_managed(key, event)
        require_symmetric_for_rotation(key, event)
        if rotation_type != RotationType.ON_DEMAND or key.origin != KeyOrigin.EXTERNAL:
            require_generated_material(key, event)
        require_not_replica(key, event)
        if locked:
            key_forget(key)
        else:
            key = key_lock(key)
        require_usable_for_crypto(key)
        if rotation_type == RotationType.ON_DEMAND:
            done = KeyMaterial.objects.filter(key=key, rotation_type=RotationType.ON_DEMAND).count()
            if done >= MAX_ON_DEMAND_ROTATIONS:
                raise LimitExceeded(
                    f"{key.arn} has reached the limit of {MAX_ON_DEMAND_ROTATIONS} on-demand rotations."
                )
        now = now or timezone.now()
        updates: dict[str, Any] = {}
        if key.origin == KeyOrigin.EXTERNAL:
            replicas = _replicas_pending_rotation(key)
            material = _promote_pending(key, now)
            for replica in replicas:
                _promote_pending(replica, now)
            updates.update(expiration_model=material.expiration_model, valid_to=material.valid_to)
        else:
            current = key.current_material.version if key.current_material else 0
            material = material_create(key=key, version=current + 1, now=now, rotation_type=rotation_type)
        updates["current_material"] = material
        if rotation_type == RotationType.AUTOMATIC:
            updates["last_rotated_at"] = now
            if key.rotation_period_days:
                updates["next_rotation_at"] = now + timedelta(days=key.rotation_period_days)
        Key.objects.filter(pk=key.pk).update(**updates)
        _rotate_replicas(key, material, updates)
        op.additional_event_data["keyMaterialId"] = material.material_id
        op.response_elements = {"KeyId": key.arn}
        return material


def _promote_pending(key: Key, now: datetime) -> KeyMaterial:
    """The imported material pending rotation, made an on-demand rotation (the caller makes it current)."""
    pending = next(
        (m for m in KeyMaterial.objects.filter(key=key, version__gt=1, rotation_type="") if m.pending_rotation), None
    )
    if pending is None or pending.destroyed_at is not None:
        raise InvalidState(f"No available key material pending rotation for the key: {key.arn}.")
    pending.rotation_type = RotationType.ON_DEMAND
    pending.rotated_at = now
    pending.save(update_fields=["rotation_type", "rotated_at"])
    return pending


def key_list_rotations(
    *,
    caller: Caller,
    key: Key,
    include_initial: bool = False,
    limit: int | None = None,
    marker: str | None = None,
) -> dict[str, Any]:
    """ListKeyRotations: completed rotations, oldest first, paged.

    ``include_initial`` (IncludeKeyMaterial ALL_KEY_MATERIAL) adds the first
    material and imported material pending rotation.
    """
    limit = limit or 100
    params: dict[str, Any] = {"KeyId": str(key.id), "Limit": limit}
    if include_initial:
        params["IncludeKeyMaterial"] = "ALL_KEY_MATERIAL"
    with audited(caller, "ListKeyRotations", request_parameters=params) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:ListKeyRotations", key=key)
        qs = KeyMaterial.objects.filter(key=key).order_by("version")
        if not include_initial:
            qs = qs.filter(version__gt=1).exclude(rotation_type="")
        if marker:
            (last,) = decode_marker(marker, 1)
            if not isinstance(last, int) or not 0 <= last < 2**31:
                raise InvalidMarker("The marker is not valid.")
            qs = qs.filter(version__gt=last)
        page = list(qs[: limit + 1])
        truncated = len(page) > limit
        page = page[:limit]
        rotations = [rotation_entry(key, m) for m in page]
        result: dict[str, Any] = {"Rotations": rotations, "Truncated": truncated}
        if truncated:
            result["NextMarker"] = encode_marker([page[-1].version])
        return result
