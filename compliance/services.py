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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count

from audit.services import audit_record, audited
from compliance.alarm import ALERT_SEVERITIES, compliance_alarm_update
from compliance.models import (
    EvaluationRequest,
    EvaluationRun,
    Finding,
    FindingChange,
    FindingStatus,
    OpenFindingsCount,
)
from compliance.rules import RULES, Result, Rule, Severity
from compliance.snapshot import snapshot_load
from kmsweb.lib import clock
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidState, ValidationError
from policies.authorization import authorize

logger = logging.getLogger(__name__)

EVENT_SOURCE = "kmsweb.compliance"
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


@dataclass(slots=True)
class _Stored:
    """What a run needs of a stored finding to judge it (not a model instance: a run reads every row)."""

    pk: int
    status: str
    severity: str
    evidence: dict[str, Any]
    principal_arn: str
    suppressed_until: datetime | None


# (fields to set, history note) for a stored finding; None: nothing to write.
Update = tuple[dict[str, Any], str | None]
_CLEARED = {"suppressed_until": None, "suppressed_by": "", "suppression_justification": ""}


def _severity(rule: Rule, result: Result) -> str:
    return (result.severity or rule.severity).value


def _new(rule: Rule, result: Result, now: datetime) -> Finding:
    """A new NON_COMPLIANT finding (compliant ones go through ``_insert_compliant``)."""
    compliant = result.compliant
    return Finding(
        account_id=result.account_id,
        rule_id=rule.id,
        resource_kind=rule.resource_kind.value,
        resource_id=result.resource_id,
        key_id=result.key_id,
        principal_arn=result.principal_arn,
        severity=_severity(rule, result),
        status=FindingStatus.COMPLIANT if compliant else FindingStatus.NON_COMPLIANT,
        first_seen_at=now,
        last_seen_at=None if compliant else now,
        evidence=dict(result.evidence),
        remediation=rule.remediation,
        updated_at=now,
    )


# The columns a new COMPLIANT finding is written with (COPY on PostgreSQL).
_COLUMNS = (
    "account_id",
    "rule_id",
    "resource_kind",
    "resource_id",
    "key_id",
    "principal_arn",
    "severity",
    "status",
    "first_seen_at",
    "evidence",
    "remediation",
    "suppressed_by",
    "suppression_justification",
    "updated_at",
)


def _compliant_values(rule: Rule, result: Result, now: datetime) -> tuple[Any, ...]:
    return (
        result.account_id,
        rule.id,
        rule.resource_kind.value,
        result.resource_id,
        result.key_id,
        result.principal_arn,
        _severity(rule, result),
        FindingStatus.COMPLIANT.value,
        now,
        {},
        rule.remediation,
        "",
        "",
        now,
    )


def _insert_compliant(rows: list[tuple[Any, ...]]) -> None:
    """Insert new COMPLIANT findings: most rows of a first run, and no one needs their ids now.

    PostgreSQL gets them with COPY (a first run over 10,000 keys and 50,000
    grants writes over 100,000 such rows; model instances and bulk_create's
    per-field preparation cost more than the evaluation itself).
    """
    if connection.vendor != "postgresql":
        Finding.objects.bulk_create(
            [Finding(**dict(zip(_COLUMNS, row, strict=True))) for row in rows], batch_size=_BATCH
        )
        return
    evidence = _COLUMNS.index("evidence")
    with connection.cursor() as cursor:
        sql = f"COPY {Finding._meta.db_table} ({', '.join(_COLUMNS)}) FROM STDIN"
        with cursor.cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row[:evidence] + ("{}",) + row[evidence + 1 :])


