"""Checking the sealed trail in the database: ``manage.py verify_audit``.

Every digest's signature and its link to the previous digest are checked,
then the events of each digest's id range are re-serialized and compared
with what was sealed. Problems are reported in chain order, so the first
one is the earliest change: a digest that was edited or removed, or an
event that was changed, deleted, inserted or moved.

Then what the chain alone cannot show:

* the anchor (``audit.anchor``): every anchored digest must be in the
  database with the same hash and running event count, so deleting the
  newest digests (their events with them), replacing them, or emptying
  both tables fails; an anchor missing while digests exist fails too;
* ids: kmsweb gives events ids from 1, so an event with id 0 or below was
  inserted by hand (no digest range reaches it); on PostgreSQL an id above
  the id sequence was never handed out by the database either;
* seal events: every seal is also an event naming its digest. One that no
  digest answers to means a deleted or replaced digest; a digest whose
  seal event is gone means the events after it (the unsealed tail, where
  the newest seal event lives) were deleted;
* the unsealed tail: its size, id range and the age of its oldest event
  (a warning past ``KMSWEB_SEALING_BEHIND_SECONDS``: is sealing running?).

``audit_integrity`` runs the cheap part of this (the newest digest, the
anchor's newest line, ids, the tail) for the dashboard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min
from django.utils import timezone

from audit import anchor, canonical
from audit.models import AuditArchive, AuditDigest, AuditEvent, SigningKey
from audit.rows import event_rows
from audit.services.anchor_sink import cursor_read
from audit.services.anchoring import anchor_path, digest_valid, line_valid
from audit.services.sealing import CHUNK, SEAL_EVENT


@dataclass(frozen=True)
class Problem:
    """One finding: what kind, and a sentence naming the event or digest."""

    # digest-changed | digest-missing | digest-chain | event-changed | event-deleted | event-inserted |
    # event-reordered | anchor-missing | anchor-mismatch | anchor-corrupt; warnings: anchor-lag |
    # anchor-sink-lag | tail-stale
    kind: str
    message: str


@dataclass
class Report:
    """The outcome of a verification run: problems fail it, warnings do not."""

    digests: int = 0
    archived_digests: int = 0
    events: int = 0
    unsealed: int = 0
    anchored: int = 0
    tail_first_id: int | None = None
    tail_last_id: int | None = None
    tail_oldest: datetime | None = None
    tail_age_seconds: float | None = None
    # PostgreSQL: ids the sequence handed out after the newest event that no row holds
    # (rolled-back writes, or deleted events: the two cannot be told apart).
    ids_absent_after_newest: int | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def tail_stale(self) -> bool:
        return any(w.kind == "tail-stale" for w in self.warnings)


class _Stop(Exception):
    """The first problem was found and only the first was asked for."""


class _Run:
    def __init__(self, report: Report, stop_at_first: bool) -> None:
        self.report = report
        self.stop_at_first = stop_at_first

    def problem(self, kind: str, message: str) -> None:
        self.report.problems.append(Problem(kind, message))
        if self.stop_at_first:
            raise _Stop

    def warning(self, kind: str, message: str) -> None:
        self.report.warnings.append(Problem(kind, message))


def _events(after_id: int, through_id: int) -> Iterator[tuple[int, str, bytes]]:
    for row in event_rows(AuditEvent.objects.all(), after_id=after_id, through_id=through_id, chunk=CHUNK):
        yield row[0], str(row[1]), hashlib.sha256(canonical.canonical_json(canonical.record(row))).digest()


def _check_events(digest: AuditDigest, after_id: int) -> tuple[int, list[Problem]]:
    """Compare the live events of ``digest``'s range with its sealed leaves."""
    leaves = list(canonical.unpack_leaves(bytes(digest.leaves)))
    sealed = {event_id: h for event_id, h in leaves}
    at_of_hash = {h: event_id for event_id, h in leaves}
    seen: set[int] = set()
    found: list[tuple[int, Problem]] = []
    hashes: list[bytes] = []
    where = f"digest {digest.sequence}"
    for event_id, uuid, h in _events(after_id, digest.last_event_id):
        seen.add(event_id)
        hashes.append(h)
        expected = sealed.get(event_id)
        if expected == h:
            continue
        moved_from = at_of_hash.get(h)
        if moved_from is not None:
            found.append(
                (
                    event_id,
                    Problem(
                        "event-reordered",
                        f"event {uuid} (id {event_id}) was sealed in {where} at id {moved_from}: events were reordered",
                    ),
                )
            )
        elif expected is None:
            found.append(
                (event_id, Problem("event-inserted", f"event {uuid} (id {event_id}) was inserted into {where}"))
            )
        else:
            found.append((event_id, Problem("event-changed", f"event {uuid} (id {event_id}) was changed ({where})")))
    moved = {at_of_hash[h] for h in hashes if h in at_of_hash}
    for event_id, _ in leaves:
        if event_id not in seen and event_id not in moved:
            found.append((event_id, Problem("event-deleted", f"event id {event_id} sealed in {where} was deleted")))
    if not found and canonical.events_root(hashes) != digest.events_sha256:
        # The leaves themselves were altered to match altered events.
        found.append((after_id, Problem("event-changed", f"the events of {where} do not match its signed hash")))
    found.sort(key=lambda item: item[0])
    return len(hashes), [p for _, p in found]


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _deleted(first: int, last: int) -> str:
    return f"digest {first} was deleted" if first == last else f"digests {first}-{last} were deleted"


