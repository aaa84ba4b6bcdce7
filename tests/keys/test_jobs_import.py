"""The expire_imported_material job, with the clock moved by time-machine:
imported material whose ValidTo has come is deleted, the key goes to
PendingImport, and AWS's DeleteExpiredKeyMaterial event is recorded."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command

from audit.models import AuditEvent, JobRun
from audit.services.jobs import job_run
from keys import services as svc
from keys.models import ImportParameters, Key, KeyMaterial, KeyState
from keys.services import jobs
from keys.services.importing import keys_expire_imported_material
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidState
from kmsweb.tasks import JOB_TASKS
from tests.conftest import Persona
from tests.importing import wrap
from tests.keys.test_jobs import race

T0 = datetime(2025, 6, 1, 9, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
THREAD_WAIT_SECONDS = 15


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def imported(caller: Caller, make_key: Callable[..., Key], material: bytes, valid_to: datetime | None) -> Key:
    key = make_key(origin="EXTERNAL")
    params = svc.key_get_parameters_for_import(
        caller=caller, key=key, wrapping_algorithm="RSAES_OAEP_SHA_256", wrapping_key_spec="RSA_2048"
    )
    svc.key_import_material(
        caller=caller,
        key=Key.objects.get(pk=key.pk),
        import_token=params["ImportToken"],
        encrypted_key_material=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", material),
        expiration_model="KEY_MATERIAL_EXPIRES" if valid_to else "KEY_MATERIAL_DOES_NOT_EXPIRE",
        valid_to=valid_to,
    )
    return Key.objects.select_related("current_material").get(pk=key.pk)


def expire(clock: time_machine.Coordinates, at: datetime) -> JobRun:
    clock.move_to(at)
    return job_run("expire_imported_material", keys_expire_imported_material)


@pytest.mark.django_db
def test_it_deletes_material_exactly_at_valid_to_and_reimport_brings_old_ciphertext_back(
    clock: time_machine.Coordinates, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    admin = key_admin.caller()
    material = os.urandom(32)
    key = imported(admin, make_key, material, T0 + 10 * DAY)
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"before expiry").ciphertext

    early = expire(clock, T0 + 10 * DAY - SECOND)
    assert early.counts == {"expired": 0, "skipped": 0, "parameters_removed": 1}  # the 24 h parameters
    assert Key.objects.get(pk=key.pk).state == KeyState.ENABLED

    mark = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    due = expire(clock, T0 + 10 * DAY)
    assert due.counts == {"expired": 1, "skipped": 0, "parameters_removed": 0}
    key = Key.objects.select_related("current_material").get(pk=key.pk)
    assert (key.state, key.expiration_model, key.valid_to) == (KeyState.PENDING_IMPORT, "", None)
    row = KeyMaterial.objects.get(key=key)
    assert bytes(row.wrapped) == b"" and row.destroyed_at == T0 + 10 * DAY
    meta = svc.key_describe_metadata(key)
    assert meta["KeyState"] == "PendingImport" and "ValidTo" not in meta

    events = list(AuditEvent.objects.filter(id__gt=mark).exclude(event_name="RunJob"))
    assert [(e.event_name, e.event_type, e.error_code) for e in events] == [
        ("DeleteExpiredKeyMaterial", "AwsServiceEvent", "")
    ]
    assert events[0].user_identity["type"] == "AWSService"
    assert [r["ARN"] for r in events[0].resources] == [key.arn]
    assert events[0].additional_event_data == {"keyMaterialId": row.material_id}

    with pytest.raises(InvalidState):
        svc.key_decrypt(caller=admin, ciphertext=blob)

    again = expire(clock, T0 + 11 * DAY)
    assert again.counts == {"expired": 0, "skipped": 0, "parameters_removed": 0}

    params = svc.key_get_parameters_for_import(
        caller=admin, key=key, wrapping_algorithm="RSA_AES_KEY_WRAP_SHA_256", wrapping_key_spec="RSA_2048"
    )
    svc.key_import_material(
        caller=admin,
        key=key,
        import_token=params["ImportToken"],
        encrypted_key_material=wrap(params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256", material),
        expiration_model="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    assert svc.key_decrypt(caller=admin, ciphertext=blob).plaintext == b"before expiry"
    assert expire(clock, T0 + 400 * DAY).counts["expired"] == 0


@pytest.mark.django_db
def test_it_leaves_material_that_does_not_expire_and_keeps_pending_deletion(
    clock: time_machine.Coordinates, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    admin = key_admin.caller()
    forever = imported(admin, make_key, os.urandom(32), None)
    doomed = imported(admin, make_key, os.urandom(32), T0 + DAY)
    svc.key_schedule_deletion(caller=admin, key=doomed, pending_window_days=30)

    run = expire(clock, T0 + 2 * DAY)
    assert run.counts["expired"] == 1
    assert Key.objects.get(pk=forever.pk).state == KeyState.ENABLED
    assert Key.objects.get(pk=doomed.pk).state == KeyState.PENDING_DELETION
    assert bytes(KeyMaterial.objects.get(key=doomed).wrapped) == b""
    assert bytes(KeyMaterial.objects.get(key=forever).wrapped) != b""


@pytest.mark.django_db
def test_it_runs_from_the_command_line_and_as_the_celery_task(
    clock: time_machine.Coordinates, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    admin = key_admin.caller()
    imported(admin, make_key, os.urandom(32), T0 + DAY)
    imported(admin, make_key, os.urandom(32), T0 + 3 * DAY)
    clock.move_to(T0 + 2 * DAY)
    out = StringIO()
    call_command("run_job", "expire_imported_material", stdout=out)
    assert out.getvalue().strip() == "expire_imported_material: expired=1, skipped=0, parameters_removed=2"
    clock.move_to(T0 + 3 * DAY)
    assert JOB_TASKS["expire_imported_material"]() == {"expired": 1, "skipped": 0, "parameters_removed": 0}
    assert list(JobRun.objects.order_by("started_at").values_list("name", "outcome")) == [
        ("expire_imported_material", "ok"),
        ("expire_imported_material", "ok"),
    ]
    assert not ImportParameters.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_expires_each_key_once_with_two_workers_racing(
    key_admin: Persona, make_key: Callable[..., Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers run the expiry job at the same instant; the first to claim a
    key holds its lock until the other has skipped it, so the test fails if
    the job stops claiming with SKIP LOCKED."""
    admin = key_admin.caller()
    with time_machine.travel(T0, tick=False):
        keys = [imported(admin, make_key, os.urandom(32), T0 + DAY) for _ in range(4)]
    results = race(monkeypatch, keys_expire_imported_material, "expire_imported_material", T0 + 2 * DAY, "_claim_one")
    assert sum(r["expired"] for r in results) == len(keys)
    assert AuditEvent.objects.filter(event_name="DeleteExpiredKeyMaterial").count() == len(keys)
    assert set(Key.objects.filter(pk__in=[k.pk for k in keys]).values_list("state", flat=True)) == {"PendingImport"}


