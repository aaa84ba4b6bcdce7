"""Sealing and tamper detection: digests chain and verify; any change to a
sealed event or digest is found and named by ``verify_audit``."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from hypothesis import given
from hypothesis import strategies as st

from audit import canonical
from audit.models import AuditDigest, AuditEvent, SigningKey
from audit.services.sealing import SEAL_EVENT, audit_seal
from audit.services.signing import signing_key_rollover
from audit.verification import audit_verify
from keys.crypto import signatures
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidState
from tests.audit.conftest import run_command, tampering
from tests.conftest import is_postgres

pytestmark = pytest.mark.django_db

SYSTEM = Caller.system("tests-seal")


def seal():
    return audit_seal(caller=SYSTEM)


def test_it_seals_new_events_into_a_signed_digest(activity: Callable[[int], None]) -> None:
    activity(3)
    last_id = AuditEvent.objects.order_by("-id").first().id
    digest = seal()
    assert digest is not None and digest.sequence == 1
    assert digest.last_event_id == last_id
    assert digest.event_count == AuditEvent.objects.filter(id__lte=last_id).count()
    assert digest.previous_digest_sha256 == ""
    # The signature verifies with the published public key over the canonical document.
    key = SigningKey.objects.get(fingerprint=digest.key_fingerprint)
    body = canonical.canonical_json(canonical.digest_document_of(digest))
    signatures.verify(key.public_pem, base64.b64decode(digest.signature), body)
    assert hashlib.sha256(body).hexdigest() == digest.digest_sha256
    # The private key is stored encrypted, never in the clear.
    assert b"PRIVATE" not in bytes(key.private_key_ciphertext)
    # The seal is itself an event, sealed by the next digest.
    event = AuditEvent.objects.get(event_name=SEAL_EVENT)
    assert event.origin == "system" and event.error_code == ""
    assert event.response_elements["sequence"] == 1
    assert event.response_elements["digestSha256"] == digest.digest_sha256


def test_it_chains_digests_and_stays_quiet_when_idle(activity: Callable[[int], None]) -> None:
    activity(2)
    assert seal().sequence == 1
    # The first seal made the signing key (audited) and recorded itself: one more digest.
    second = seal()
    assert second is not None and second.sequence == 2
    names = set(AuditEvent.objects.filter(id__gte=second.first_event_id).values_list("event_name", flat=True))
    assert "CreateAuditSigningKey" in names and SEAL_EVENT in names
    idle_events = AuditEvent.objects.count()
    # Now only the second seal's own event is new: nothing to seal, nothing recorded.
    assert seal() is None
    assert AuditEvent.objects.count() == idle_events, "an idle trail must not grow"
    activity(1)
    latest = seal()
    assert latest is not None and latest.sequence == 3
    assert latest.previous_digest_sha256 == second.digest_sha256
    assert latest.previous_digest_signature == second.signature
    assert latest.first_event_id == second.last_event_id + 1
    report = audit_verify()
    assert report.ok, report.problems
    assert (report.digests, report.unsealed) == (3, 1)


def test_verify_audit_command_passes_on_an_intact_trail(activity: Callable[[int], None]) -> None:
    activity(4)
    seal()
    out, _ = run_command("verify_audit")
    assert out.startswith("OK: 1 digests")


def test_it_keeps_verifying_old_digests_after_a_key_rollover(activity: Callable[[int], None]) -> None:
    activity(2)
    old = seal()
    new_key = signing_key_rollover(caller=SYSTEM)
    activity(2)
    new = seal()
    assert old.key_fingerprint != new.key_fingerprint == new_key.fingerprint
    assert SigningKey.objects.get(fingerprint=old.key_fingerprint).retired_at is not None
    assert audit_verify().ok


# -- tampering ------------------------------------------------------------------------


@pytest.fixture
def sealed(activity: Callable[[int], None]) -> AuditDigest:
    activity(6)
    digest = seal()
    assert audit_verify().ok
    return digest


def middle_event(digest: AuditDigest) -> AuditEvent:
    events = list(AuditEvent.objects.filter(id__gte=digest.first_event_id, id__lte=digest.last_event_id))
    return events[len(events) // 2]


def first_problem() -> tuple[str, str]:
    report = audit_verify()
    assert not report.ok
    return report.problems[0].kind, report.problems[0].message


def assert_command_fails(*words: str) -> None:
    with pytest.raises(CommandError) as raised:
        run_command("verify_audit")
    for word in words:
        assert word in str(raised.value)


def test_it_detects_an_edited_event(sealed: AuditDigest) -> None:
    victim = middle_event(sealed)
    with tampering():
        AuditEvent.objects.filter(pk=victim.pk).update(source_ip="203.0.113.9")
    kind, message = first_problem()
    assert kind == "event-changed"
    assert str(victim.event_id) in message and f"id {victim.id}" in message
    assert_command_fails(str(victim.event_id), "changed")


def test_it_detects_an_edit_to_a_search_column_too(sealed: AuditDigest) -> None:
    victim = middle_event(sealed)
    with tampering():
        AuditEvent.objects.filter(pk=victim.pk).update(key_id=str(uuid.uuid4()))
    assert first_problem()[0] == "event-changed"


def test_it_detects_a_deleted_event(sealed: AuditDigest) -> None:
    victim = middle_event(sealed)
    with tampering():
        AuditEvent.objects.filter(pk=victim.pk).delete()
    kind, message = first_problem()
    assert kind == "event-deleted"
    assert f"event id {victim.id}" in message
    assert_command_fails(f"event id {victim.id}", "deleted")


def test_it_detects_an_inserted_event(admin: Caller, activity: Callable[[int], None]) -> None:
    activity(3)
    gap = AuditEvent.objects.order_by("-id")[1]
    # Leave a gap in the ids before sealing (rolled-back inserts leave gaps in real life).
    with tampering():
        AuditEvent.objects.filter(pk=gap.pk).delete()
    seal()
    assert audit_verify().ok
    with tampering():
        AuditEvent.objects.bulk_create(
            [AuditEvent(id=gap.id, event_time=gap.event_time, event_name="Decrypt", origin="api")]
        )
    kind, message = first_problem()
    assert kind == "event-inserted"
    assert f"id {gap.id}" in message
    assert_command_fails("inserted")


def test_it_detects_reordered_events(sealed: AuditDigest) -> None:
    events = list(AuditEvent.objects.filter(id__gte=sealed.first_event_id, id__lte=sealed.last_event_id))
    a, b = events[1], events[2]
    with tampering(), transaction.atomic():
        AuditEvent.objects.filter(pk=a.id).update(id=-1)
        AuditEvent.objects.filter(pk=b.id).update(id=a.id)
        AuditEvent.objects.filter(pk=-1).update(id=b.id)
    kind, message = first_problem()
    assert kind == "event-reordered"
    assert "reordered" in message
    assert_command_fails("reordered")


def test_it_detects_an_edited_digest(sealed: AuditDigest) -> None:
    with tampering():
        AuditDigest.objects.filter(pk=sealed.pk).update(event_count=sealed.event_count - 1)
    kind, message = first_problem()
    assert (kind, message) == ("digest-changed", "digest 1 was changed: its signature does not verify")
    assert_command_fails("digest 1 was changed")


def test_it_detects_an_event_and_its_leaf_edited_together(sealed: AuditDigest) -> None:
    victim = middle_event(sealed)
    with tampering():
        AuditEvent.objects.filter(pk=victim.pk).update(source_ip="198.51.100.7")
        row = AuditEvent.objects.filter(pk=victim.pk).values_list(*canonical.EVENT_COLUMNS).get()
        leaves = [
            (i, canonical.leaf_hash(canonical.canonical_json(canonical.record(row))) if i == victim.id else h)
            for i, h in canonical.unpack_leaves(bytes(sealed.leaves))
        ]
        AuditDigest.objects.filter(pk=sealed.pk).update(leaves=canonical.pack_leaves(leaves))
    kind, message = first_problem()
    assert kind == "event-changed" and "signed hash" in message


def test_it_detects_a_deleted_digest_in_the_middle_and_at_the_end(
    activity: Callable[[int], None], settings: Any
) -> None:
    for _ in range(3):
        activity(2)
        seal()
    assert AuditDigest.objects.count() == 3 and audit_verify().ok
    with tampering():
        AuditDigest.objects.filter(sequence=3).delete()
    kind, message = first_problem()
    assert kind == "digest-missing" and "database's newest is digest 2: digest 3 was deleted" in message
    # The seal events say so too, anchor or not.
    messages = [p.message for p in audit_verify(stop_at_first=False).problems]
    assert any(m.startswith("digest 3 was deleted (seal event ") for m in messages)
    with tampering():
        AuditDigest.objects.filter(sequence=2).delete()
        activity(1)
    assert AuditDigest.objects.count() == 1
    activity(1)
    with pytest.raises(InvalidState, match="database does not hold it"):
        seal()  # sealing on top of a rewound chain would bless it
    # Someone who can also rewind the anchor gets a new digest 2 chained to
    # digest 1, but the seal events still name the deleted ones.
    path = settings.KMSWEB_AUDIT_ANCHOR_FILE
    path.write_bytes(path.read_bytes().splitlines(keepends=True)[0])
    seal()
    kind, message = first_problem()
    assert kind == "digest-missing" and message.startswith("digest 2 was replaced")


def test_it_records_a_failed_seal(activity: Callable[[int], None], monkeypatch: pytest.MonkeyPatch) -> None:
    activity(1)

    def broken(**kwargs: object) -> bytes:
        raise RuntimeError("HSM unplugged")

    monkeypatch.setattr("audit.services.sealing.signing_key_sign", broken)
    with pytest.raises(Exception, match="Sealing the audit trail failed"):
        seal()
    assert not AuditDigest.objects.exists()
    failed = AuditEvent.objects.get(event_name=SEAL_EVENT)
    assert failed.error_code == "KMSInternalException"


@pytest.mark.postgres
def test_postgres_triggers_refuse_updates_and_deletes(sealed: AuditDigest) -> None:
    victim = middle_event(sealed)
    for attempt in (
        lambda: AuditEvent.objects.filter(pk=victim.pk).update(source_ip="x"),
        lambda: AuditEvent.objects.filter(pk=victim.pk).delete(),
        lambda: AuditDigest.objects.filter(pk=sealed.pk).update(event_count=1),
        lambda: AuditDigest.objects.filter(pk=sealed.pk).delete(),
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            attempt()
    # The retention job's session setting allows deleting events (never digests).
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SET LOCAL kmsweb.audit_retention = 'on'")
        AuditEvent.objects.filter(pk=victim.pk).delete()
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            AuditDigest.objects.filter(pk=sealed.pk).delete()
    assert is_postgres()


def test_it_refuses_to_update_an_event_through_the_orm(sealed: AuditDigest) -> None:
    victim = middle_event(sealed)
    victim.source_ip = "x"
    with pytest.raises(RuntimeError, match="append-only"):
        victim.save()


def test_the_canonical_record_is_what_jsonl_exports_hold(sealed: AuditDigest) -> None:
    row = AuditEvent.objects.filter(id=sealed.first_event_id).values_list(*canonical.EVENT_COLUMNS).get()
    line = canonical.canonical_json(canonical.record(row))
    assert json.loads(line)["eventID"] == str(row[1])
    assert line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    hashes = [h for _, h in canonical.unpack_leaves(bytes(sealed.leaves))]
    assert canonical.events_root(hashes) == sealed.events_sha256


def test_a_backlog_is_sealed_in_capped_digests(
    activity: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit.services.sealing import audit_seal_all

    monkeypatch.setattr("audit.services.sealing.MAX_DIGEST_EVENTS", 4)
    activity(9)
    digests = audit_seal_all(caller=SYSTEM)
    assert [d.event_count for d in digests][:-1] == [4] * (len(digests) - 1) and len(digests) >= 3
    assert audit_verify().ok
    out, _ = run_command("seal_audit")
    assert out.startswith("Sealed") or out.startswith("Nothing")


def test_the_seal_task_runs_the_service() -> None:
    from audit.models import JobRun
    from kmsweb.tasks import JOB_TASKS

    # Nothing to seal in an empty trail; the run itself is recorded as the seal_audit job.
    assert JOB_TASKS["seal_audit"].run() == {"digests": 0, "events": 0}
    assert list(JobRun.objects.values_list("name", "outcome")) == [("seal_audit", "ok")]


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
def test_canonical_json_is_the_standard_librarys_sorted_compact_form(value: object) -> None:
    """Anyone can re-derive a leaf hash with Python's json module alone (see docs/AUDIT.md)."""
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical.canonical_json(value) == expected.encode("utf-8", "surrogatepass")


def test_bulk_rows_are_the_orms_rows(sealed: AuditDigest) -> None:
    """audit.rows reads faster than the ORM (raw on PostgreSQL) but must read the same values."""
    from audit.rows import event_rows

    fast = list(event_rows(AuditEvent.objects.all(), through_id=sealed.last_event_id, chunk=3))
    orm = [
        list(r) for r in AuditEvent.objects.filter(id__lte=sealed.last_event_id).values_list(*canonical.EVENT_COLUMNS)
    ]
    assert fast == orm and len(fast) == sealed.event_count
    assert canonical.iso(fast[0][2]).endswith("Z") and len(canonical.iso(fast[0][2])) == 27