@dataclass
class _Chain:
    """What the walk learnt: each digest's hash and the running event count through it."""

    sha: dict[int, str] = field(default_factory=dict)
    total: dict[int, int] = field(default_factory=dict)
    newest: AuditDigest | None = None


def _walk_chain(
    run: _Run, keys: dict[str, str], archived_through: int, events_between: tuple[int, int] | None
) -> _Chain:
    report = run.report
    chain = _Chain()
    previous: AuditDigest | None = None
    total = 0
    expected_sequence = 1
    digests = AuditDigest.objects.order_by("sequence")
    if events_between is not None:
        # Most digests are outside the range: their leaves are read only if needed.
        digests = digests.defer("leaves")
    for digest in digests.iterator(chunk_size=100):
        name = f"digest {digest.sequence}"
        if digest.sequence != expected_sequence:
            run.problem(
                "digest-missing",
                f"digest {_span(expected_sequence, digest.sequence - 1)} was deleted (the chain jumps to {name})",
            )
        if not digest_valid(digest, keys.get(digest.key_fingerprint)):
            run.problem("digest-changed", f"{name} was changed: its signature does not verify")
        if previous is not None and (
            digest.previous_digest_sha256 != previous.digest_sha256
            or digest.previous_digest_signature != previous.signature
            or digest.first_event_id <= previous.last_event_id
        ):
            run.problem("digest-chain", f"{name} does not chain to digest {previous.sequence}")
        if previous is None and digest.sequence == 1 and digest.previous_digest_sha256:
            run.problem("digest-chain", f"{name} claims a predecessor but is the first digest")
        after_id = previous.last_event_id if previous is not None else 0
        if digest.sequence <= archived_through:
            report.archived_digests += 1
        elif events_between is None or (digest.last_event_id >= events_between[0] and after_id < events_between[1]):
            count, found = _check_events(digest, after_id)
            report.events += count
            for p in found:
                run.problem(p.kind, p.message)
        report.digests += 1
        total += digest.event_count
        chain.sha[digest.sequence] = digest.digest_sha256
        chain.total[digest.sequence] = total
        previous = digest
        expected_sequence = digest.sequence + 1
    chain.newest = previous
    return chain


