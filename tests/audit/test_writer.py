"""The group writer: read-only calls' events commit together, each durable before its call returns.

Service-level: events handed over from many threads at once share
transactions, a grouped event is the same row the direct INSERT writes, and
an event the database refuses fails its own call only, with no event and
no result. The live-server behaviour (boto3 calls, PostgreSQL connections
killed under load) is in tests/api/test_audit_group_commit.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection, connections, transaction

from audit.models import AuditEvent
from audit.services import recording
from audit.services.recording import audited
from audit.services.writer import AuditWriteFailed, _Pending, _write_batch, group_writer, on_the_way
from keys.models import Key
from kmsweb import generations
from kmsweb.lib.errors import InternalError
from tests.conftest import Persona


def _writer() -> Any:
    return group_writer("default")


def _in_threads(threads: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run ``work(n)`` in ``threads`` threads released together; the errors they raised."""
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            start.wait()
            work(n)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


@pytest.fixture(autouse=True)
def _groupable() -> None:
    """A live server started earlier in the run shares the in-memory SQLite
    connection between threads, and the writer then (rightly) stands aside."""
    if connection.allow_thread_sharing:
        pytest.skip("a live server shares this in-memory SQLite connection: the group writer stands aside")


@pytest.mark.django_db(transaction=True)
def test_it_writes_a_grouped_event_as_the_direct_insert_would(key_admin: Persona, make_key: Callable[..., Key]) -> None:
    key = make_key()
    at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    fields: dict[str, Any] = {
        "caller": key_admin.caller(),
        "event_name": "Encrypt",
        "request_parameters": {"KeyId": str(key.id), "EncryptionContext": {"nul": "a\x00b", "q": "it's"}},
        "additional_event_data": {"keyMaterialId": "abc"},
        "keys": [key],
        "read_only": True,
        "event_time": at,
    }
    before = _writer().state.events
    assert recording.audit_record(**fields, grouped=True) is None  # no id: it went through the writer
    assert _writer().state.events == before + 1
    grouped = AuditEvent.objects.get(request_id=fields["caller"].request_id, event_name="Encrypt")
    direct = AuditEvent.objects.get(pk=recording.audit_record(**fields))

    columns = [f.attname for f in AuditEvent._meta.concrete_fields if f.attname not in ("id", "event_id")]
    assert {c: getattr(grouped, c) for c in columns} == {c: getattr(direct, c) for c in columns}
    assert grouped.event_id != direct.event_id
    assert grouped.request_parameters["encryptionContext"] == {"nul": "a\\u0000b", "q": "it's"}
    assert grouped.resources == [{"accountId": key.account_id, "type": "AWS::KMS::Key", "ARN": key.arn}]


@pytest.mark.django_db
def test_it_writes_inside_the_callers_transaction_without_the_writer(key_admin: Persona) -> None:
    """In a transaction the event belongs to it: no other thread's commit may carry it."""
    before = _writer().state.batches
    with transaction.atomic():
        pk = recording.audit_record(caller=key_admin.caller(), event_name="ListKeys", read_only=True, grouped=True)
    assert pk is not None and AuditEvent.objects.filter(pk=pk).exists()
    assert _writer().state.batches == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_commits_concurrent_events_together(key_admin: Persona, make_key: Callable[..., Key]) -> None:
    """Many events per transaction, each row the one the direct INSERT writes."""
    threads, each = 16, 25
    caller = key_admin.caller()
    key = make_key()
    at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    fields: dict[str, Any] = {
        "caller": caller,
        "event_name": "GenerateRandom",
        "request_parameters": {"KeyId": str(key.id), "EncryptionContext": {"nul": "a\x00b", "q": "{it's}"}},
        "additional_event_data": {"keyMaterialId": "abc"},
        "keys": [key],
        "read_only": True,
        "event_time": at,
    }
    writer = _writer()
    batches, events = writer.state.batches, writer.state.events

    def work(n: int) -> None:
        for _ in range(each):
            recording.audit_record(**fields, grouped=True)

    assert _in_threads(threads, work) == []
    assert AuditEvent.objects.filter(event_name="GenerateRandom").count() == threads * each
    assert writer.state.events - events == threads * each
    # Fewer transactions than events: calls waited for one commit and shared the next.
    assert writer.state.batches - batches < threads * each
    direct = AuditEvent.objects.get(pk=recording.audit_record(**fields))
    columns = [f.attname for f in AuditEvent._meta.concrete_fields if f.attname not in ("id", "event_id")]
    expected = {c: getattr(direct, c) for c in columns}
    grouped = AuditEvent.objects.filter(event_name="GenerateRandom").exclude(pk=direct.pk)
    assert all({c: getattr(e, c) for c in columns} == expected for e in grouped)
    assert len(set(grouped.values_list("event_id", flat=True))) == threads * each


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("checked", [False, pytest.param(True, marks=pytest.mark.postgres)])
@pytest.mark.parametrize("prepared", [True, False])
def test_a_batch_of_different_events_writes_each_as_the_direct_insert_would(
    key_admin: Persona, settings: Any, checked: bool, prepared: bool
) -> None:
    """One multi-row statement, each row its own values: quotes, backslashes, braces, commas,
    non-ASCII text, an escaped NUL, SQL NULLs, booleans and times, in order; prepared or not
    (``KMSWEB_DB_PREPARED_STATEMENTS``, off behind an older PgBouncer)."""
    settings.KMSWEB_DB_PREPARED_STATEMENTS = prepared
    now = generations.vector_text(generations.generations_read()) if checked else None
    at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    tricky = ["plain", 'it\'s "quoted" {a,b}', "back\\slash\\", "naïve ☃ 鍵", "a\\u0000b", "NULL", ""]
    rows = [
        {
            "event_name": "Decrypt" if n % 2 else "Encrypt",
            "event_time": at.replace(microsecond=n),
            "request_id": f"batch-{n}-{text}",
            "user_agent": text,
            "read_only": bool(n % 2),
            "user_identity": {"type": "IAMUser", "userName": text},
            "request_parameters": {"encryptionContext": {text: text}} if n % 3 else None,
            "additional_event_data": None,
            "resources": [{"ARN": text}],
            "error_message": text,
            "recipient_account_id": key_admin.account_id,
        }
        for n, text in enumerate(tricky)
    ]
    written = recording.insert_many(
        [dict(r) for r in rows], using="default", checks=[now] * len(rows) if checked else None
    )
    assert (written is not None) == checked
    direct = [
        AuditEvent.objects.get(pk=recording._insert({**r, "request_id": f"direct-{n}"})) for n, r in enumerate(rows)
    ]
    columns = [f.attname for f in AuditEvent._meta.concrete_fields if f.attname not in ("id", "event_id", "request_id")]
    for row, expected in zip(rows, direct, strict=True):
        grouped = AuditEvent.objects.get(request_id=row["request_id"])
        assert {c: getattr(grouped, c) for c in columns} == {c: getattr(expected, c) for c in columns}
        assert grouped.user_agent == row["user_agent"]
        if checked:
            assert written is not None and grouped.event_id in written