def _judge(row: _Stored, rule: Rule, result: Result, now: datetime, previous_run: datetime | None) -> Update | None:
    """The fields a verdict changes on a stored finding, and the history note if its status changes.

    An open finding that is still non-compliant with the same evidence is not
    written: its last-seen time is the latest run's (see ``Finding``).
    """
    old = row.status
    if result.compliant:
        if old not in _ACTIVE:
            return None
        resolved: dict[str, Any] = {"status": FindingStatus.RESOLVED, "resolved_at": now, "updated_at": now, **_CLEARED}
        if previous_run is not None:
            resolved["last_seen_at"] = previous_run
        return resolved, "Resolved: the rule now finds the resource compliant"
    severity, evidence = _severity(rule, result), dict(result.evidence)
    fields: dict[str, Any] = {
        "severity": severity,
        "evidence": evidence,
        "principal_arn": result.principal_arn,
        "last_seen_at": now,
    }
    suppression_live = old == FindingStatus.SUPPRESSED and row.suppressed_until and row.suppressed_until > now
    if old == FindingStatus.NON_COMPLIANT or suppression_live:
        same = row.evidence == evidence and row.severity == severity and row.principal_arn == result.principal_arn
        return None if same else ({**fields, "updated_at": now}, None)
    fields.update(status=FindingStatus.NON_COMPLIANT, resolved_at=None, updated_at=now)
    if old == FindingStatus.SUPPRESSED:
        fields.update(_CLEARED)
        return fields, f"Re-opened: the suppression ended at {row.suppressed_until:%Y-%m-%d %H:%M} UTC"
    if old == FindingStatus.RESOLVED:
        return fields, "Re-opened: non-compliant again"
    fields["first_seen_at"] = now  # compliant until now
    return fields, "Opened"


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
    # The lock is this database's (PostgreSQL scopes advisory locks by database).
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
        previous_run = EvaluationRun.objects.order_by("-started_at").values_list("started_at", flat=True).first()
        columns = (
            "rule_id",
            "resource_id",
            "pk",
            "status",
            "severity",
            "evidence",
            "principal_arn",
            "suppressed_until",
        )
        existing: dict[tuple[str, str], _Stored] = {
            (row[0], row[1]): _Stored(*row[2:]) for row in Finding.objects.values_list(*columns)
        }
        new_rows: list[Finding] = []
        new_compliant: list[tuple[Any, ...]] = []
        updates: dict[int, Update] = {}
        seen: set[tuple[str, str]] = set()
        for rule, result in verdicts:
            ident = (rule.id, result.resource_id)
            seen.add(ident)
            stored = existing.get(ident)
            if stored is None and result.compliant:
                new_compliant.append(_compliant_values(rule, result, now))
            elif stored is None:
                new_rows.append(_new(rule, result, now))
            elif (update := _judge(stored, rule, result, now, previous_run)) is not None:
                updates[stored.pk] = update
        gone: list[int] = []
        for ident, stored in existing.items():
            if ident in seen:
                continue
            if stored.status in _ACTIVE:
                fields = {"status": FindingStatus.RESOLVED, "resolved_at": now, "updated_at": now, **_CLEARED}
                updates[stored.pk] = (fields, "Resolved: the resource left the rule's scope")
            elif stored.status == FindingStatus.COMPLIANT:
                gone.append(stored.pk)
        Finding.objects.bulk_create(new_rows, batch_size=_BATCH)
        _insert_compliant(new_compliant)
        changes = [_Change(f, "", f.status, "Opened") for f in new_rows if f.status == FindingStatus.NON_COMPLIANT]
        dirty = list(Finding.objects.defer("remediation").in_bulk(list(updates)).values())
        for f in dirty:
            fields, note = updates[f.pk]
            old = f.status
            for name, value in fields.items():
                setattr(f, name, value)
            if note is not None:
                changes.append(_Change(f, old, f.status, note))
        Finding.objects.bulk_update(dirty, _FIELDS, batch_size=_BATCH)
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
        run = EvaluationRun.objects.create(
            started_at=now, finished_at=clock.now(), duration_ms=elapsed, counts=counts, changes=len(changes)
        )
        _record_open_counts(run, now)
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
        compliance_alarm_update(now=now, alerts=alerts)
    return {k: v for k, v in summary.items()}


def _record_open_counts(run: EvaluationRun, now: datetime) -> None:
    """One ``OpenFindingsCount`` per account with findings: the open ones by severity (the trend chart)."""
    per_account: dict[str, dict[str, int]] = {
        account: {s.value: 0 for s in Severity}
        for account in Finding.objects.values_list("account_id", flat=True).distinct().order_by()
    }
    rows = Finding.objects.open().values_list("account_id", "severity").annotate(n=Count("id")).order_by()
    for account, severity, n in rows:
        per_account.setdefault(account, {s.value: 0 for s in Severity})[severity] = n
    OpenFindingsCount.objects.bulk_create(
        [
            OpenFindingsCount(run=run, account_id=a, at=now, by_severity=c, total=sum(c.values()))
            for a, c in per_account.items()
        ]
    )


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
