"""The compliance alarm: new HIGH/CRITICAL findings through the alarm notification channels.

Each account gets a built-in alarm (metric ``compliance_findings``, created on
first need) whose state only the compliance evaluation sets: ALARM, with a
notification through the alarm's email addresses and signed webhook, on every
run that opens high or critical findings; OK, silently, once none is open.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.urls import reverse

from audit.services import audit_record
from compliance.models import Finding
from compliance.rules import Severity
from kmsweb.lib.caller import Caller
from kmsweb.lib.public_url import public_url

ALARM_SLUG = "compliance-findings"
ALERT_SEVERITIES = frozenset({Severity.HIGH.value, Severity.CRITICAL.value})


def _compliance_alarm(account_id: str) -> Any:
    """The account's built-in compliance alarm, created on first need (its channels are set on the Alarms page)."""
    from audit.alarm_rules import AlarmSpec
    from audit.models import Alarm, AlarmMetric, Comparison, MissingData
    from audit.services.alarms import alarm_create

    alarm = Alarm.objects.filter(account_id=account_id, builtin=ALARM_SLUG).first()
    if alarm is not None:
        return alarm
    spec = AlarmSpec(
        name="New high or critical compliance findings",
        description="The compliance evaluation opened findings of severity HIGH or CRITICAL. "
        "It is in ALARM while such findings are open; each run that opens new ones notifies.",
        metric=AlarmMetric.COMPLIANCE_FINDINGS,
        period=3600,
        comparison=Comparison.GE,
        threshold=1,
        treat_missing_data=MissingData.IGNORE,
    )
    if Alarm.objects.filter(account_id=account_id, name=spec.name).exists():
        spec.name += " (built-in)"
    return alarm_create(
        caller=Caller.system("evaluate_compliance", account_id=account_id), spec=spec, builtin=ALARM_SLUG
    )


def compliance_alarm_update(*, now: datetime, alerts: Sequence[Finding]) -> None:
    """ALARM with a notification for accounts with new HIGH/CRITICAL findings; OK where none is open.

    Called inside the run's transaction: each transition writes its history row, a
    SetAlarmState audit event and its notifications (sent after the commit).
    """
    from audit.models import Alarm, AlarmHistory, AlarmState
    from audit.services.notifications import notifications_queue

    by_account: dict[str, list[Finding]] = defaultdict(list)
    for f in alerts:
        by_account[f.account_id].append(f)
    quiet = (
        Alarm.objects.filter(builtin=ALARM_SLUG, state=AlarmState.ALARM)
        .exclude(account_id__in=list(by_account))
        .exclude(account_id__in=Finding.objects.open().filter(severity__in=ALERT_SEVERITIES).values("account_id"))
    )
    transitions: list[tuple[Alarm, str, str, dict[str, Any]]] = [
        (alarm, AlarmState.OK, "No high or critical compliance finding is open.", {}) for alarm in quiet
    ]
    for account_id, findings in by_account.items():
        alarm = _compliance_alarm(account_id)
        listed = [
            {
                "findingId": f.pk,
                "ruleId": f.rule_id,
                "severity": f.severity,
                "resourceId": f.resource_id,
                "url": public_url(reverse("compliance:finding_detail", args=[f.pk])),
            }
            for f in findings[:50]
        ]
        rules = sorted({f.rule_id for f in findings})
        reason = f"{len(findings)} new high or critical compliance finding(s): {', '.join(rules)}."
        transitions.append((alarm, AlarmState.ALARM, reason, {"findings": listed, "total": len(findings)}))
    for alarm, state, reason, data in transitions:
        entry = AlarmHistory.objects.create(
            alarm=alarm, timestamp=now, old_state=alarm.state, new_state=state, reason=reason, reason_data=data
        )
        Alarm.objects.filter(pk=alarm.pk).update(
            state=state, state_reason=reason, state_reason_data=data, state_updated_at=now, last_evaluated_at=now
        )
        audit_record(
            caller=Caller.system("evaluate_compliance", account_id=alarm.account_id),
            event_name="SetAlarmState",
            event_source="kmsweb.alarms",
            request_parameters={"AlarmId": alarm.pk, "AlarmName": alarm.name},
            response_elements={"OldState": alarm.state, "NewState": state, "Reason": reason},
            event_time=now,
        )
        alarm.state = state
        if state == AlarmState.ALARM and alarm.actions_enabled and (alarm.emails or alarm.webhook_url):
            notifications_queue(alarm=alarm, transition=entry)
