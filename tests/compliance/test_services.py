"""The evaluation job and the suppression services against the database: findings
lifecycle, history, audit rows, suppression with expiry, approver-only
suppression, bad input, the compliance alarm's notifications, and the
debounced trigger."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from audit.models import Alarm, AlarmState, AuditEvent, Notification
from compliance.alarm import ALARM_SLUG
from compliance.models import EvaluationRequest, EvaluationRun, Finding, FindingChange, FindingStatus
from compliance.selectors import finding_get_for
from compliance.services import compliance_evaluate, finding_suppress, finding_unsuppress
from compliance.triggers import evaluation_enqueue
from keys import services as key_services
from keys.models import Key
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, InvalidState, ValidationError
from tests.conftest import OTHER_ACCOUNT, Persona

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
JOB = Caller.system("evaluate_compliance")
ROTATION = "kms-rotation-enabled"
PUBLIC = "kms-key-policy-no-public-access"


def run(at: datetime) -> dict[str, int]:
    with time_machine.travel(at, tick=False):
        return compliance_evaluate(caller=JOB, now=at)


def finding(rule_id: str, key: Key) -> Finding:
    return Finding.objects.get(rule_id=rule_id, resource_id=key.arn)


@pytest.fixture
def key(make_key: Callable[..., Key]) -> Key:
    with time_machine.travel(T0 - timedelta(days=1), tick=False):
        return make_key(description="payments")


@pytest.fixture
def approver(make_persona: Callable[..., Persona]) -> Caller:
    return make_persona("april", policy=None).caller(roles=("approver",), origin="dashboard", mfa_present=True)


@pytest.fixture
def viewer(make_persona: Callable[..., Persona]) -> Caller:
    return make_persona("vera", policy=None).caller(roles=("viewer",), origin="dashboard", mfa_present=True)


def public_policy(account_id: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Root",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {"Sid": "Everyone", "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"},
            ],
        }
    )


def test_it_opens_a_finding_with_history_and_one_audit_event(key: Key) -> None:
    counts = run(T0)
    f = finding(ROTATION, key)
    assert f.status == FindingStatus.NON_COMPLIANT
    assert f.severity == "MEDIUM" and f.key_id == str(key.id) and f.account_id == key.account_id
    assert f.first_seen_at == T0 and f.last_seen_at == T0 and f.resolved_at is None
    assert f.evidence == {"rotationEnabled": False, "keySpec": "SYMMETRIC_DEFAULT"}
    assert "EnableKeyRotation" in f.remediation
    # Compliant verdicts are kept too (scores), without history.
    assert finding(PUBLIC, key).status == FindingStatus.COMPLIANT
    assert [(c.old_status, c.new_status, c.note) for c in f.changes.all()] == [("", "NON_COMPLIANT", "Opened")]
    (event,) = AuditEvent.objects.filter(event_name="EvaluateCompliance")
    assert event.event_source == "kmsweb.compliance" and event.error_code == ""
    opened = [c for c in event.additional_event_data["changes"] if c["resourceId"] == key.arn]
    assert {(c["ruleId"], c["newStatus"]) for c in opened} >= {(ROTATION, "NON_COMPLIANT")}
    assert event.additional_event_data["counts"][ROTATION] == {"evaluated": 1, "nonCompliant": 1}
    assert counts["changes"] == FindingChange.objects.count()
    assert EvaluationRun.objects.count() == 1


def test_it_changes_nothing_when_run_twice_at_one_instant(key: Key) -> None:
    run(T0)
    before = list(Finding.objects.order_by("pk").values())
    assert run(T0)["changes"] == 0
    assert list(Finding.objects.order_by("pk").values()) == before
    assert FindingChange.objects.count() == len([r for r in before if r["status"] == "NON_COMPLIANT"])


def test_it_resolves_a_fixed_finding_and_reopens_it(key: Key, key_admin: Persona) -> None:
    run(T0)
    key_services.key_enable_rotation(caller=key_admin.caller(), key=key)
    run(T0 + timedelta(hours=1))
    f = finding(ROTATION, key)
    assert f.status == FindingStatus.RESOLVED and f.resolved_at == T0 + timedelta(hours=1)
    assert f.last_seen_at == T0  # the last run that found it non-compliant
    key_services.key_disable_rotation(caller=key_admin.caller(), key=Key.objects.get(pk=key.pk))
    run(T0 + timedelta(hours=2))
    f.refresh_from_db()
    assert f.status == FindingStatus.NON_COMPLIANT and f.resolved_at is None
    assert [c.note for c in f.changes.all()] == [
        "Re-opened: non-compliant again",
        "Resolved: the rule now finds the resource compliant",
        "Opened",
    ]


def test_it_resolves_a_finding_whose_key_is_gone(key: Key) -> None:
    run(T0)
    Key.objects.filter(pk=key.pk).update(deleted_at=T0)
    run(T0 + timedelta(hours=1))
    f = finding(ROTATION, key)
    assert f.status == FindingStatus.RESOLVED
    assert f.changes.first().note == "Resolved: the resource left the rule's scope"
    assert not Finding.objects.filter(resource_id=key.arn, status=FindingStatus.COMPLIANT).exists()


def test_an_approver_suppresses_until_expiry_then_the_finding_reopens(key: Key, approver: Caller) -> None:
    run(T0)
    f = finding(ROTATION, key)
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        finding_suppress(
            caller=approver, finding=f, justification="Legacy HSM import, ticket SEC-12", until=T0 + timedelta(days=7)
        )
    f.refresh_from_db()
    assert f.status == FindingStatus.SUPPRESSED and f.suppressed_by == approver.principal_arn
    (event,) = AuditEvent.objects.filter(event_name="SuppressFinding")
    assert event.error_code == "" and event.request_parameters["justification"] == "Legacy HSM import, ticket SEC-12"
    assert event.user_identity["arn"] == approver.principal_arn

    run(T0 + timedelta(days=3))  # still suppressed: seen, not re-opened, and not rewritten
    f.refresh_from_db()
    assert f.status == FindingStatus.SUPPRESSED and f.last_seen_at == T0
    assert finding_get_for(caller=approver, finding_id=f.pk).seen_at == T0 + timedelta(days=3)

    run(T0 + timedelta(days=8))  # the suppression has ended
    f.refresh_from_db()
    assert f.status == FindingStatus.NON_COMPLIANT and f.suppressed_until is None and f.suppression_justification == ""
    assert f.changes.first().note.startswith("Re-opened: the suppression ended at 2026-04-08")
    run_event = AuditEvent.objects.filter(event_name="EvaluateCompliance").order_by("-id").first()
    assert [c["oldStatus"] for c in run_event.additional_event_data["changes"]] == ["SUPPRESSED"]


def test_an_approver_ends_a_suppression_by_hand(key: Key, approver: Caller) -> None:
    run(T0)
    f = finding(ROTATION, key)
    with time_machine.travel(T0, tick=False):
        finding_suppress(caller=approver, finding=f, justification="accepted", until=T0 + timedelta(days=7))
        finding_unsuppress(caller=approver, finding=f)
    f.refresh_from_db()
    assert f.status == FindingStatus.NON_COMPLIANT and f.suppressed_until is None
    assert AuditEvent.objects.filter(event_name="UnsuppressFinding", error_code="").count() == 1
    with pytest.raises(InvalidState):
        finding_unsuppress(caller=approver, finding=f)


def test_a_viewer_cannot_suppress_and_the_refusal_is_audited(key: Key, viewer: Caller) -> None:
    run(T0)
    f = finding(ROTATION, key)
    with pytest.raises(AccessDenied):
        finding_suppress(caller=viewer, finding=f, justification="trust me", until=T0 + timedelta(days=400))
    f.refresh_from_db()
    assert f.status == FindingStatus.NON_COMPLIANT and f.suppressed_until is None
    (event,) = AuditEvent.objects.filter(event_name="SuppressFinding")
    assert event.error_code == "AccessDeniedException" and event.user_identity["arn"] == viewer.principal_arn


@pytest.mark.parametrize(
    ("justification", "until", "message"),
    [
        ("", T0 + timedelta(days=7), "needs a justification"),
        ("   ", T0 + timedelta(days=7), "needs a justification"),
        ("ok", None, "needs an expiry"),
        ("ok", T0 - timedelta(days=1), "must be in the future"),
        ("ok", T0 + timedelta(days=400), "at most one year"),
        ("x" * 2001, T0 + timedelta(days=7), "at most 2000"),
    ],
)
def test_it_refuses_a_malformed_suppression(
    key: Key, approver: Caller, justification: str, until: Any, message: str
) -> None:
    run(T0)
    f = finding(ROTATION, key)
    with time_machine.travel(T0, tick=False), pytest.raises(ValidationError, match=message):
        finding_suppress(caller=approver, finding=f, justification=justification, until=until)
    f.refresh_from_db()
    assert f.status == FindingStatus.NON_COMPLIANT and f.changes.count() == 1
    (event,) = AuditEvent.objects.filter(event_name="SuppressFinding")
    assert event.error_code == "ValidationException"


def test_it_refuses_to_suppress_a_compliant_finding(key: Key, approver: Caller) -> None:
    run(T0)
    with time_machine.travel(T0, tick=False), pytest.raises(InvalidState):
        finding_suppress(caller=approver, finding=finding(PUBLIC, key), justification="x", until=T0 + timedelta(days=1))


def test_a_new_critical_finding_moves_the_compliance_alarm_and_notifies(
    key: Key, key_admin: Persona, approver: Caller
) -> None:
    key_services.key_put_policy(caller=key_admin.caller(), key=key, policy=public_policy(key.account_id))
    run(T0)
    f = finding(PUBLIC, key)
    assert f.status == FindingStatus.NON_COMPLIANT and f.severity == "CRITICAL"
    assert f.evidence["principal"] == "*" and f.evidence["statement"]["sid"] == "Everyone"
    alarm = Alarm.objects.get(account_id=key.account_id, builtin=ALARM_SLUG)
    assert alarm.state == AlarmState.ALARM and PUBLIC in alarm.state_reason
    assert Notification.objects.count() == 0  # no channel configured yet

    # An operator adds an email; the next new critical finding is sent there.
    Alarm.objects.filter(pk=alarm.pk).update(emails=["sec@example.com"])
    other = key_services.key_create(caller=key_admin.caller(), policy=public_policy(key.account_id))
    run(T0 + timedelta(hours=1))
    (note,) = Notification.objects.all()
    assert note.channel == "email" and note.target == "sec@example.com"
    assert [x["resourceId"] for x in note.payload["reasonData"]["findings"]] == [other.arn]
    assert AuditEvent.objects.filter(event_name="SetAlarmState").count() == 2

    # Both keys fixed, and the other high findings (key-admin's kms:* without MFA) accepted: OK again.
    private = public_policy(key.account_id).replace(
        '"Principal": "*"', f'"Principal": {{"AWS": "{key_admin.principal.arn}"}}'
    )
    for k in (key, other):
        key_services.key_put_policy(caller=key_admin.caller(), key=Key.objects.get(pk=k.pk), policy=private)
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        for f in Finding.objects.open().filter(severity__in=["HIGH", "CRITICAL"]).exclude(rule_id=PUBLIC):
            finding_suppress(caller=approver, finding=f, justification="test", until=T0 + timedelta(days=30))
    run(T0 + timedelta(hours=2))
    alarm.refresh_from_db()
    assert alarm.state == AlarmState.OK
    assert Notification.objects.count() == 1  # going back to OK sends nothing


def test_findings_belong_to_the_keys_account(key: Key, outsider: Persona) -> None:
    theirs = key_services.key_create(caller=outsider.caller())
    run(T0)
    assert finding(ROTATION, theirs).account_id == OTHER_ACCOUNT
    assert finding(ROTATION, key).account_id == key.account_id


@pytest.fixture
def broker_ready(settings: Any) -> None:
    """The embedded filesystem broker's folders (``make run`` makes them); Redis needs nothing."""
    for name in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(name)
        if folder:
            os.makedirs(folder, exist_ok=True)


