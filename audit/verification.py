"""Checking the sealed trail in the database: ``manage.py verify_audit``.

Every digest's signature and its link to the previous digest are checked,
then the events of each digest's id range are re-serialized and compared
with what was sealed. Problems are reported in chain order, so the first
one is the earliest change: a digest that was edited or removed, or an
event that was changed, deleted, inserted or moved.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from audit import canonical
from audit.models import AuditArchive, AuditDigest, AuditEvent, SigningKey
from audit.rows import event_rows
from audit.services.sealing import CHUNK, SEAL_EVENT
from keys.crypto import signatures


@dataclass(frozen=True)
class Problem:
    """One finding: what kind, and a sentence naming the event or digest."""

    kind: str  # digest-changed | digest-missing | digest-chain | event-changed | event-deleted | ...
    message: str


@dataclass
class Report:
    """The outcome of a verification run."""

    digests: int = 0
    archived_digests: int = 0
    events: int = 0
    unsealed: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


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


def audit_verify(*, stop_at_first: bool = True) -> Report:
    """Verify the whole chain; see the module docstring."""
    report = Report()
    keys = dict(SigningKey.objects.values_list("fingerprint", "public_pem"))
    archive = AuditArchive.objects.order_by("-last_sequence").first()
    archived_through = archive.last_sequence if archive else 0

    def problem(kind: str, message: str) -> bool:
        report.problems.append(Problem(kind, message))
        return stop_at_first

    previous: AuditDigest | None = None
    chain: dict[int, str] = {}
    expected_sequence = 1
    for digest in AuditDigest.objects.order_by("sequence").iterator(chunk_size=100):
        name = f"digest {digest.sequence}"
        if digest.sequence != expected_sequence:
            missing = (
                str(expected_sequence)
                if digest.sequence == expected_sequence + 1
                else f"{expected_sequence}-{digest.sequence - 1}"
            )
            if problem("digest-missing", f"digest {missing} was deleted (the chain jumps to {name})"):
                return report
        body = canonical.canonical_json(canonical.digest_document_of(digest))
        public = keys.get(digest.key_fingerprint)
        try:
            if public is None:
                raise signatures.SignatureError("unknown key")
            signatures.verify(public, base64.b64decode(digest.signature), body)
            valid = hashlib.sha256(body).hexdigest() == digest.digest_sha256
        except (signatures.SignatureError, ValueError):
            valid = False
        if not valid:
            if problem("digest-changed", f"{name} was changed: its signature does not verify"):
                return report
        if previous is not None and (
            digest.previous_digest_sha256 != previous.digest_sha256
            or digest.previous_digest_signature != previous.signature
            or digest.first_event_id <= previous.last_event_id
        ):
            if problem("digest-chain", f"{name} does not chain to digest {previous.sequence}"):
                return report
        if previous is None and digest.sequence == 1 and digest.previous_digest_sha256:
            if problem("digest-chain", f"{name} claims a predecessor but is the first digest"):
                return report
        after_id = previous.last_event_id if previous is not None else 0
        if digest.sequence <= archived_through:
            report.archived_digests += 1
        else:
            count, found = _check_events(digest, after_id)
            report.events += count
            for p in found:
                if problem(p.kind, p.message):
                    return report
        report.digests += 1
        chain[digest.sequence] = digest.digest_sha256
        previous = digest
        expected_sequence = digest.sequence + 1

    if archive is not None:
        stray = AuditEvent.objects.filter(id__lte=archive.last_event_id).order_by("id").first()
        if stray is not None and problem(
            "event-inserted", f"event {stray.event_id} (id {stray.id}) was inserted into an archived range"
        ):
            return report
    last_id = previous.last_event_id if previous is not None else 0
    report.unsealed = AuditEvent.objects.filter(id__gt=last_id).count()
    # Every seal is also an event naming its digest: a digest that was
    # deleted, or deleted and sealed again, leaves a seal event that no
    # digest in the chain answers to.
    seals = (
        AuditEvent.objects.filter(event_name=SEAL_EVENT, error_code="")
        .order_by("id")
        .values_list("event_id", "response_elements")
        .iterator(chunk_size=CHUNK)
    )
    for event_id, seal in seals:
        sequence, sha = (seal or {}).get("sequence"), (seal or {}).get("digestSha256")
        if chain.get(sequence) != sha:
            gone = "deleted" if sequence not in chain else "replaced"
            problem("digest-missing", f"digest {sequence} was {gone} (seal event {event_id} records it)")
            break
    return report