def _check_anchor(run: _Run, chain: _Chain, keys: dict[str, str]) -> None:
    """Every anchored digest is in the database, the same, with the same running count."""
    path = anchor_path()
    newest = chain.newest.sequence if chain.newest else 0
    expected = 1
    try:
        for line in anchor.iter_lines(path):
            if line.sequence != expected:
                run.problem(
                    "anchor-corrupt", f"the audit anchor {path} skips from digest {expected - 1} to {line.sequence}"
                )
                return
            expected += 1
            held = chain.sha.get(line.sequence)
            if held is None:
                if not line_valid(line, keys.get(line.key_fingerprint)):
                    run.problem(
                        "anchor-corrupt",
                        f"the audit anchor {path} records digest {line.sequence} with a signature that does not "
                        "verify: the anchor was edited",
                    )
                    return
                if line.sequence < newest:
                    run.problem("digest-missing", f"digest {line.sequence} was deleted (the audit anchor records it)")
                    return
                try:
                    last = anchor.read_last(path) or line
                except anchor.AnchorError:
                    last = line
                gone = (
                    "the database holds no digest at all: the audit tables were emptied"
                    if not newest
                    else f"the database's newest is digest {newest}: {_deleted(newest + 1, last.sequence)}"
                )
                run.problem(
                    "digest-missing",
                    f"the audit anchor records digest {last.sequence} (events through id {last.last_event_id}, "
                    f"{last.total_events} events in all) but {gone}",
                )
                return
            if held != line.digest_sha256 or chain.total[line.sequence] != line.total_events:
                run.problem(
                    "anchor-mismatch",
                    f"digest {line.sequence} in the database is not the one the audit anchor records "
                    f"(anchored hash {line.digest_sha256[:16]}…): the chain was rewritten",
                )
                return
            run.report.anchored = line.sequence
    except anchor.AnchorError as exc:
        run.problem("anchor-corrupt", f"the audit anchor cannot be used: {exc}")
        return
    if run.report.anchored == 0 and newest:
        run.problem(
            "anchor-missing",
            f"the audit anchor {path} is missing or empty but the database holds {newest} digests "
            "(run `manage.py anchor_audit` once if this deployment never had an anchor)",
        )
    elif run.report.anchored < newest:
        run.warning(
            "anchor-lag",
            f"digests {_span(run.report.anchored + 1, newest)} are not in the audit anchor yet "
            "(the next seal appends them)",
        )


def _check_anchor_head(run: _Run, newest: AuditDigest | None) -> None:
    """The dashboard's check: the anchor's newest line against the database."""
    path = anchor_path()
    try:
        head = anchor.read_last(path)
    except anchor.AnchorError as exc:
        run.problem("anchor-corrupt", f"the audit anchor cannot be used: {exc}")
        return
    if head is None:
        if newest is not None:
            run.problem(
                "anchor-missing",
                f"the audit anchor {path} is missing or empty but the database holds {newest.sequence} digests",
            )
        return
    run.report.anchored = head.sequence
    if newest is None or newest.sequence < head.sequence:
        gone = (
            "the database holds no digest at all: the audit tables were emptied"
            if newest is None
            else f"the database's newest is digest {newest.sequence}: {_deleted(newest.sequence + 1, head.sequence)}"
        )
        run.problem(
            "digest-missing",
            f"the audit anchor records digest {head.sequence} (events through id {head.last_event_id}, "
            f"{head.total_events} events in all) but {gone}",
        )
        return
    held = (
        newest.digest_sha256
        if newest.sequence == head.sequence
        else AuditDigest.objects.filter(sequence=head.sequence).values_list("digest_sha256", flat=True).first()
    )
    if held != head.digest_sha256:
        run.problem(
            "anchor-mismatch",
            f"digest {head.sequence} in the database is not the one the audit anchor records: the chain was rewritten",
        )
    elif newest.sequence > head.sequence:
        run.warning(
            "anchor-lag",
            f"digests {_span(head.sequence + 1, newest.sequence)} are not in the audit anchor yet "
            "(the next seal appends them)",
        )