def test_a_burst_of_requests_queues_one_evaluation(key: Key, broker_ready: None) -> None:
    assert [evaluation_enqueue() for _ in range(3)] == [True, False, False]
    assert EvaluationRequest.objects.get(pk=1).pending is True
    run(T0)  # the run clears the flag when it starts
    assert EvaluationRequest.objects.get(pk=1).pending is False
    assert evaluation_enqueue() is True


def test_changes_that_can_alter_an_answer_ask_for_an_evaluation_after_commit(
    key: Key, key_admin: Persona, django_capture_on_commit_callbacks: Any
) -> None:
    caller = key_admin.caller()
    with django_capture_on_commit_callbacks() as callbacks:
        key_services.key_put_policy(caller=caller, key=key, policy=public_policy(key.account_id))
    assert evaluation_enqueue in callbacks
    with django_capture_on_commit_callbacks() as callbacks:
        key_services.key_update_description(caller=caller, key=key, description="no rule reads this")
    assert evaluation_enqueue not in callbacks
    # A refused change asks for nothing.
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(Exception):  # noqa: B017
        key_services.key_put_policy(caller=caller, key=key, policy="not json")
    assert evaluation_enqueue not in callbacks


def test_a_run_costs_the_same_number_of_queries_for_few_or_many_changes(
    make_key: Callable[..., Key], key_admin: Persona, django_assert_max_num_queries: Any
) -> None:
    def resolve_all(count: int, at: datetime) -> int:
        keys = [make_key() for _ in range(count)]
        run(at)
        for k in keys:
            key_services.key_enable_rotation(caller=key_admin.caller(), key=k)
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            run(at + timedelta(minutes=1))
        assert Finding.objects.filter(rule_id=ROTATION, status=FindingStatus.RESOLVED).count() >= count
        return len(queries)

    few = resolve_all(2, T0)
    many = resolve_all(12, T0 + timedelta(hours=1))
    assert many <= few + 2, (few, many)


def test_run_job_evaluates_and_records_the_run(key: Key) -> None:
    from django.core.management import call_command

    from audit.models import JobOutcome, JobRun

    call_command("run_job", "evaluate_compliance")
    assert JobRun.objects.get(name="evaluate_compliance").outcome == JobOutcome.OK
    assert finding(ROTATION, key).status == FindingStatus.NON_COMPLIANT
    assert AuditEvent.objects.filter(event_name="EvaluateCompliance").count() == 1
    assert AuditEvent.objects.filter(event_name="RunJob", request_parameters__jobName="evaluate_compliance").exists()
