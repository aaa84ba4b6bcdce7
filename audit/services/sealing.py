"""Sealing: the periodic job that signs new events into a chained digest.

Recording stays one INSERT with no lock; sealing runs once a minute and
claims the events committed since the last digest. On PostgreSQL, ids are
drawn before their transaction commits, so an event with a smaller id can
still appear after a larger one is visible: the sealer takes the largest
visible id, then waits for every transaction that was writing audit rows at
that moment to end, so no id at or below the cutoff can appear later.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from audit import canonical
from audit.models import AuditDigest, AuditEvent
from audit.rows import event_rows
from audit.services.anchor_sink import anchor_publish
from audit.services.anchoring import anchor_sync
from audit.services.partitions import audit_partitions_ensure
from audit.services.recording import audit_record
from audit.services.signing import EVENT_SOURCE, signing_key_current, signing_key_sign
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InternalError, KmsError

logger = logging.getLogger(__name__)

SEAL_EVENT = "SealAuditTrail"
CHUNK = 5000
# A digest holds at most this many events; a backlog takes several digests.
MAX_DIGEST_EVENTS = 200_000
# How long to wait for in-flight writers before leaving the round to the next run.
SETTLE_SECONDS = 10.0
_LOCK_ID = 0x6B6D7377  # "kmsw": the sealer's PostgreSQL advisory lock


def _settled_cutoff(timeout: float = SETTLE_SECONDS) -> int | None:
    """The largest event id such that no smaller id can still be committed, or None if writers stay busy."""
    table = AuditEvent._meta.db_table
    if connection.vendor != "postgresql":
        # SQLite has one writer at a time and never reuses AUTOINCREMENT ids.
        return AuditEvent.objects.aggregate(m=Max("id"))["m"] or 0
    with connection.cursor() as cur:
        # Read the cutoff first: a writer holding an id at or below it took
        # its table lock before drawing the id, so it is among these holders.
        cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")  # noqa: S608 (model's table name)
        cutoff = cur.fetchone()[0]
        cur.execute(
            "SELECT coalesce(array_agg(DISTINCT virtualtransaction), '{}') FROM pg_locks "
            "WHERE locktype = 'relation' AND relation = %s::regclass AND mode = 'RowExclusiveLock' "
            # pg_locks shows the whole cluster, and a database made from another as
            # its template has the same relation oids: only this database's writers.
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND pid <> pg_backend_pid()",
            [table],
        )
        writers = list(cur.fetchone()[0])
        deadline = time.monotonic() + timeout
        while writers:
            cur.execute(
                "SELECT coalesce(array_agg(virtualxid), '{}') FROM pg_locks "
                "WHERE locktype = 'virtualxid' AND virtualxid = ANY(%s)",
                [writers],
            )
            writers = list(cur.fetchone()[0])
            if not writers:
                break
            if time.monotonic() > deadline:
                logger.warning("audit sealing skipped: %d transactions kept writing audit events", len(writers))
                return None
            time.sleep(0.01)
    return cutoff


def _claim() -> bool:
    """Take the sealer's lock for this transaction (PostgreSQL); False if another worker holds it."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cur:
        # Advisory locks are scoped to the current database: kmsweb databases
        # sharing a cluster (or pytest-xdist's test databases) never contend.
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [_LOCK_ID])
        return bool(cur.fetchone()[0])


@dataclass
class _Range:
    """What one digest will hold, built while streaming its events."""

    leaves: bytearray = field(default_factory=bytearray)
    root: Any = field(default_factory=hashlib.sha256)
    count: int = 0
    first_id: int = 0
    last_id: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    only_seals: bool = True


def _read_range(after_id: int, cutoff: int, limit: int) -> _Range:
    rng = _Range()
    rows = event_rows(AuditEvent.objects.all(), after_id=after_id, through_id=cutoff, chunk=CHUNK, limit=limit)
    dumps, record, sha256, pack = canonical.canonical_json, canonical.record, hashlib.sha256, canonical.LEAF.pack
    for row in rows:
        leaf = sha256(dumps(record(row))).digest()
        rng.leaves += pack(row[0], leaf)
        rng.root.update(leaf)
        if not rng.count:
            rng.first_id = row[0]
        rng.last_id = row[0]
        rng.count += 1
        moment = row[2]
        if rng.oldest is None or moment < rng.oldest:
            rng.oldest = moment
        if rng.newest is None or moment > rng.newest:
            rng.newest = moment
        if row[5] != SEAL_EVENT:
            rng.only_seals = False
    return rng