def _check_sink(run: _Run) -> None:
    """A warning while the operator's sink has not acknowledged the anchor's newest lines."""
    if not settings.KMSWEB_AUDIT_ANCHOR_URL:
        return
    sent = cursor_read().sequence
    if sent < run.report.anchored:
        run.warning(
            "anchor-sink-lag",
            f"the anchor sink (KMSWEB_AUDIT_ANCHOR_URL) has not acknowledged digests "
            f"{_span(sent + 1, run.report.anchored)} yet (each sealing round retries)",
        )


def _check_ids(run: _Run, archive: AuditArchive | None) -> None:
    """Ids no digest range can reach: 0 and below, inside archived ranges, and (PostgreSQL) never handed out."""
    stray = AuditEvent.objects.filter(id__lte=0).order_by("id").first()
    if stray is not None:
        run.problem(
            "event-inserted",
            f"event {stray.event_id} (id {stray.id}) was inserted: kmsweb gives events ids from 1",
        )
    if archive is not None:
        stray = AuditEvent.objects.filter(id__gt=0, id__lte=archive.last_event_id).order_by("id").first()
        if stray is not None:
            run.problem("event-inserted", f"event {stray.event_id} (id {stray.id}) was inserted into an archived range")
    if connection.vendor != "postgresql":
        # SQLite moves its AUTOINCREMENT counter up to any id inserted by hand: nothing to compare.
        return
    table = AuditEvent._meta.db_table
    with connection.cursor() as cur:
        # max(id) first: every id the sequence handed out is at most its value read afterwards.
        cur.execute(f"SELECT max(id) FROM {table}")  # noqa: S608 (model's table name)
        highest = cur.fetchone()[0]
        cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
        sequence_name = cur.fetchone()[0]
        if sequence_name is None:
            return
        cur.execute(f"SELECT last_value, is_called FROM {sequence_name}")  # noqa: S608 (from the catalog)
        last_value, is_called = cur.fetchone()
    handed_out = last_value if is_called else 0
    if highest is not None and highest > handed_out:
        forged = AuditEvent.objects.filter(id__gt=handed_out).order_by("id").first()
        if forged is not None:
            run.problem(
                "event-inserted",
                f"event {forged.event_id} (id {forged.id}) was inserted with an id the database never handed out "
                f"(its id sequence is at {handed_out})",
            )
        return
    run.report.ids_absent_after_newest = handed_out - (highest or 0)


def _check_seal_events(run: _Run, chain: _Chain, archived_through: int) -> None:
    """Every seal event names a digest of the chain; every live digest has its seal event."""
    seals = (
        AuditEvent.objects.filter(event_name=SEAL_EVENT, error_code="")
        .order_by("id")
        .values_list("event_id", "response_elements")
        .iterator(chunk_size=CHUNK)
    )
    announced: set[int] = set()
    for event_id, seal in seals:
        sequence: Any = (seal or {}).get("sequence")
        sha = (seal or {}).get("digestSha256")
        if chain.sha.get(sequence) != sha:
            gone = "deleted" if sequence not in chain.sha else "replaced"
            run.problem("digest-missing", f"digest {sequence} was {gone} (seal event {event_id} records it)")
            return
        announced.add(sequence)
    # A digest's seal event has a larger id than the digest's events, so it
    # is sealed by a later digest or waits in the tail; only archiving removes it.
    for sequence in sorted(chain.sha):
        if sequence > archived_through and sequence not in announced:
            run.problem(
                "event-deleted",
                f"the seal event of digest {sequence} was deleted: events recorded after digest {sequence} "
                "were removed",
            )
            return


