"""The keys' periodic jobs (rotation, scheduled deletion), their JobRun records
and ``manage.py run_job``, with the clock moved by time-machine.

Jobs read the clock through ``kmsweb.lib.clock.now`` once per run, so a test
travels to an instant and runs the job as beat would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import AuditEvent, JobOutcome, JobRun
from audit.services.jobs import job_run
from keys import services as svc
from keys.models import Alias, Key, KeyManager, KeyMaterial, KeyState, RotationType
from keys.selectors import key_get_for
from keys.services import jobs
from keys.services.jobs import keys_delete_expired, keys_rotate_due
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InternalError, InvalidState, KmsError, NotFound
from policies.models import Grant
from tests.conftest import Persona

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
THREAD_WAIT_SECONDS = 15
SYSTEM_IDENTITY = {"type": "AWSService", "invokedBy": "kmsweb", "principalId": "rotate_keys"}


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def rotate(clock: time_machine.Coordinates, at: datetime) -> JobRun:
    clock.move_to(at)
    return job_run("rotate_keys", keys_rotate_due)


def delete(clock: time_machine.Coordinates, at: datetime) -> JobRun:
    clock.move_to(at)
    return job_run("delete_expired_keys", keys_delete_expired)


def versions(key: Key) -> list[int]:
    return list(KeyMaterial.objects.filter(key=key).order_by("version").values_list("version", flat=True))


def rotating_key(make_key: Callable[..., Key], days: int = 90) -> Key:
    return make_key(rotation_period_days=days)


# -- rotation ---------------------------------------------------------------------


@pytest.mark.django_db
def test_it_rotates_a_key_exactly_at_its_period_and_not_a_second_before(
    clock: time_machine.Coordinates, make_key: Callable[..., Key]
) -> None:
    key = rotating_key(make_key)

    early = rotate(clock, T0 + 90 * DAY - SECOND)
    assert early.counts == {"rotated": 0, "skipped": 0, "failed": 0}
    assert versions(key) == [1]

    due = rotate(clock, T0 + 90 * DAY)
    assert due.counts == {"rotated": 1, "skipped": 0, "failed": 0}
    key.refresh_from_db()
    assert versions(key) == [1, 2]
    assert key.current_material is not None and key.current_material.version == 2
    assert key.current_material.rotation_type == RotationType.AUTOMATIC
    assert key.last_rotated_at == T0 + 90 * DAY
    assert key.next_rotation_at == T0 + 180 * DAY
    (event,) = AuditEvent.objects.filter(event_name="RotateKey")
    assert event.error_code == ""
    assert event.event_time == T0 + 90 * DAY
    assert event.user_identity == SYSTEM_IDENTITY

    again = rotate(clock, T0 + 90 * DAY)
    assert again.counts["rotated"] == 0
    assert versions(key) == [1, 2]


@pytest.mark.django_db
def test_it_rotates_an_overdue_key_once_after_a_long_downtime(
    clock: time_machine.Coordinates, make_key: Callable[..., Key]
) -> None:
    key = rotating_key(make_key)
    back = T0 + 400 * DAY  # four periods late
    # The platform owned keys (made with key_admin's access key) rotate yearly in the same job.
    owned = Key.objects.filter(manager=KeyManager.OWNED).count()
    assert owned >= 1

    assert rotate(clock, back).counts["rotated"] == 1 + owned
    assert rotate(clock, back + DAY).counts["rotated"] == 0
    key.refresh_from_db()
    assert versions(key) == [1, 2]
    assert key.next_rotation_at == back + 90 * DAY


@pytest.mark.django_db
def test_it_rotates_keys_across_claim_batches_and_a_failure_undoes_only_its_key(
    clock: time_machine.Coordinates, make_key: Callable[..., Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys are claimed a batch per transaction; one key failing rolls back that
    key alone (its savepoint), records its failed RotateKey, and stays due."""
    from keys.services import rotation

    monkeypatch.setattr(jobs, "CLAIM", 2)
    keys = [rotating_key(make_key) for _ in range(5)]
    doomed = sorted(keys, key=lambda k: k.pk)[2]  # the first key of the second batch
    original = rotation.material_create

    def failing(*, key: Key, **kwargs: Any) -> KeyMaterial:
        material = original(key=key, **kwargs)  # written, then undone by the savepoint
        if key.pk == doomed.pk:
            raise InvalidState("storage refused the new version")
        return material

    monkeypatch.setattr(rotation, "material_create", failing)
    assert rotate(clock, T0 + 90 * DAY).counts == {"rotated": 4, "skipped": 0, "failed": 1}
    for key in keys:
        key.refresh_from_db()
        assert versions(key) == ([1] if key.pk == doomed.pk else [1, 2])
        assert key.next_rotation_at == (T0 + 90 * DAY if key.pk == doomed.pk else T0 + 180 * DAY)
    events = AuditEvent.objects.filter(event_name="RotateKey").order_by("id")
    assert [e.error_code for e in events].count("KMSInvalidStateException") == 1
    assert len(events) == 5

    monkeypatch.setattr(rotation, "material_create", original)
    assert rotate(clock, T0 + 90 * DAY + SECOND).counts == {"rotated": 1, "skipped": 0, "failed": 0}
    assert versions(doomed) == [1, 2]