@pytest.mark.django_db
def test_it_removes_import_parameters_when_the_key_is_deleted(
    clock: time_machine.Coordinates, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    admin = key_admin.caller()
    key = make_key(origin="EXTERNAL")  # never imported: deletable from PendingImport
    svc.key_get_parameters_for_import(
        caller=admin, key=key, wrapping_algorithm="RSAES_OAEP_SHA_1", wrapping_key_spec="RSA_2048"
    )
    svc.key_schedule_deletion(caller=admin, key=key, pending_window_days=7)
    clock.move_to(T0 + 7 * DAY)
    assert job_run("delete_expired_keys", jobs.keys_delete_expired).counts["deleted"] == 1
    assert not ImportParameters.objects.filter(key=key).exists()
    assert Key.objects.get(pk=key.pk).deleted_at == T0 + 7 * DAY


@pytest.mark.django_db
def test_it_expires_each_material_at_its_own_valid_to(
    clock: time_machine.Coordinates, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    admin = key_admin.caller()
    key = imported(admin, make_key, os.urandom(32), None)
    params = svc.key_get_parameters_for_import(
        caller=admin, key=key, wrapping_algorithm="RSAES_OAEP_SHA_256", wrapping_key_spec="RSA_2048"
    )
    svc.key_import_material(
        caller=admin,
        key=key,
        import_token=params["ImportToken"],
        encrypted_key_material=wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32)),
        import_type="NEW_KEY_MATERIAL",
        expiration_model="KEY_MATERIAL_EXPIRES",
        valid_to=T0 + 5 * DAY,
    )
    # Material pending rotation that expires is removed; the key keeps its state and its current material.
    assert expire(clock, T0 + 5 * DAY).counts["expired"] == 1
    key = Key.objects.select_related("current_material").get(pk=key.pk)
    assert key.state == KeyState.ENABLED and KeyMaterial.objects.filter(key=key).count() == 1
    assert key.current_material is not None and key.current_material.destroyed_at is None
    event = AuditEvent.objects.filter(event_name="DeleteExpiredKeyMaterial").get()
    assert event.key_id == str(key.id)
    assert expire(clock, T0 + 6 * DAY).counts["expired"] == 0
