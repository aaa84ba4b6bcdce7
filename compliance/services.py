"""Compliance services: the evaluation job, suppressing findings, and the debounced trigger.

``compliance_evaluate`` loads one snapshot, runs every rule, and writes what
changed in one transaction: new findings, status changes (each with a
``FindingChange`` history row), an ``EvaluationRun`` with per-rule counts,
and one EvaluateCompliance audit event listing the changes. New findings of
severity HIGH or CRITICAL move the account's compliance alarm and go out
through its notification channels (email, signed webhook).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse

from audit.services import audit_record, audited
from compliance.models import EvaluationRequest, EvaluationRun, Finding, FindingChange, FindingStatus
from compliance.rules import RULES, Result, Rule, Severity
from compliance.snapshot import snapshot_load
from kmsweb.lib import clock
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidState, ValidationError
from policies.authorization import authorize

logger = logging.getLogger(__name__)

EVENT_SOURCE = "kmsweb.compliance"
ALARM_SLUG = "compliance-findings"
ALERT_SEVERITIES = frozenset({Severity.HIGH.value, Severity.CRITICAL.value})
# The audit event of a run lists this many changes; the history table keeps all of them.
AUDITED_CHANGES = 500
MAX_SUPPRESSION = timedelta(days=366)
MAX_JUSTIFICATION = 2000
_BATCH = 2000
_ACTIVE = (FindingStatus.NON_COMPLIANT, FindingStatus.SUPPRESSED)


@dataclass
class _Change:
    finding: Finding
    old: str
    new: str
    note: str


def _severity(rule: Rule, result: Result) -> str:
    return (result.severity or rule.severity).value


def _judge(
    row: Finding | None, rule: Rule, result: Result, now: datetime
) -> tuple[Finding | None, _Change | None, str]:
    """Apply one verdict to the stored finding: (the row, the change if any, what to write).

    What to write: "new" (insert), "dirty" (update its fields), "seen" (only
    ``last_seen_at``), "" (nothing).
    """
    severity = _severity(rule, result)
    evidence = dict(result.evidence)
    if row is None:
        status = FindingStatus.COMPLIANT if result.compliant else FindingStatus.NON_COMPLIANT
        row = Finding(
            account_id=result.account_id,
            rule_id=rule.id,
            resource_kind=rule.resource_kind.value,
            resource_id=result.resource_id,
            key_id=result.key_id,
            principal_arn=result.principal_arn,
            severity=severity,
            status=status,
            first_seen_at=now,
            last_seen_at=None if result.compliant else now,
            evidence=evidence,
            remediation=rule.remediation,
            updated_at=now,
        )
        change = None if result.compliant else _Change(row, "", status, "Opened")
        return row, change, "new"
    old = row.status
    suppression_live = old == FindingStatus.SUPPRESSED and row.suppressed_until and row.suppressed_until > now
    if result.compliant:
        if old in _ACTIVE:
            row.status, row.resolved_at, row.updated_at = FindingStatus.RESOLVED, now, now
            _clear_suppression(row)
            return row, _Change(row, old, row.status, "Resolved: the rule now finds the resource compliant"), "dirty"
        return None, None, ""
    # Non-compliant.
    changed = row.evidence != evidence or row.severity != severity or row.principal_arn != result.principal_arn
    row.evidence, row.severity, row.principal_arn, row.last_seen_at = evidence, severity, result.principal_arn, now
    if old == FindingStatus.NON_COMPLIANT or suppression_live:
        if changed:
            row.updated_at = now
            return row, None, "dirty"
        return row, None, "seen"
    if old == FindingStatus.SUPPRESSED:
        note = f"Re-opened: the suppression ended at {row.suppressed_until:%Y-%m-%d %H:%M} UTC"
        _clear_suppression(row)
    elif old == FindingStatus.RESOLVED:
        note = "Re-opened: non-compliant again"
    else:
        note = "Opened"
        row.first_seen_at = now
    row.status, row.resolved_at, row.updated_at = FindingStatus.NON_COMPLIANT, None, now
    return row, _Change(row, old, row.status, note), "dirty"


def _clear_suppression(row: Finding) -> None:
    row.suppressed_until, row.suppressed_by, row.suppression_justification = None, "", ""


_FIELDS = [
    "status",
    "severity",
    "evidence",
    "principal_arn",
    "last_seen_at",
    "resolved_at",
    "first_seen_at",
    "suppressed_until",
    "suppressed_by",
    "suppression_justification",
    "updated_at",
]


def _lock_run() -> None:
    # Two runs (beat and a trigger) write one after the other; each diffs against what the other wrote.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('kmsweb.compliance.evaluate'))")


def compliance_evaluate(*, caller: Caller, now: datetime) -> dict[str, int]:
    """The ``evaluate_compliance`` job: judge every resource with every rule and record what changed.

    Idempotent: a second run at the same instant changes nothing. The writes
    of a run commit together with its EvaluateCompliance audit event.
    """
    started = time.monotonic()
    EvaluationRequest.objects.filter(pk=1, pending=True).update(pending=False)
    snapshot = snapshot_load(now=now)
    verdicts: list[tuple[Rule, Result]] = []
    counts: dict[str, dict[str, int]] = {}
    for rule in RULES.values():
        evaluated = failing = 0
        for result in rule.evaluate(snapshot):
            verdicts.append((rule, result))
            evaluated += 1
            failing += not result.compliant
        counts[rule.id] = {"evaluated": evaluated, "nonCompliant": failing}

    with transaction.atomic():
        _lock_run()
        existing: dict[tuple[str, str], Finding] = {
            (f.rule_id, f.resource_id): f
            # Every field bulk_update writes is loaded: a deferred one would cost a query per row.
            for f in Finding.objects.defer("remediation").iterator(chunk_size=10000)
        }
        new_rows: list[Finding] = []
        dirty: list[Finding] = []
        touched: list[int] = []
        changes: list[_Change] = []
        seen: set[tuple[str, str]] = set()
        for rule, result in verdicts:
            ident = (rule.id, result.resource_id)
            seen.add(ident)
            row, change, write = _judge(existing.get(ident), rule, result, now)
            if write == "new":
                new_rows.append(row)  # type: ignore[arg-type]
            elif write == "dirty":
                dirty.append(row)  # type: ignore[arg-type]
            elif write == "seen":
                touched.append(row.pk)  # type: ignore[union-attr]
            if change is not None:
                changes.append(change)
        gone: list[int] = []
        for ident, row in existing.items():
            if ident in seen:
                continue
            if row.status in _ACTIVE:
                old = row.status
                row.status, row.resolved_at, row.updated_at = FindingStatus.RESOLVED, now, now
                _clear_suppression(row)
                dirty.append(row)
                changes.append(_Change(row, old, row.status, "Resolved: the resource left the rule's scope"))
            elif row.status == FindingStatus.COMPLIANT:
                gone.append(row.pk)
        Finding.objects.bulk_create(new_rows, batch_size=_BATCH)
        Finding.objects.bulk_update(dirty, _FIELDS, batch_size=_BATCH)
        for start in range(0, len(touched), _BATCH):
            Finding.objects.filter(pk__in=touched[start : start + _BATCH]).update(last_seen_at=now)
        for start in range(0, len(gone), _BATCH):
            Finding.objects.filter(pk__in=gone[start : start + _BATCH]).delete()
        FindingChange.objects.bulk_create(
            [
                FindingChange(
                    finding=c.finding,
                    at=now,
                    old_status=c.old,
                    new_status=c.new,
                    actor=caller.principal_arn,
                    note=c.note,
                )
                for c in changes
            ],
            batch_size=_BATCH,
        )
        elapsed = int((time.monotonic() - started) * 1000)
        EvaluationRun.objects.create(
            started_at=now, finished_at=clock.now(), duration_ms=elapsed, counts=counts, changes=len(changes)
        )
        summary = {
            "rules": len(counts),
            "evaluated": sum(c["evaluated"] for c in counts.values()),
            "nonCompliant": sum(c["nonCompliant"] for c in counts.values()),
            "changes": len(changes),
        }
        audit_record(
            caller=caller,
            event_name="EvaluateCompliance",
            event_source=EVENT_SOURCE,
            request_parameters={"Rules": list(counts)},
            response_elements=summary,
            additional_event_data={
                "counts": counts,
                "changes": [_change_record(c) for c in changes[:AUDITED_CHANGES]],
                "changesNotListed": max(0, len(changes) - AUDITED_CHANGES),
            },
            event_time=now,
        )
        alerts = [
            c.finding
            for c in changes
            if c.new == FindingStatus.NON_COMPLIANT and c.finding.severity in ALERT_SEVERITIES
        ]
        _alarm_update(caller, now, alerts)
    return {k: v for k, v in summary.items()}


def _change_record(change: _Change) -> dict[str, Any]:
    f = change.finding
    return {
        "findingId": f.pk,
        "ruleId": f.rule_id,
        "resourceId": f.resource_id,
        "severity": f.severity,
        "oldStatus": change.old or None,
        "newStatus": change.new,
        "note": change.note,
    }


# -- The compliance alarm: new HIGH/CRITICAL findings through the alarm channels ------------------


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


def _alarm_update(caller: Caller, now: datetime, alerts: Sequence[Finding]) -> None:
    """ALARM with a notification for accounts with new HIGH/CRITICAL findings; OK where none is open."""
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
    transitions = [(alarm, AlarmState.OK, "No high or critical compliance finding is open.", {}) for alarm in quiet]
    for account_id, findings in by_account.items():
        alarm = _compliance_alarm(account_id)
        listed = [
            {
                "findingId": f.pk,
                "ruleId": f.rule_id,
                "severity": f.severity,
                "resourceId": f.resource_id,
                "url": settings.KMSWEB_DASHBOARD_URL + reverse("compliance:finding_detail", args=[f.pk]),
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


# -- Suppression ----------------------------------------------------------------------------------


def _check_suppression(justification: str, until: datetime | None, now: datetime) -> str:
    text = (justification or "").strip()
    if not text:
        raise ValidationError("A suppression needs a justification.")
    if len(text) > MAX_JUSTIFICATION:
        raise ValidationError(f"The justification must be at most {MAX_JUSTIFICATION} characters long.")
    if "\x00" in text:
        raise ValidationError("The justification must not contain the NUL character (U+0000).")
    if until is None:
        raise ValidationError("A suppression needs an expiry date.")
    if until <= now:
        raise ValidationError("The suppression's expiry must be in the future.")
    if until > now + MAX_SUPPRESSION:
        raise ValidationError("A suppression can last at most one year; suppress again when it ends.")
    return text


def finding_suppress(*, caller: Caller, finding: Finding, justification: str, until: datetime | None) -> Finding:
    """Accept a non-compliant finding's risk until ``until`` (``kmsweb:SuppressFinding``, the approver role).

    Needs a justification and a future expiry (at most a year). A suppressed
    finding can be suppressed again to change its expiry. Records
    SuppressFinding and a history row; the run after ``until`` re-opens
    the finding if it is still non-compliant.
    """
    params = {
        "FindingId": finding.pk,
        "RuleId": finding.rule_id,
        "ResourceId": finding.resource_id,
        "Justification": justification,
        "SuppressedUntil": until.isoformat() if until else None,
    }
    with audited(caller, "SuppressFinding", request_parameters=params, event_source=EVENT_SOURCE) as op:
        authorize(caller=caller, action="kmsweb:SuppressFinding")
        now = clock.now()
        text = _check_suppression(justification, until, now)
        row = Finding.objects.select_for_update().get(pk=finding.pk)
        if row.status not in _ACTIVE:
            raise InvalidState(
                f"Only a non-compliant finding can be suppressed; this one is {row.get_status_display()}."
            )
        old = row.status
        row.status, row.suppressed_until, row.suppressed_by = FindingStatus.SUPPRESSED, until, caller.principal_arn
        row.suppression_justification, row.updated_at = text, now
        row.save(
            update_fields=["status", "suppressed_until", "suppressed_by", "suppression_justification", "updated_at"]
        )
        FindingChange.objects.create(
            finding=row,
            at=now,
            old_status=old,
            new_status=row.status,
            actor=caller.principal_arn,
            note=f"Suppressed until {until:%Y-%m-%d %H:%M} UTC: {text}",
        )
        op.response_elements = {"FindingId": row.pk, "Status": row.status}
    return row


def finding_unsuppress(*, caller: Caller, finding: Finding) -> Finding:
    """End a suppression now (``kmsweb:SuppressFinding``).

    The finding is non-compliant again until a run says otherwise. Records
    UnsuppressFinding and a history row.
    """
    params = {"FindingId": finding.pk, "RuleId": finding.rule_id, "ResourceId": finding.resource_id}
    with audited(caller, "UnsuppressFinding", request_parameters=params, event_source=EVENT_SOURCE) as op:
        authorize(caller=caller, action="kmsweb:SuppressFinding")
        now = clock.now()
        row = Finding.objects.select_for_update().get(pk=finding.pk)
        if row.status != FindingStatus.SUPPRESSED:
            raise InvalidState("This finding is not suppressed.")
        row.status, row.updated_at = FindingStatus.NON_COMPLIANT, now
        _clear_suppression(row)
        row.save(
            update_fields=["status", "suppressed_until", "suppressed_by", "suppression_justification", "updated_at"]
        )
        FindingChange.objects.create(
            finding=row,
            at=now,
            old_status=FindingStatus.SUPPRESSED,
            new_status=row.status,
            actor=caller.principal_arn,
            note="Suppression ended by hand",
        )
        op.response_elements = {"FindingId": row.pk, "Status": row.status}
    return row