@pytest.mark.django_db
def test_it_decrypts_old_ciphertext_after_several_automatic_rotations(
    clock: time_machine.Coordinates, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    key = rotating_key(make_key)
    caller = key_admin.caller()
    oldest = svc.key_encrypt(caller=caller, key=key, plaintext=b"first", context={"n": "1"}).ciphertext

    for period in (1, 2, 3):
        assert rotate(clock, T0 + period * 90 * DAY).counts["rotated"] == 1
    key.refresh_from_db()
    newest = svc.key_encrypt(caller=caller, key=key, plaintext=b"latest").ciphertext

    assert versions(key) == [1, 2, 3, 4]
    assert svc.key_decrypt(caller=caller, ciphertext=oldest, context={"n": "1"}).plaintext == b"first"
    assert svc.key_decrypt(caller=caller, ciphertext=newest).plaintext == b"latest"


@pytest.mark.django_db
def test_it_skips_a_disabled_key_and_rotates_it_once_enabled_again(
    clock: time_machine.Coordinates, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    key = rotating_key(make_key)
    svc.key_disable(caller=key_admin.caller(), key=key)

    assert rotate(clock, T0 + 100 * DAY).counts["rotated"] == 0
    key.refresh_from_db()
    assert versions(key) == [1]
    assert key.next_rotation_at == T0 + 90 * DAY  # still due

    svc.key_enable(caller=key_admin.caller(), key=key)
    assert rotate(clock, T0 + 101 * DAY).counts["rotated"] == 1
    assert versions(key) == [1, 2]


@pytest.mark.django_db
def test_it_leaves_keys_without_rotation_or_pending_deletion_alone(
    clock: time_machine.Coordinates, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    plain = make_key()
    pending = rotating_key(make_key)
    svc.key_schedule_deletion(caller=key_admin.caller(), key=pending, pending_window_days=30)

    assert rotate(clock, T0 + 95 * DAY).counts["rotated"] == 0
    assert versions(plain) == [1]
    assert versions(pending) == [1]


# -- scheduled deletion -------------------------------------------------------------


@pytest.mark.django_db
def test_it_deletes_a_key_when_its_window_ends_and_not_before(
    clock: time_machine.Coordinates, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    key = make_key()
    caller = key_admin.caller()
    blob = svc.key_encrypt(caller=caller, key=key, plaintext=b"secret").ciphertext
    svc.alias_create(caller=caller, name="alias/doomed", key=key)
    grant, _token = svc_grant(caller, key, key_admin)
    svc.key_schedule_deletion(caller=caller, key=key, pending_window_days=7)

    early = delete(clock, T0 + 7 * DAY - SECOND)
    assert early.counts == {"deleted": 0, "skipped": 0}
    assert versions(key) == [1]

    mark = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    due = delete(clock, T0 + 7 * DAY)
    assert due.counts == {"deleted": 1, "skipped": 0}

    key.refresh_from_db()
    assert key.deleted_at == T0 + 7 * DAY
    assert key.state == KeyState.PENDING_DELETION
    assert key.current_material is None
    assert versions(key) == []
    assert not Alias.objects.filter(key=key).exists()
    grant.refresh_from_db()
    assert grant.retired_at == T0 + 7 * DAY and grant.retired_how == "key-deleted"

    (event,) = AuditEvent.objects.filter(id__gt=mark, event_name="DeleteKey")
    assert event.error_code == ""
    assert event.user_identity == {**SYSTEM_IDENTITY, "principalId": "delete_expired_keys"}
    assert event.additional_event_data["deletedAliases"] == ["alias/doomed"]
    assert event.additional_event_data["retiredGrants"] == 1

    # The tombstone stays, but the API no longer finds the key or opens its ciphertext.
    assert Key.objects.filter(pk=key.pk).exists()
    with pytest.raises(NotFound):
        key_get_for(caller=caller, key_ref=str(key.id))
    with pytest.raises(NotFound):
        key_get_for(caller=caller, key_ref="alias/doomed")
    with pytest.raises(KmsError):
        svc.key_decrypt(caller=caller, ciphertext=blob)

    # Running again deletes nothing more and records no second DeleteKey.
    assert delete(clock, T0 + 8 * DAY).counts["deleted"] == 0
    assert AuditEvent.objects.filter(event_name="DeleteKey").count() == 1


def svc_grant(caller: Caller, key: Key, grantee: Persona) -> tuple[Grant, str]:
    from policies.services.grants import grant_create

    return grant_create(caller=caller, key=key, grantee_principal=grantee.principal.arn, operations=["Decrypt"])


@pytest.mark.django_db
def test_it_does_not_delete_a_key_whose_deletion_was_cancelled(
    clock: time_machine.Coordinates, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    key = make_key()
    svc.key_schedule_deletion(caller=key_admin.caller(), key=key, pending_window_days=7)
    svc.key_cancel_deletion(caller=key_admin.caller(), key=key)

    assert delete(clock, T0 + 8 * DAY).counts["deleted"] == 0
    key.refresh_from_db()
    assert key.deleted_at is None
    assert versions(key) == [1]
    assert not AuditEvent.objects.filter(event_name="DeleteKey").exists()


# -- JobRun records, tasks and run_job ----------------------------------------------------


@pytest.mark.django_db
def test_it_records_a_job_run_and_its_run_job_event(clock: time_machine.Coordinates) -> None:
    run = job_run("rotate_keys", keys_rotate_due)

    stored = JobRun.objects.get()
    assert stored.pk == run.pk
    assert stored.name == "rotate_keys"
    assert stored.outcome == JobOutcome.OK
    assert stored.started_at == T0 and stored.finished_at == T0
    assert stored.counts == {"rotated": 0, "skipped": 0, "failed": 0}
    assert stored.error == ""
    (event,) = AuditEvent.objects.filter(event_name="RunJob")
    assert event.error_code == ""
    assert event.request_parameters == {"jobName": "rotate_keys"}
    assert event.user_identity == SYSTEM_IDENTITY


@pytest.mark.django_db
def test_it_records_a_failed_job_with_its_error(clock: time_machine.Coordinates) -> None:
    def broken(*, caller: Caller, now: datetime) -> dict[str, int]:
        raise RuntimeError("the disk is on fire")

    with pytest.raises(InternalError):
        job_run("broken", broken)

    run = JobRun.objects.get()
    assert run.outcome == JobOutcome.FAILED
    assert run.error == "RuntimeError: the disk is on fire"
    assert run.finished_at == T0
    (event,) = AuditEvent.objects.filter(event_name="RunJob")
    assert event.error_code != ""


@pytest.mark.django_db
def test_it_runs_the_jobs_as_celery_tasks(clock: time_machine.Coordinates, make_key: Callable[..., Key]) -> None:
    from kmsweb.tasks import JOB_TASKS

    rotating_key(make_key)
    clock.move_to(T0 + 90 * DAY)
    assert JOB_TASKS["rotate_keys"].run() == {"rotated": 1, "skipped": 0, "failed": 0}
    assert JOB_TASKS["delete_expired_keys"].run() == {"deleted": 0, "skipped": 0}
    assert JOB_TASKS["expire_grants"].run() == {"count": 0}
    assert JOB_TASKS["expire_grant_requests"].run() == {"count": 0}
    assert sorted(JobRun.objects.values_list("name", flat=True)) == [
        "delete_expired_keys",
        "expire_grant_requests",
        "expire_grants",
        "rotate_keys",
    ]


@pytest.mark.django_db
def test_it_runs_a_job_by_name_and_prints_its_counts(
    clock: time_machine.Coordinates, make_key: Callable[..., Key]
) -> None:
    rotating_key(make_key)
    clock.move_to(T0 + 90 * DAY)
    out = StringIO()
    call_command("run_job", "rotate_keys", stdout=out)
    assert out.getvalue().strip() == "rotate_keys: rotated=1, skipped=0, failed=0"
    assert JobRun.objects.get().counts["rotated"] == 1

    for name in ("delete_expired_keys", "expire_grants", "expire_grant_requests", "seal_audit"):
        out = StringIO()
        call_command("run_job", name, stdout=out)
        assert out.getvalue().startswith(f"{name}: ")
    assert JobRun.objects.filter(outcome=JobOutcome.OK).count() == 5


@pytest.mark.django_db
def test_it_refuses_an_unknown_job_name_listing_the_names() -> None:
    with pytest.raises(CommandError) as info:
        call_command("run_job", "rotate_everything")
    message = str(info.value)
    assert "rotate_everything" in message
    for name in ("rotate_keys", "delete_expired_keys", "expire_grants", "expire_grant_requests", "seal_audit"):
        assert name in message
    assert not JobRun.objects.exists()


# -- two workers on PostgreSQL ---------------------------------------------------------


def race(monkeypatch: pytest.MonkeyPatch, job: Any, name: str, now: datetime, claim: str) -> list[dict[str, int]]:
    """Run ``job`` on two threads (two workers, two connections) at the same instant.

    The first worker to claim keys holds their row locks until the other
    worker has skipped a locked row, so a caller fails (rather than passing by
    luck) if the job ever stops claiming with SKIP LOCKED. ``claim`` names the
    job's claiming function in ``keys.services.jobs`` (one key or a batch).
    """
    original_claim = getattr(jobs, claim)
    first_claim = threading.Lock()
    holder: list[str] = []
    other_skipped = threading.Event()

    def observed_claim(due: Any, wanted: Any) -> Any:
        got = original_claim(due, wanted)
        if isinstance(got, list):
            claimed, skipped = bool(got), len(got) < len(wanted)
        else:
            claimed, skipped = got is not None, got is None
        worker_name = threading.current_thread().name
        if skipped:
            # Nothing commits while the first claimer waits below, so a skip
            # can only be a row that worker holds — even if it has not yet
            # recorded itself as the holder (requiring that made this flaky).
            other_skipped.set()
        if claimed:
            with first_claim:
                is_first = not holder
                if is_first:
                    holder.append(worker_name)
            if is_first:
                other_skipped.wait(THREAD_WAIT_SECONDS)
        return got

    monkeypatch.setattr(jobs, claim, observed_claim)
    results: dict[str, Any] = {}
    start = threading.Barrier(2)

    def worker(worker_name: str) -> None:
        try:
            start.wait(THREAD_WAIT_SECONDS)
            results[worker_name] = job(caller=Caller.system(name), now=now)
        except Exception as exc:  # surfaced by the assertions below
            results[worker_name] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,), name=n) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_WAIT_SECONDS * 2)
    assert not any(t.is_alive() for t in threads)
    assert all(isinstance(r, dict) for r in results.values()), results
    assert other_skipped.is_set(), "the second worker never met a row the first one held"
    return list(results.values())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_rotates_each_due_key_once_with_two_workers_racing(
    make_key: Callable[..., Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    with time_machine.travel(T0, tick=False):
        keys = [rotating_key(make_key) for _ in range(6)]
    results = race(monkeypatch, keys_rotate_due, "rotate_keys", T0 + 91 * DAY, "_claim")
    assert sum(r["rotated"] for r in results) == len(keys)
    assert sum(r["failed"] for r in results) == 0
    for key in keys:
        assert versions(key) == [1, 2]
    assert AuditEvent.objects.filter(event_name="RotateKey").count() == len(keys)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_deletes_each_due_key_once_with_two_workers_racing(
    key_admin: Persona, make_key: Callable[..., Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    with time_machine.travel(T0, tick=False):
        keys = [make_key() for _ in range(6)]
        for key in keys:
            svc.alias_create(caller=key_admin.caller(), name=f"alias/doomed-{key.id}", key=key)
            svc.key_schedule_deletion(caller=key_admin.caller(), key=key, pending_window_days=7)
    results = race(monkeypatch, keys_delete_expired, "delete_expired_keys", T0 + 7 * DAY, "_claim_one")
    assert sum(r["deleted"] for r in results) == len(keys)
    for key in keys:
        key.refresh_from_db()
        assert key.deleted_at == T0 + 7 * DAY and versions(key) == []
    assert not Alias.objects.filter(key__in=keys).exists()
    events = AuditEvent.objects.filter(event_name="DeleteKey")
    assert events.count() == len(keys) and all(e.error_code == "" for e in events)
