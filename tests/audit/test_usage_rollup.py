"""Usage roll-ups: exact counts per bucket and dimension, idempotent runs,
the safety lag for events committed out of id order, two workers racing on
PostgreSQL, and the usage charts reading the roll-ups."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection

from audit.models import DAY, HOUR, MINUTE, AuditEvent, JobRun, KeyFirstUse, UsageRollup, UsageWatermark
from audit.selectors import usage_series
from audit.services import audit_record
from audit.services.jobs import job_run
from audit.services.usage import SAFETY_LAG, usage_rollup, usage_rows
from keys.models import Key
from kmsweb.jobs import job_named
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, InvalidState, NotFound
from tests.conftest import Persona

T0 = datetime(2026, 3, 2, 10, 15, 20, tzinfo=UTC)
LATER = timedelta(minutes=5)


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def record(caller: Caller, name: str, *, at: datetime, key: Key | None = None, error: Any = None, **kw: Any) -> None:
    audit_record(caller=caller, event_name=name, keys=[key] if key else [], error=error, event_time=at, **kw)


def rollup(now: datetime) -> dict[str, int]:
    return usage_rollup(caller=Caller.system("rollup_usage"), now=now)


def counts(resolution: int) -> dict[tuple[Any, ...], int]:
    return {
        (r.bucket, r.key_id, r.event_name, r.outcome, r.error_code, r.pending_deletion, r.principal_arn): r.count
        for r in UsageRollup.objects.filter(resolution=resolution)
    }


@pytest.fixture
def traffic(key_admin: Persona, make_persona: Any, make_key: Any, clock: Any) -> dict[str, Any]:
    """A known mix of events in two minutes of two hours of two days."""
    key = make_key()
    other = make_persona("other")
    admin, them = key_admin.caller(), other.caller()
    t1 = datetime(2026, 3, 1, 23, 59, 10, tzinfo=UTC)
    t2 = datetime(2026, 3, 2, 0, 0, 40, tzinfo=UTC)
    for _ in range(3):
        record(admin, "Encrypt", at=t1, key=key)
    record(admin, "Encrypt", at=t1 + timedelta(seconds=30), key=key)
    record(admin, "Decrypt", at=t2, key=key)
    record(them, "Decrypt", at=t2, key=key, error=AccessDenied("no"))
    record(them, "Decrypt", at=t2, key=key, error=AccessDenied("no"))
    record(admin, "Encrypt", at=t2, key=key, error=InvalidState(f"{key.arn} is pending deletion."))
    # A multi-Region primary key waiting for its replicas' deletion counts as pending deletion too.
    record(admin, "Encrypt", at=t2, key=key, error=InvalidState(f"{key.arn} is pending replica deletion."))
    record(admin, "DescribeKey", at=t2, error=NotFound("gone"))
    # Not usage: a job's own event and a dashboard page read.
    record(Caller.system("x"), "RunJob", at=t2, event_source="kmsweb.jobs")
    record(dataclasses.replace(admin, origin="dashboard"), "DescribeKey", at=t2, key=key, read_only=True)
    return {"key": key, "admin": key_admin.principal.arn, "other": other.principal.arn, "t1": t1, "t2": t2}


def _min(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


@pytest.mark.django_db
def test_it_counts_events_per_bucket_and_dimension_exactly(traffic: dict[str, Any]) -> None:
    rollup(T0)
    key, admin, other, t1, t2 = (traffic[n] for n in ("key", "admin", "other", "t1", "t2"))
    k = str(key.id)
    minutes = counts(MINUTE)
    watched = {dims: n for dims, n in minutes.items() if dims[2] in ("Encrypt", "Decrypt", "DescribeKey")}
    assert watched == {
        (_min(t1), k, "Encrypt", "ok", "", False, admin): 4,
        (_min(t2), k, "Decrypt", "ok", "", False, admin): 1,
        (_min(t2), k, "Decrypt", "denied", "AccessDeniedException", False, other): 2,
        (_min(t2), k, "Encrypt", "error", "KMSInvalidStateException", True, admin): 2,
        (_min(t2), "", "DescribeKey", "error", "NotFoundException", False, admin): 1,
    }
    hours = counts(HOUR)
    assert hours[(t1.replace(minute=0, second=0), k, "Encrypt", "ok", "", False, admin)] == 4
    assert hours[(t2.replace(minute=0, second=0), k, "Decrypt", "denied", "AccessDeniedException", False, other)] == 2
    days = counts(DAY)
    assert days[(datetime(2026, 3, 1, tzinfo=UTC), k, "Encrypt", "ok", "", False, admin)] == 4
    assert days[(datetime(2026, 3, 2, tzinfo=UTC), k, "Decrypt", "ok", "", False, admin)] == 1
    for table in (minutes, hours, days):
        assert not any(dims[2] == "RunJob" for dims in table)
        # The dashboard's DescribeKey page read is not usage; the failed API one is.
        assert sum(n for dims, n in table.items() if dims[2] == "DescribeKey") == 1
    # The first successful cryptographic use of the key by each principal.
    assert list(KeyFirstUse.objects.values_list("key_id", "principal_arn", "first_used_at")) == [(k, admin, t1)]


@pytest.mark.django_db
def test_it_is_idempotent_when_run_twice(traffic: dict[str, Any]) -> None:
    first = rollup(T0)
    before = {res: counts(res) for res in (MINUTE, HOUR, DAY)}
    second = rollup(T0)
    assert first["event_ids"] > 0 and second["event_ids"] == 0
    assert {res: counts(res) for res in (MINUTE, HOUR, DAY)} == before
    assert UsageWatermark.objects.get().last_event_id == AuditEvent.objects.order_by("-id").first().id  # type: ignore[union-attr]


@pytest.mark.django_db
def test_it_adds_new_events_to_existing_buckets(traffic: dict[str, Any], key_admin: Persona) -> None:
    rollup(T0)
    key, t1 = traffic["key"], traffic["t1"]
    record(key_admin.caller(), "Encrypt", at=t1, key=key)
    rollup(T0)
    assert counts(MINUTE)[(_min(t1), str(key.id), "Encrypt", "ok", "", False, traffic["admin"])] == 5
    day = datetime(2026, 3, 1, tzinfo=UTC)
    assert counts(DAY)[(day, str(key.id), "Encrypt", "ok", "", False, traffic["admin"])] == 5


@pytest.mark.django_db
def test_it_leaves_events_younger_than_the_safety_lag_for_the_next_run(
    key_admin: Persona, make_key: Any, clock: time_machine.Coordinates
) -> None:
    key = make_key()
    rollup(T0 + LATER)
    young = T0 + LATER - SAFETY_LAG + timedelta(seconds=1)
    record(key_admin.caller(), "Encrypt", at=young, key=key)
    rollup(T0 + LATER)
    assert not UsageRollup.objects.filter(event_name="Encrypt").exists()
    # ...yet readers see it, counted live above the watermark.
    rows = usage_rows(resolution=MINUTE, since=T0, until=T0 + 2 * LATER, key_id=str(key.id))
    assert [(r["event_name"], r["count"]) for r in rows] == [("Encrypt", 1)]
    rollup(young + SAFETY_LAG)
    assert UsageRollup.objects.get(resolution=MINUTE, event_name="Encrypt").count == 1
    rows = usage_rows(resolution=MINUTE, since=T0, until=T0 + 2 * LATER, key_id=str(key.id))
    assert [(r["event_name"], r["count"]) for r in rows] == [("Encrypt", 1)]


@pytest.mark.django_db
def test_it_runs_as_the_rollup_usage_job(traffic: dict[str, Any]) -> None:
    run = job_run("rollup_usage", job_named("rollup_usage").function())
    assert run.outcome == "ok" and run.counts["event_ids"] > 0
    assert JobRun.objects.filter(name="rollup_usage").count() == 1
    assert UsageRollup.objects.filter(resolution=MINUTE, event_name="Decrypt").count() == 2


@pytest.mark.django_db
def test_it_draws_the_same_usage_chart_from_roll_ups_as_from_raw_events(
    key_admin: Persona, make_key: Any, clock: time_machine.Coordinates
) -> None:
    key = make_key()
    caller = key_admin.caller()
    for minutes_ago, name, error in ((50, "Encrypt", None), (50, "Decrypt", None), (20, "Encrypt", AccessDenied("x"))):
        record(caller, name, at=T0 - timedelta(minutes=minutes_ago), key=key, error=error)
    before = {r: usage_series(caller=caller, range_name=r, now=T0) for r in ("hour", "day", "month")}
    rollup(T0)
    assert UsageRollup.objects.exists()
    after = {r: usage_series(caller=caller, range_name=r, now=T0) for r in ("hour", "day", "month")}
    assert after == before
    assert before["hour"]["total"] == 4  # CreateKey, Encrypt, Decrypt, and the denial
    assert sum(ds["data"][-21] for ds in after["hour"]["datasets"] if ds["kind"] == "denied") == 1


# -- two workers on PostgreSQL ------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_counts_each_event_once_with_two_workers_racing(key_admin: Persona, make_key: Any) -> None:
    """Two workers roll up at once: the watermark lock makes the second wait,
    then count nothing twice. The first is held inside its transaction until
    the second is blocked on the lock, so the race really happens."""
    key = make_key()
    t = T0 - timedelta(minutes=3)
    for _ in range(40):
        record(key_admin.caller(), "Encrypt", at=t, key=key)
    UsageWatermark.objects.get_or_create(id=1)
    from audit.services import usage as usage_module

    original = usage_module._rollup_postgresql
    entered = threading.Event()
    release = threading.Event()

    def slow(cursor: Any, low: int, high: int) -> None:
        original(cursor, low, high)
        entered.set()
        release.wait(15)

    usage_module._rollup_postgresql = slow  # type: ignore[assignment]
    results: dict[str, Any] = {}

    def worker(name: str) -> None:
        try:
            results[name] = rollup(T0)
        except Exception as exc:  # pragma: no cover - reported below
            results[name] = exc
        finally:
            connection.close()

    try:
        a = threading.Thread(target=worker, args=("a",))
        a.start()
        assert entered.wait(15)
        b = threading.Thread(target=worker, args=("b",))
        b.start()
        # b blocks on the watermark row: wait until PostgreSQL says so.
        with connection.cursor() as cur:
            for _ in range(300):
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                if cur.fetchone()[0] >= 1:
                    break
                threading.Event().wait(0.05)
        release.set()
        a.join(15)
        b.join(15)
    finally:
        usage_module._rollup_postgresql = original  # type: ignore[assignment]
    assert not isinstance(results["a"], Exception) and not isinstance(results["b"], Exception)
    assert sorted(r["event_ids"] for r in results.values())[0] == 0
    assert UsageRollup.objects.get(resolution=MINUTE, event_name="Encrypt").count == 40
    assert UsageRollup.objects.get(resolution=DAY, event_name="Encrypt").count == 40
    assert KeyFirstUse.objects.count() == 1
