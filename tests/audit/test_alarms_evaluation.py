"""Alarm evaluation: every state transition under each missing-data treatment,
M of N, the comparisons, CloudWatch-style reasons, the built-in alarms firing,
and the evaluate_alarms job. Time is moved with time-machine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from audit.alarm_rules import AlarmSpec
from audit.models import Alarm, AlarmHistory, AlarmSetup, AlarmState, AuditEvent, JobRun, Notification
from audit.services import audit_record
from audit.services.alarm_evaluation import alarms_evaluate, breaches, decide
from audit.services.alarms import BUILTINS, alarm_create, alarms_ensure_builtin
from audit.services.jobs import job_run
from audit.services.usage import usage_rollup
from keys import services as key_services
from keys.models import Key
from kmsweb.jobs import job_named
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, KmsError
from policies.services import FULL_ACCESS_POLICY
from tests.conftest import Persona

T = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T, tick=False) as traveller:
        yield traveller


@pytest.fixture
def system(key_admin: Persona) -> Caller:
    return Caller.system("tests", account_id=key_admin.account_id)


def make_alarm(system: Caller, **overrides: Any) -> Alarm:
    values: dict[str, Any] = {
        "name": "requests",
        "metric": "requests",
        "period": 60,
        "comparison": "GreaterThanOrEqualToThreshold",
        "threshold": 2,
        "evaluation_periods": 3,
        "datapoints_to_alarm": 2,
        "treat_missing_data": "missing",
        "operation": "Encrypt",
    }
    values.update(overrides)
    return alarm_create(caller=system, spec=AlarmSpec(**values))


def encrypts(persona: Persona, at: datetime, n: int, key: Key | None = None) -> None:
    for _ in range(n):
        audit_record(caller=persona.caller(), event_name="Encrypt", keys=[key] if key else [], event_time=at)


def evaluate(alarm: Alarm, now: datetime) -> Alarm:
    alarms_evaluate(caller=Caller.system("evaluate_alarms"), now=now, alarm_ids=[alarm.pk])
    alarm.refresh_from_db()
    return alarm


def transitions(alarm: Alarm) -> list[tuple[str, str]]:
    return [(h.old_state, h.new_state) for h in AlarmHistory.objects.filter(alarm=alarm).order_by("timestamp", "id")]


# -- the comparison table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("comparison", "value", "threshold", "expected"),
    [
        ("GreaterThanOrEqualToThreshold", 2, 2, True),
        ("GreaterThanOrEqualToThreshold", 1, 2, False),
        ("GreaterThanThreshold", 2, 2, False),
        ("GreaterThanThreshold", 3, 2, True),
        ("LessThanThreshold", 1, 2, True),
        ("LessThanThreshold", 2, 2, False),
        ("LessThanOrEqualToThreshold", 2, 2, True),
        ("LessThanOrEqualToThreshold", 3, 2, False),
    ],
)
def test_it_compares_a_datapoint_with_the_threshold(comparison: str, value: float, threshold: float, expected: bool):
    assert breaches(comparison, value, threshold) is expected


@pytest.mark.parametrize(
    ("treat", "values", "current", "expected"),
    [
        # M=2 of N=3, threshold >= 2. None is a missing datapoint.
        ("missing", [None, None, None], "OK", "INSUFFICIENT_DATA"),
        ("ignore", [None, None, None], "ALARM", "ALARM"),
        ("ignore", [None, None, None], "OK", "OK"),
        ("breaching", [None, None, None], "OK", "ALARM"),
        ("notBreaching", [None, None, None], "ALARM", "OK"),
        ("missing", [5, None, 1], "OK", "OK"),
        ("missing", [5, None, 3], "OK", "ALARM"),
        ("ignore", [None, 1, 7], "OK", "OK"),
        ("breaching", [1, None, 1], "OK", "OK"),
        ("breaching", [1, None, None], "OK", "ALARM"),
        ("notBreaching", [5, None, None], "OK", "OK"),
        ("notBreaching", [5, None, 2], "OK", "ALARM"),
        ("missing", [1, 1, 1], "ALARM", "OK"),
        ("missing", [2, 1, 2], "OK", "ALARM"),
    ],
)
def test_it_decides_m_of_n_with_each_missing_data_treatment(
    treat: str, values: list[float | None], current: str, expected: str
) -> None:
    alarm = Alarm(
        pk=1,
        metric="requests",
        period=60,
        comparison="GreaterThanOrEqualToThreshold",
        threshold=2,
        evaluation_periods=3,
        datapoints_to_alarm=2,
        treat_missing_data=treat,
        state=current,
        state_reason="before",
    )
    starts = [int(T.timestamp()) + 60 * i for i in range(3)]
    assert decide(alarm, starts, values, T + 3 * MIN).state == expected


# -- transitions through the database -----------------------------------------------------------


@pytest.mark.django_db
def test_it_goes_through_every_state_with_missing_data_treated_as_missing(
    key_admin: Persona, system: Caller, clock: time_machine.Coordinates
) -> None:
    alarm = make_alarm(system)
    assert alarm.state == AlarmState.INSUFFICIENT_DATA
    assert evaluate(alarm, T + 3 * MIN + timedelta(seconds=5)).state == AlarmState.INSUFFICIENT_DATA
    assert transitions(alarm) == []
    encrypts(key_admin, T + timedelta(seconds=10), 2)
    encrypts(key_admin, T + MIN + timedelta(seconds=30), 3)
    encrypts(key_admin, T + 2 * MIN, 1)
    alarm = evaluate(alarm, T + 3 * MIN + timedelta(seconds=5))
    assert alarm.state == AlarmState.ALARM
    assert alarm.state_reason == (
        "Threshold Crossed: 2 out of the last 3 datapoints [1.0 (2026-03-02T10:02:00Z), 3.0 (2026-03-02T10:01:00Z), "
        "2.0 (2026-03-02T10:00:00Z)] were greater than or equal to the threshold (2.0) (minimum 2 datapoints for "
        "OK -> ALARM transition)."
    )
    assert [p["value"] for p in alarm.state_reason_data["evaluatedDatapoints"]] == [2, 3, 1]
    # Idempotent: evaluating again at the same instant changes nothing.
    evaluate(alarm, T + 3 * MIN + timedelta(seconds=20))
    assert transitions(alarm) == [("INSUFFICIENT_DATA", "ALARM")]
    # Three quiet minutes later, every datapoint is missing.
    alarm = evaluate(alarm, T + 6 * MIN + timedelta(seconds=5))
    assert alarm.state == AlarmState.INSUFFICIENT_DATA
    assert alarm.state_reason.startswith("Insufficient Data: 3 datapoints were unknown")
    encrypts(key_admin, T + 6 * MIN, 1)
    alarm = evaluate(alarm, T + 7 * MIN + timedelta(seconds=5))
    assert alarm.state == AlarmState.OK
    assert transitions(alarm) == [
        ("INSUFFICIENT_DATA", "ALARM"),
        ("ALARM", "INSUFFICIENT_DATA"),
        ("INSUFFICIENT_DATA", "OK"),
    ]
    # Each transition is on the audit trail, by the system, as SetAlarmState.
    changes = AuditEvent.objects.filter(event_name="SetAlarmState", event_source="kmsweb.alarms").order_by("id")
    assert [(e.response_elements["oldState"], e.response_elements["newState"]) for e in changes] == transitions(alarm)


@pytest.mark.django_db
def test_it_keeps_its_state_when_data_is_missing_and_treated_as_ignore(
    key_admin: Persona, system: Caller, clock: time_machine.Coordinates
) -> None:
    alarm = make_alarm(system, treat_missing_data="ignore", evaluation_periods=1, datapoints_to_alarm=1)
    encrypts(key_admin, T, 2)
    assert evaluate(alarm, T + MIN).state == AlarmState.ALARM
    assert evaluate(alarm, T + 10 * MIN).state == AlarmState.ALARM
    encrypts(key_admin, T + 10 * MIN, 1)
    assert evaluate(alarm, T + 11 * MIN).state == AlarmState.OK
    assert evaluate(alarm, T + 30 * MIN).state == AlarmState.OK
    assert transitions(alarm) == [("INSUFFICIENT_DATA", "ALARM"), ("ALARM", "OK")]


@pytest.mark.django_db
def test_it_alarms_on_missing_data_treated_as_breaching(
    key_admin: Persona, system: Caller, clock: time_machine.Coordinates
) -> None:
    alarm = make_alarm(system, treat_missing_data="breaching")
    alarm = evaluate(alarm, T + 3 * MIN)
    assert alarm.state == AlarmState.ALARM
    assert alarm.state_reason == (
        "Threshold Crossed: no datapoints were received for 3 periods and 3 missing datapoints were treated as "
        "[Breaching]."
    )
    encrypts(key_admin, T + 3 * MIN, 1)
    encrypts(key_admin, T + 4 * MIN, 1)
    # One missing (breaching) and two values under the threshold: 1 of 3 breach, under M=2.
    alarm = evaluate(alarm, T + 5 * MIN)
    assert alarm.state == AlarmState.OK
    assert alarm.state_reason.endswith("; 1 missing datapoint was treated as [Breaching].")
    assert transitions(alarm) == [("INSUFFICIENT_DATA", "ALARM"), ("ALARM", "OK")]


@pytest.mark.django_db
def test_it_stays_ok_on_missing_data_treated_as_not_breaching_until_m_of_n_breach(
    key_admin: Persona, system: Caller, clock: time_machine.Coordinates
) -> None:
    alarm = make_alarm(system, treat_missing_data="notBreaching")
    assert evaluate(alarm, T + 3 * MIN).state == AlarmState.OK
    encrypts(key_admin, T + 3 * MIN, 5)
    assert evaluate(alarm, T + 4 * MIN).state == AlarmState.OK  # 1 of 3 breach; M is 2
    encrypts(key_admin, T + 4 * MIN, 2)
    assert evaluate(alarm, T + 5 * MIN).state == AlarmState.ALARM
    assert evaluate(alarm, T + 8 * MIN).state == AlarmState.OK
    assert transitions(alarm) == [("INSUFFICIENT_DATA", "OK"), ("OK", "ALARM"), ("ALARM", "OK")]


@pytest.mark.django_db
def test_it_counts_only_what_the_filters_match(
    key_admin: Persona, make_persona: Any, make_key: Any, system: Caller, clock: time_machine.Coordinates
) -> None:
    key, other_key = make_key(), make_key()
    other = make_persona("other")
    alarm = make_alarm(
        system,
        evaluation_periods=1,
        datapoints_to_alarm=1,
        key_id=str(key.id),
        principal_arn=other.principal.arn,
        metric="denials",
        operation="",
        threshold=2,
    )
    denied = AccessDenied("no")
    for who, k, error in (
        (other, key, denied),
        (key_admin, key, denied),  # another principal
        (other, other_key, denied),  # another key
        (other, key, None),  # not a denial
    ):
        audit_record(caller=who.caller(), event_name="Decrypt", keys=[k], error=error, event_time=T)
    assert evaluate(alarm, T + MIN).state == AlarmState.OK
    audit_record(
        caller=other.caller(), event_name="Decrypt", keys=[key], error=denied, event_time=T + timedelta(seconds=5)
    )
    assert evaluate(alarm, T + MIN).state == AlarmState.ALARM


@pytest.mark.django_db
def test_it_reads_the_same_datapoints_before_and_after_the_roll_up(
    key_admin: Persona, system: Caller, clock: time_machine.Coordinates
) -> None:
    alarm = make_alarm(system, period=3600, evaluation_periods=2, datapoints_to_alarm=2, threshold=3)
    encrypts(key_admin, T + 5 * MIN, 3)
    encrypts(key_admin, T + 70 * MIN, 4)
    usage_rollup(caller=Caller.system("rollup_usage"), now=T + 100 * MIN)
    assert evaluate(alarm, T + 2 * 60 * MIN + MIN).state == AlarmState.ALARM
    assert [p["value"] for p in alarm.state_reason_data["evaluatedDatapoints"]] == [3, 4]


# -- built-in alarms ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_creates_the_built_in_alarms_once_per_account(key_admin: Persona, outsider: Persona) -> None:
    made = alarms_ensure_builtin()
    assert made == 2 * len(BUILTINS)
    assert set(AlarmSetup.objects.values_list("account_id", flat=True)) == {key_admin.account_id, outsider.account_id}
    mine = Alarm.objects.filter(account_id=key_admin.account_id)
    assert sorted(mine.values_list("builtin", flat=True)) == sorted(b.slug for b in BUILTINS)
    assert AuditEvent.objects.filter(event_name="CreateAlarm", recipient_account_id=key_admin.account_id).count() == 4
    # A deleted built-in stays deleted.
    mine.filter(builtin="access-denied-spike").delete()
    assert alarms_ensure_builtin() == 0
    assert mine.count() == len(BUILTINS) - 1


@pytest.mark.django_db
def test_it_fires_the_built_in_alarms(
    key_admin: Persona, make_persona: Any, make_key: Any, clock: time_machine.Coordinates
) -> None:
    admin = key_admin.caller()
    key = make_key()
    alarms_evaluate(caller=Caller.system("evaluate_alarms"), now=T)
    # Created on the first run, and OK at once: no data is "not breaching" for them.
    assert {a.state for a in Alarm.objects.filter(account_id=key_admin.account_id)} == {AlarmState.OK}

    newcomer = make_persona("newcomer", policy=FULL_ACCESS_POLICY)
    clock.move_to(T + MIN + timedelta(seconds=10))
    key_services.key_encrypt(caller=newcomer.caller(), key=key, plaintext=b"hello")
    key_services.key_schedule_deletion(caller=admin, key=key, pending_window_days=7)
    with pytest.raises(KmsError):
        key_services.key_encrypt(caller=admin, key=Key.objects.get(pk=key.pk), plaintext=b"x")
    for _ in range(10):
        audit_record(caller=newcomer.caller(), event_name="Decrypt", keys=[key], error=AccessDenied("no"))
    clock.move_to(T + 2 * MIN + timedelta(seconds=3))
    alarms_evaluate(caller=Caller.system("evaluate_alarms"), now=T + 2 * MIN + timedelta(seconds=3))
    states = {a.builtin: a.state for a in Alarm.objects.filter(account_id=key_admin.account_id)}
    assert states == {b.slug: AlarmState.ALARM for b in BUILTINS}
    pending = Alarm.objects.get(account_id=key_admin.account_id, builtin="pending-deletion-use")
    reason = pending.state_reason
    assert "1 out of the last 1 datapoint [1.0 (2026-03-02T10:01:00Z)] was greater than or equal" in reason
    # No addresses or webhooks configured on built-ins: the banner is their action.
    assert Notification.objects.count() == 0
    # The next quiet minute brings the one-minute alarms back to OK (missing
    # data is not breaching); the denials stay in the spike's 5-minute period.
    alarms_evaluate(caller=Caller.system("evaluate_alarms"), now=T + 3 * MIN + timedelta(seconds=3))
    states = {a.builtin: a.state for a in Alarm.objects.filter(account_id=key_admin.account_id)}
    assert states == {b.slug: AlarmState.ALARM if b.slug == "access-denied-spike" else AlarmState.OK for b in BUILTINS}
    alarms_evaluate(caller=Caller.system("evaluate_alarms"), now=T + 7 * MIN)
    assert {a.state for a in Alarm.objects.filter(account_id=key_admin.account_id)} == {AlarmState.OK}


@pytest.mark.django_db
def test_it_runs_as_the_evaluate_alarms_job(key_admin: Persona, clock: time_machine.Coordinates) -> None:
    run = job_run("evaluate_alarms", job_named("evaluate_alarms").function())
    assert run.outcome == "ok"
    # Created, then evaluated at once: INSUFFICIENT_DATA -> OK for each.
    assert run.counts == {"alarms": len(BUILTINS), "transitions": len(BUILTINS), "builtins_created": len(BUILTINS)}
    assert JobRun.objects.filter(name="evaluate_alarms").count() == 1


@pytest.mark.django_db
def test_it_lists_alarm_changes_but_not_alarm_page_reads_in_the_audit_report(
    key_admin: Persona, system: Caller, clock: time_machine.Coordinates
) -> None:
    from audit.filters import AuditFilter
    from audit.selectors import report_data
    from audit.services.alarms import alarms_describe

    alarm = make_alarm(system, treat_missing_data="breaching")
    evaluate(alarm, T + 3 * MIN)
    alarms_describe(caller=system)
    flt, _ = AuditFilter.parse({})
    report = report_data(caller=system, flt=flt, events=AuditEvent.objects.all(), now=T + 4 * MIN)
    section = next(s for s in report.sections if s.title == "Alarms")
    assert [row[2] for row in section.rows] == ["CreateAlarm", "SetAlarmState"]
    assert [row[1] for row in section.rows] == ["requests", "requests"]  # the alarm's name
    assert section.rows[1][3].startswith("INSUFFICIENT_DATA → ALARM: Threshold Crossed")
    assert AuditEvent.objects.filter(event_name="DescribeAlarms").count() == 1


@pytest.mark.django_db
def test_it_deletes_a_built_in_alarm_only_with_the_key_administrators_right(
    key_admin: Persona, make_persona: Any, system: Caller
) -> None:
    import json

    from audit.services.alarms import alarm_delete

    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["kmsweb:DeleteAlarm", "kmsweb:DescribeAlarms"], "Resource": "*"}],
    }
    ops = make_persona("ops", policy=json.dumps(policy))
    alarms_ensure_builtin(account_ids=[key_admin.account_id])
    builtin = Alarm.objects.get(account_id=key_admin.account_id, builtin="new-principal-key-use")
    custom = make_alarm(system)
    with pytest.raises(AccessDenied):
        alarm_delete(caller=ops.caller(), alarm=builtin)
    assert Alarm.objects.filter(pk=builtin.pk).exists()
    alarm_delete(caller=ops.caller(), alarm=custom)
    assert not Alarm.objects.filter(pk=custom.pk).exists()
    # The key administrator role holds kmsweb:DeleteBuiltInAlarm.
    alarm_delete(caller=key_admin.caller(roles=("key-admin",)), alarm=builtin)
    assert not Alarm.objects.filter(pk=builtin.pk).exists()
    outcomes = AuditEvent.objects.filter(event_name="DeleteAlarm").order_by("id").values_list("error_code", flat=True)
    assert list(outcomes) == ["AccessDeniedException", "", ""]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_records_each_transition_once_with_two_evaluators_racing(key_admin: Persona, system: Caller) -> None:
    """Two evaluate_alarms runs at the same instant: the conditional update on
    the old state lets one record each transition; the other finds it done."""
    import threading

    from django.db import connection

    alarms = [make_alarm(system, name=f"racing {i}", treat_missing_data="breaching") for i in range(20)]
    now = T + 3 * MIN
    start = threading.Barrier(2)
    results: dict[str, Any] = {}

    def worker(name: str) -> None:
        try:
            start.wait(15)
            results[name] = alarms_evaluate(
                caller=Caller.system("evaluate_alarms"), now=now, alarm_ids=[a.pk for a in alarms]
            )
        except Exception as exc:  # pragma: no cover - reported below
            results[name] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(isinstance(r, dict) for r in results.values()), results
    assert sum(r["transitions"] for r in results.values()) == len(alarms)
    assert AlarmHistory.objects.count() == len(alarms)
    assert AuditEvent.objects.filter(event_name="SetAlarmState").count() == len(alarms)
    assert set(Alarm.objects.values_list("state", flat=True)) == {AlarmState.ALARM}