@pytest.mark.django_db(transaction=True)
def test_an_event_the_database_refuses_fails_its_call_alone(key_admin: Persona) -> None:
    """A NOT NULL violation: the call fails with no event; the writer reads as failing until a commit succeeds."""
    writer = _writer()
    caller = key_admin.caller()
    with pytest.raises(AuditWriteFailed) as raised:
        recording.audit_record(caller=caller, event_name=None, read_only=True, grouped=True)  # type: ignore[arg-type]
    assert raised.value.code == "KMSInternalException" and raised.value.status == 500
    assert raised.value.audited  # nothing records it again
    assert not AuditEvent.objects.filter(request_id=caller.request_id).exists()
    assert writer.failing()

    recording.audit_record(caller=caller, event_name="ListKeys", read_only=True, grouped=True)
    assert AuditEvent.objects.filter(request_id=caller.request_id, event_name="ListKeys").count() == 1
    assert not writer.failing()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_read_only_call_whose_event_fails_returns_nothing_and_records_nothing(key_admin: Persona) -> None:
    """The work's result never leaves ``audited`` without its event, and no error event is made up."""
    caller = key_admin.caller()
    released = []
    with pytest.raises(InternalError) as raised:
        # 100 characters do not fit the event_name column (64) on PostgreSQL.
        with audited(caller, "X" * 100, read_only=True) as op:
            op.response_elements = {"result": "secret-free"}
        released.append("answer")
    assert isinstance(raised.value, AuditWriteFailed)
    assert released == []
    assert not AuditEvent.objects.filter(request_id=caller.request_id).exists()
    assert connection.vendor == "postgresql"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_writes_only_the_events_whose_assumed_generations_still_hold(key_admin: Persona) -> None:
    """A call that assumed the cache generations gets its event only if they hold when the batch commits.

    Three calls commit together: one assumed today's generations, one
    yesterday's (a grant was revoked since), one read them (nothing to
    check). The stale one is left out and raises ``StaleGenerations``; the
    others are written.
    """
    now = generations.generations_read()
    stale = {**now, generations.GRANTS: now[generations.GRANTS] - 1}
    calls = [
        ("fresh", generations.vector_text(now)),
        ("stale", generations.vector_text(stale)),
        ("unchecked", None),
    ]
    values = {
        name: {
            "event_name": "Encrypt",
            "event_time": datetime.now(UTC),
            "request_id": f"{name}-{key_admin.access_key_id}",
            "read_only": True,
            "user_identity": {"type": "IAMUser"},
            "resources": [],
            "recipient_account_id": key_admin.account_id,
        }
        for name, _ in calls
    }
    # Written as one batch, with the writer's own statement.
    batch = [_Pending(values[name], check) for name, check in calls]
    for pending in batch:
        pending.values["event_id"] = uuid.uuid4()
    outcome = _write_batch(batch, "default")

    assert outcome is not None
    assert [type(e).__name__ if e else None for e in outcome] == [None, "StaleGenerations", None]
    written = set(AuditEvent.objects.filter(event_name="Encrypt").values_list("request_id", flat=True))
    assert written == {f"fresh-{key_admin.access_key_id}", f"unchecked-{key_admin.access_key_id}"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_call_on_stale_generations_raises_and_leaves_no_event(key_admin: Persona) -> None:
    """Through the writer's front door, and through the direct INSERT of a call in a transaction."""
    now = generations.generations_read()
    stale = generations.vector_text({**now, generations.KEYS: now[generations.KEYS] - 1})
    with pytest.raises(generations.StaleGenerations):
        _writer().commit(
            {
                "event_name": "Decrypt",
                "event_time": datetime.now(UTC),
                "request_id": "stale-grouped",
                "user_identity": {},
                "resources": [],
            },
            verify=stale,
        )
    with pytest.raises(generations.StaleGenerations), transaction.atomic():
        generations.generations_verify(stale)
    assert not AuditEvent.objects.filter(request_id="stale-grouped").exists()
    # Today's generations pass both ways.
    _writer().commit(
        {
            "event_name": "Decrypt",
            "event_time": datetime.now(UTC),
            "request_id": "fresh-grouped",
            "user_identity": {},
            "resources": [],
        },
        verify=generations.vector_text(now),
    )
    generations.generations_verify(generations.vector_text(now))
    assert AuditEvent.objects.filter(request_id="fresh-grouped").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_leader_waits_for_the_calls_already_on_their_way(key_admin: Persona, settings: Any) -> None:
    """Eight calls on their way together, queueing their events 40 ms apart: one commit for all.

    The first to queue leads and waits for the seven others (``on_the_way``),
    within ``KMSWEB_AUDIT_GROUP_WAIT_US``. Without that wait each would
    commit alone (eight batches).
    """
    settings.KMSWEB_AUDIT_GROUP_WAIT_US = 10_000_000
    writer = _writer()
    threads = 8
    batches = writer.state.batches
    arrived = threading.Barrier(threads)  # every call on its way before the first queues its event

    def call(n: int) -> None:
        with on_the_way():
            arrived.wait()
            time.sleep(0.04 * n)
            recording.audit_record(caller=key_admin.caller(), event_name="GenerateRandom", grouped=True)

    assert _in_threads(threads, call) == []
    assert AuditEvent.objects.filter(event_name="GenerateRandom").count() == threads
    assert writer.state.batches - batches == 1
    assert writer._on_the_way == {}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_leader_waits_neither_for_later_calls_nor_for_calls_that_end_without_an_event(
    key_admin: Persona, settings: Any
) -> None:
    """The leader waits for a call on its way (C); a call arriving after it began waiting (B) is not waited
    for, and C ending without an event frees the leader at once, long before the wait's limit."""
    settings.KMSWEB_AUDIT_GROUP_WAIT_US = 60_000_000
    writer = _writer()
    c_on_the_way, c_may_end = threading.Event(), threading.Event()
    b_on_the_way, b_may_queue = threading.Event(), threading.Event()
    a_done = threading.Event()
    errors: list[BaseException] = []

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:
                errors.append(exc)
            finally:
                connections.close_all()

        return run

    def c() -> None:
        with on_the_way():
            c_on_the_way.set()
            c_may_end.wait(10)  # then ends with no event (a refused call, say)

    def a() -> None:
        with on_the_way():
            recording.audit_record(caller=key_admin.caller(), event_name="GenerateRandom", grouped=True)
        a_done.set()

    def b() -> None:
        with on_the_way():
            b_on_the_way.set()
            b_may_queue.wait(10)
            recording.audit_record(caller=key_admin.caller(), event_name="Decrypt", grouped=True)

    threads = [threading.Thread(target=guarded(c))]
    threads[0].start()
    assert c_on_the_way.wait(5)
    threads.append(threading.Thread(target=guarded(a)))
    threads[1].start()
    deadline = time.monotonic() + 5
    while not writer._leaders_waiting and time.monotonic() < deadline:
        time.sleep(0.005)
    assert writer._leaders_waiting, "A leads and waits for C"
    threads.append(threading.Thread(target=guarded(b)))
    threads[2].start()
    assert b_on_the_way.wait(5)
    c_may_end.set()
    # A commits once C has ended, although B is still on its way.
    assert a_done.wait(5)
    assert not b_may_queue.is_set()
    b_may_queue.set()
    for t in threads:
        t.join()
    assert errors == []
    assert AuditEvent.objects.filter(event_name="GenerateRandom").count() == 1
    assert AuditEvent.objects.filter(event_name="Decrypt").count() == 1
    assert writer._on_the_way == {}