def _tail(run: _Run, sealed_through: int, now: datetime) -> None:
    report = run.report
    tail = AuditEvent.objects.filter(id__gt=sealed_through)
    agg = tail.aggregate(n=Count("id"), first=Min("id"), last=Max("id"))
    report.unsealed, report.tail_first_id, report.tail_last_id = agg["n"], agg["first"], agg["last"]
    # A seal's own event waits for the next real event (an idle trail stays
    # quiet): it says nothing about whether sealing keeps up. The first event
    # by id stands for the oldest: found through the primary key, it costs
    # the same on a trail of any size (ids follow time to within a transaction).
    oldest = tail.exclude(event_name=SEAL_EVENT).order_by("id").values_list("event_time", "id").first()
    if oldest is None:
        return
    report.tail_oldest = oldest[0]
    report.tail_age_seconds = max(0.0, (now - oldest[0]).total_seconds())
    limit = settings.KMSWEB_SEALING_BEHIND_SECONDS
    if report.tail_age_seconds > limit:
        run.warning(
            "tail-stale",
            f"{report.unsealed} events are not sealed yet; the oldest (id {oldest[1]}, {canonical.iso(oldest[0])}) "
            f"waits for {int(report.tail_age_seconds)} s, more than {limit} s: is the seal_audit job running?",
        )


def audit_verify(
    *,
    stop_at_first: bool = True,
    events_between: tuple[int, int] | None = None,
    check_anchor: bool = True,
    now: datetime | None = None,
) -> Report:
    """Verify the whole chain; see the module docstring.

    ``events_between=(first_id, last_id)`` re-hashes only the events of the
    digests covering that id range (an export's); every other check still
    covers the whole trail. ``check_anchor=False`` is for ``anchor_audit``,
    which verifies a trail before it writes its first anchor.
    """
    report = Report()
    run = _Run(report, stop_at_first)
    keys = dict(SigningKey.objects.values_list("fingerprint", "public_pem"))
    archive = AuditArchive.objects.order_by("-last_sequence").first()
    archived_through = archive.last_sequence if archive else 0
    chain = _Chain()
    try:
        chain = _walk_chain(run, keys, archived_through, events_between)
        if check_anchor:
            _check_anchor(run, chain, keys)
            _check_sink(run)
        _check_ids(run, archive)
        _check_seal_events(run, chain, archived_through)
    except _Stop:
        pass
    sealed_through = chain.newest.last_event_id if chain.newest else 0
    _tail(run, sealed_through, now or timezone.now())
    return report


def audit_integrity(*, now: datetime | None = None) -> Report:
    """The quick check the Audit page shows: the newest digest, the anchor's head, ids, the tail.

    It does not re-hash events or walk the chain (``verify_audit`` does);
    it reads a few rows and the anchor's last line, so it runs per page view.
    """
    report = Report()
    run = _Run(report, stop_at_first=False)
    newest = AuditDigest.objects.order_by("-sequence").defer("leaves").first()
    archive = AuditArchive.objects.order_by("-last_sequence").first()
    archived_through = archive.last_sequence if archive else 0
    if newest is not None:
        report.digests = newest.sequence
        public = SigningKey.objects.filter(fingerprint=newest.key_fingerprint).values_list("public_pem", flat=True)
        if not digest_valid(newest, public.first()):
            run.problem("digest-changed", f"digest {newest.sequence} was changed: its signature does not verify")
    _check_anchor_head(run, newest)
    _check_sink(run)
    _check_ids(run, archive)
    if newest is not None and newest.sequence > archived_through:
        announced = AuditEvent.objects.filter(
            event_name=SEAL_EVENT,
            error_code="",
            id__gt=newest.last_event_id,
            response_elements__sequence=newest.sequence,
        ).exists()
        if not announced:
            run.problem(
                "event-deleted",
                f"the seal event of digest {newest.sequence} was deleted: events recorded after digest "
                f"{newest.sequence} were removed",
            )
    _tail(run, newest.last_event_id if newest else 0, now or timezone.now())
    return report
