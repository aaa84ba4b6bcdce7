"""The keys' periodic jobs: automatic rotation and scheduled deletion.

Both are safe to run twice and on several workers at once: keys are claimed
with ``SELECT ... FOR UPDATE SKIP LOCKED`` and re-checked under the lock, so
a key another worker holds is skipped and a key another worker has just
handled is no longer due. Deletion claims one key per transaction; rotation
claims a batch per transaction (one commit per batch; each key keeps its own
savepoint and audit event).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db import transaction

from audit.services import audited
from keys.models import (
    Alias,
    ImportParameters,
    Key,
    KeyMaterial,
    KeyQuerySet,
    KeyState,
    MultiRegionKeyType,
    RotationType,
)
from keys.services.rotation import key_rotate
from kmsweb.generations import GRANTS, KEYS, generation_bump
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.models import Grant

BATCH = 500
# Keys claimed and rotated per transaction: one commit per CLAIM keys instead of
# one per key (each key still has its own savepoint and RotateKey event). A
# claim holds its rows for the batch's duration, a fraction of a second.
CLAIM = 100


def _ids(due: KeyQuerySet) -> Iterator[uuid.UUID]:
    """The primary keys of ``due``, in batches ordered by pk (keyset paging,
    so keys skipped in one batch are not read again)."""
    last: uuid.UUID | None = None
    while True:
        qs = due.order_by("pk")
        if last is not None:
            qs = qs.filter(pk__gt=last)
        batch = list(qs.values_list("pk", flat=True)[:BATCH])
        yield from batch
        if len(batch) < BATCH:
            return
        last = batch[-1]


def _chunks(pks: Iterator[uuid.UUID], size: int) -> Iterator[list[uuid.UUID]]:
    chunk: list[uuid.UUID] = []
    for pk in pks:
        chunk.append(pk)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _claim(due: KeyQuerySet, pks: list[uuid.UUID]) -> list[Key]:
    """Lock those of ``pks`` still due that no other worker holds; call in a transaction.

    The keys come with their current material (the rotation reads it), locked
    in one statement; keys another worker holds are left out, not waited for.
    """
    locked = due.select_for_update(skip_locked=True, of=("self",)).select_related("current_material")
    return list(locked.filter(pk__in=pks).order_by("pk"))


def keys_rotate_due(*, caller: Caller, now: datetime) -> dict[str, int]:
    """Rotate every enabled key whose automatic rotation date is ``now`` or past.

    Each rotation is ``key_rotate(..., rotation_type=AUTOMATIC, now=now)``
    (its own RotateKey event), which moves the next date one period on from
    ``now``: a key overdue by months rotates once. Disabled keys and keys
    pending deletion are left alone and stay due, so they rotate on the first
    run after they are enabled again. Keys are claimed ``CLAIM`` at a time
    with SKIP LOCKED and re-checked by the claim's query, so a key another
    worker holds or has just rotated is skipped. Returns counts: rotated,
    skipped (held by another worker or no longer due), failed.
    """
    counts = {"rotated": 0, "skipped": 0, "failed": 0}
    due = Key.objects.enabled().due_for_rotation(now)
    for pks in _chunks(_ids(due), CLAIM):
        with transaction.atomic():
            keys = _claim(due, pks)
            counts["skipped"] += len(pks) - len(keys)
            for key in keys:
                try:
                    # key_rotate's own savepoint: a failure undoes this key only.
                    key_rotate(caller=caller, key=key, rotation_type=RotationType.AUTOMATIC, now=now, locked=True)
                except KmsError:
                    counts["failed"] += 1  # recorded by key_rotate's audit event; retried next run
                    continue
                counts["rotated"] += 1
    return counts


def keys_delete_expired(*, caller: Caller, now: datetime) -> dict[str, int]:
    """Delete the keys whose deletion waiting period ended at or before ``now``.

    Per key, in one transaction with its DeleteKey audit event: the material
    versions are destroyed, ``deleted_at`` is set (the row stays as a
    tombstone, hidden by ``Key.objects.visible()``, state PendingDeletion),
    its aliases are deleted and its live grants retired (``key-deleted``).
    A cancelled deletion is no longer PendingDeletion and is not touched.
    Deleting the last replica of a multi-Region key starts the waiting
    period of a primary key that waits in PendingReplicaDeletion.
    Returns counts: deleted, skipped (held by another worker or no longer due).
    """
    counts = {"deleted": 0, "skipped": 0}
    for pk in _ids(Key.objects.due_for_deletion(now)):
        with transaction.atomic():
            key = _claim_one(Key.objects.due_for_deletion(now), pk)
            if key is None:
                counts["skipped"] += 1
                continue
            _delete(caller, key, now)
            counts["deleted"] += 1
    return counts


def _claim_one(due: KeyQuerySet, pk: uuid.UUID) -> Key | None:
    """Lock the key if it is still due and no other worker holds it; call in a transaction."""
    return due.select_for_update(skip_locked=True, of=("self",)).filter(pk=pk).first()


def _delete(caller: Caller, key: Key, now: datetime) -> None:
    with audited(caller, "DeleteKey", request_parameters={"KeyId": str(key.id)}) as op:
        op.keys.append(key)
        aliases = sorted(Alias.objects.filter(key=key).values_list("name", flat=True))
        Key.objects.filter(pk=key.pk).update(current_material=None, deleted_at=now)
        materials = KeyMaterial.objects.filter(key=key).delete()[0]
        ImportParameters.objects.filter(key=key).delete()
        Alias.objects.filter(key=key).delete()
        grants = Grant.objects.filter(key=key, retired_at__isnull=True).update(
            retired_at=now, retired_how="key-deleted"
        )
        generation_bump(KEYS, GRANTS)
        op.additional_event_data.update(
            {"deletedAliases": aliases, "retiredGrants": grants, "destroyedMaterialVersions": materials}
        )
        if key.multi_region_type == MultiRegionKeyType.REPLICA:
            primary = _start_primary_window(key, now)
            if primary is not None:
                op.additional_event_data["primaryKeyDeletionDate"] = primary.isoformat()


def _start_primary_window(replica: Key, now: datetime) -> datetime | None:
    """Once the last replica of a multi-Region key is deleted, a primary waiting in
    PendingReplicaDeletion becomes PendingDeletion: its waiting period begins now.
    Returns its deletion date, or None when it is not waiting or replicas remain."""
    related = Key.objects.filter(multi_region_id=replica.multi_region_id, deleted_at__isnull=True)
    if related.filter(multi_region_type=MultiRegionKeyType.REPLICA).exists():
        return None
    primary = (
        related.select_for_update(of=("self",))
        .filter(multi_region_type=MultiRegionKeyType.PRIMARY, state=KeyState.PENDING_REPLICA_DELETION)
        .first()
    )
    if primary is None:
        return None
    deletion_date = now + timedelta(days=primary.pending_window_days or 30)
    Key.objects.filter(pk=primary.pk).update(state=KeyState.PENDING_DELETION, deletion_date=deletion_date)
    return deletion_date