def audit_seal(*, caller: Caller, now: datetime | None = None) -> AuditDigest | None:
    """Seal the events committed since the last digest (up to ``MAX_DIGEST_EVENTS``) into a new signed digest.

    Idempotent and safe on several workers: one claims the round (advisory
    lock on PostgreSQL, the unique ``sequence`` everywhere); the others
    return None. Nothing is sealed, and nothing recorded, when the only new
    events are earlier seals' own events (an idle trail stays quiet). A seal
    is recorded as a ``SealAuditTrail`` system event in the same
    transaction, and sealed in turn by the next digest; a failed seal is
    recorded with its error. Each committed digest is appended to the audit
    anchor (``anchor_sync``); a round whose anchor does not match the
    database fails with ``InvalidState``. Runs in its own transactions:
    never call it inside a caller's ``atomic`` block that may roll back.
    """
    now = now or timezone.now()
    try:
        return _seal(caller, now)
    except Exception as exc:
        error = exc if isinstance(exc, KmsError) else InternalError("Sealing the audit trail failed.")
        if not error.audited:
            logger.exception("audit sealing failed")
            with transaction.atomic():
                audit_record(caller=caller, event_name=SEAL_EVENT, event_source=EVENT_SOURCE, error=error)
            error.audited = True
        if error is exc:
            raise
        raise error from exc


def _seal(caller: Caller, now: datetime) -> AuditDigest | None:
    # Catch the anchor up (a crash may have come between a commit and its
    # line), and refuse to seal on top of a chain the anchor does not match.
    anchor_sync()
    cutoff = _settled_cutoff()
    if cutoff is None:
        return None
    digest = _seal_round(caller, now, cutoff)
    if digest is not None:
        # After the commit: an anchor line never names a digest that rolled back.
        anchor_sync(sealed=digest)
    return digest


def _seal_round(caller: Caller, now: datetime, cutoff: int) -> AuditDigest | None:
    with transaction.atomic():
        if not _claim():
            return None
        last = AuditDigest.objects.order_by("-sequence").first()
        after_id = last.last_event_id if last else 0
        if cutoff <= after_id:
            return None
        rng = _read_range(after_id, cutoff, MAX_DIGEST_EVENTS)
        if not rng.count or rng.only_seals:
            return None
        assert rng.oldest is not None and rng.newest is not None
        key = signing_key_current(now=now)
        fields = {
            "sequence": (last.sequence + 1) if last else 1,
            "first_event_id": rng.first_id,
            "last_event_id": rng.last_id,
            "oldest_event_time": rng.oldest,
            "newest_event_time": rng.newest,
            "event_count": rng.count,
            "events_sha256": rng.root.hexdigest(),
            "previous_digest_sha256": last.digest_sha256 if last else "",
            "previous_digest_signature": last.signature if last else "",
            "digest_start_time": last.digest_end_time if last else rng.oldest,
            "digest_end_time": now,
            "key_fingerprint": key.fingerprint,
        }
        body = canonical.canonical_json(canonical.digest_document(**fields))
        signature = base64.b64encode(signing_key_sign(key=key, data=body)).decode("ascii")
        try:
            with transaction.atomic():
                digest = AuditDigest.objects.create(
                    **fields,
                    leaves=bytes(rng.leaves),
                    digest_sha256=hashlib.sha256(body).hexdigest(),
                    signature=signature,
                )
        except IntegrityError:
            # Another worker sealed this sequence first (SQLite has no advisory lock).
            return None
        audit_record(
            caller=caller,
            event_name=SEAL_EVENT,
            event_source=EVENT_SOURCE,
            event_time=now,
            request_parameters={"AfterEventId": after_id, "ThroughEventId": cutoff},
            response_elements={
                "Sequence": digest.sequence,
                "FirstEventId": digest.first_event_id,
                "LastEventId": digest.last_event_id,
                "EventCount": digest.event_count,
                "DigestSha256": digest.digest_sha256,
            },
        )
    return digest


def audit_seal_all(*, caller: Caller, budget_seconds: float = 40.0) -> list[AuditDigest]:
    """Seal until caught up (or the time budget is spent): one digest per ``MAX_DIGEST_EVENTS``.

    Then, sealed or not, the anchor lines the operator's sink
    (``KMSWEB_AUDIT_ANCHOR_URL``) has not acknowledged are sent to it.
    """
    deadline = time.monotonic() + budget_seconds
    sealed: list[AuditDigest] = []
    try:
        while time.monotonic() < deadline:
            digest = audit_seal(caller=caller)
            if digest is None:
                break
            sealed.append(digest)
            if digest.event_count < MAX_DIGEST_EVENTS:
                break
    finally:
        anchor_publish()
    return sealed


def audit_seal_job(*, caller: Caller, now: datetime, budget_seconds: float = 40.0) -> dict[str, int]:
    """The sealing job's entry for ``job_run``: seal what is new, return counts.

    Digests take their own time stamps. Each run first makes sure the
    event table's partitions for this month and the next ones exist
    (PostgreSQL), so events seldom reach the DEFAULT partition; a failure
    there is logged and leaves sealing to go on (the next run tries again).
    """
    try:
        audit_partitions_ensure(now=now)
    except Exception:
        logger.exception("creating the audit event table's next partitions failed")
    digests = audit_seal_all(caller=caller, budget_seconds=budget_seconds)
    return {"digests": len(digests), "events": sum(d.event_count for d in digests)}
