"""Group-committed audit against a live server on PostgreSQL.

Concurrent Encrypt calls share audit transactions, and every answered call
has its event. With the server's database connections killed while calls
are in flight (``pg_terminate_backend``, the shared server keeps running),
no call is answered without its event, no refused call (500) has one, and
the server serves again without a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.db import connection

from audit.models import AuditEvent
from audit.services.writer import group_writer
from keys.models import Key
from tests.conftest import Persona

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PLAINTEXT = b"g" * 4096


def _run(clients: list[Any], work: Callable[[Any], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(client: Any) -> None:
        try:
            work(client)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_encrypts_commit_their_events_together(
    kms_client: Callable[..., Any], key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    key_id = str(make_key().id)
    clients = [kms_client(key_admin) for _ in range(12)]
    writer = group_writer("default")
    batches, events = writer.state.batches, writer.state.events
    answered: list[str] = []

    def work(client: Any) -> None:
        for _ in range(10):
            reply = client.encrypt(KeyId=key_id, Plaintext=PLAINTEXT)
            answered.append(reply["ResponseMetadata"]["RequestId"])

    assert _run(clients, work) == []
    assert len(answered) == 120
    recorded = AuditEvent.objects.filter(request_id__in=answered, event_name="Encrypt", error_code="")
    assert recorded.count() == 120
    assert writer.state.events - events == 120
    # Fewer transactions than calls: calls in flight together shared a commit.
    assert writer.state.batches - batches < 120
    # Refused read-only calls end their time on the way too: no leader waits for them later.
    with pytest.raises(ClientError, match="NotFoundException"):
        clients[0].encrypt(KeyId="11111111-2222-3333-4444-555555555555", Plaintext=b"x")
    with pytest.raises(ClientError, match="ValidationException"):
        clients[0].encrypt(KeyId=key_id, Plaintext=b"")
    assert writer._on_the_way == {}


def _kill_server_connections() -> int:
    """Terminate every connection to the test database but this test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_killed_connections_never_answer_a_call_without_its_event(
    kms_client: Callable[..., Any], key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    key_id = str(make_key().id)
    clients = [kms_client(key_admin) for _ in range(8)]
    answered: list[str] = []
    refused: list[str] = []
    other: list[tuple[int, str]] = []
    progress = threading.Condition()
    stop = threading.Event()

    def work(client: Any) -> None:
        while not stop.is_set():
            try:
                reply = client.encrypt(KeyId=key_id, Plaintext=PLAINTEXT)
                assert client.decrypt(CiphertextBlob=reply["CiphertextBlob"])["Plaintext"] == PLAINTEXT
                answered.append(reply["ResponseMetadata"]["RequestId"])
            except ClientError as exc:
                meta = exc.response["ResponseMetadata"]
                if meta["HTTPStatusCode"] == 500 and exc.response["Error"]["Code"] == "KMSInternalException":
                    refused.append(meta["RequestId"])
                else:
                    other.append((meta["HTTPStatusCode"], exc.response["Error"]["Code"]))
            with progress:
                progress.notify_all()

    def calls_done() -> int:
        return len(answered) + len(refused)

    def wait_for(n: int) -> None:
        with progress:
            assert progress.wait_for(lambda: calls_done() >= n or bool(other), timeout=120)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    try:
        wait_for(16)
        for _ in range(8):
            _kill_server_connections()
            wait_for(calls_done() + 12)
    finally:
        stop.set()
        for t in threads:
            t.join()

    assert other == []
    # Every answered call has its durable event, written once.
    assert answered
    recorded = set(
        AuditEvent.objects.filter(request_id__in=answered, event_name="Encrypt", error_code="").values_list(
            "request_id", flat=True
        )
    )
    assert recorded == set(answered)
    # A refused call left no event at all: nothing claims a result that was never given.
    assert not AuditEvent.objects.filter(request_id__in=refused).exists()
    # Served again, with no restart.
    reply = clients[0].encrypt(KeyId=key_id, Plaintext=PLAINTEXT)
    assert AuditEvent.objects.filter(request_id=reply["ResponseMetadata"]["RequestId"], error_code="").count() == 1
