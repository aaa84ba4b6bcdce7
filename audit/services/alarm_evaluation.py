"""Evaluating alarms (the ``evaluate_alarms`` job), CloudWatch's way.

For each alarm, the datapoints are the Sum of the matching usage counts in
each of its last ``evaluation_periods`` periods. Periods end at the last
whole minute (the last whole hour for periods in whole hours), so each beat
run evaluates every minute once as the newest period. A period with no
matching events has no datapoint (as a CloudTrail metric filter without a
default value publishes nothing): ``treat_missing_data`` decides.

* ``breaching`` / ``notBreaching``: a missing datapoint counts as breaching
  / not breaching; ALARM when at least ``datapoints_to_alarm`` breach, else OK.
* ``missing`` / ``ignore``: only the datapoints present count. ALARM when
  at least M of them breach, else OK; with no datapoint at all, ``missing``
  goes to INSUFFICIENT_DATA and ``ignore`` keeps the current state.

Metrics are read in batches: one roll-up query per granularity for all
alarms (roll-ups plus the events above the watermark, see
``audit.services.usage.usage_rows``), then summed per alarm in memory.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import Min

from audit.models import (
    HOUR,
    MINUTE,
    Alarm,
    AlarmHistory,
    AlarmMetric,
    AlarmState,
    Comparison,
    KeyFirstUse,
    MissingData,
    UsageWatermark,
)
from audit.services.recording import audit_record
from audit.services.usage import CRYPTO_EVENTS, usage_events, usage_rows
from kmsweb.lib.caller import Caller

KEY_STATE_EVENTS = frozenset({"DisableKey", "ScheduleKeyDeletion"})
_SYMBOL = {Comparison.GE: ">=", Comparison.GT: ">", Comparison.LT: "<", Comparison.LE: "<="}
_WORDS = {
    Comparison.GE: "greater than or equal to",
    Comparison.GT: "greater than",
    Comparison.LT: "less than",
    Comparison.LE: "less than or equal to",
}


def granularity(period: int) -> int:
    return HOUR if period % HOUR == 0 else MINUTE


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def window(alarm: Alarm, now: datetime) -> tuple[int, int]:
    """``(start, end)`` epoch seconds of the alarm's evaluation range."""
    step = granularity(alarm.period)
    end = _epoch(now) // step * step
    return end - alarm.period * alarm.evaluation_periods, end


def breaches(comparison: str, value: float, threshold: float) -> bool:
    if comparison == Comparison.GE:
        return value >= threshold
    if comparison == Comparison.GT:
        return value > threshold
    if comparison == Comparison.LT:
        return value < threshold
    return value <= threshold


def _counts(alarm: Alarm, row: dict[str, Any]) -> bool:
    """Whether a usage row counts towards ``alarm``'s metric (filters and kind)."""
    if alarm.key_id and row["key_id"] != alarm.key_id:
        return False
    if alarm.operation and row["event_name"] != alarm.operation:
        return False
    if alarm.principal_arn and row["principal_arn"] != alarm.principal_arn:
        return False
    if alarm.error_code and row["error_code"] != alarm.error_code:
        return False
    metric = alarm.metric
    if metric == AlarmMetric.REQUESTS:
        return True
    if metric == AlarmMetric.ERRORS:
        return bool(row["outcome"] != "ok")
    if metric == AlarmMetric.DENIALS:
        return bool(row["outcome"] == "denied")
    if metric == AlarmMetric.PENDING_DELETION_USE:
        return bool(row["pending_deletion"])
    if metric == AlarmMetric.KEY_STATE_CHANGES:
        return row["outcome"] == "ok" and row["event_name"] in KEY_STATE_EVENTS
    return False


@dataclass
class Evaluation:
    """The outcome of evaluating one alarm: its datapoints, new state and reason."""

    alarm: Alarm
    starts: list[int]  # epoch seconds of each period's start, oldest first
    values: list[float | None]
    state: str
    reason: str
    reason_data: dict[str, Any]


def _fmt_point(value: float, start: int) -> str:
    return f"{value:.1f} ({_at(start):%Y-%m-%dT%H:%M:%SZ})"


def decide(alarm: Alarm, starts: Sequence[int], values: Sequence[float | None], now: datetime) -> Evaluation:
    """Apply the threshold, M of N and the missing-data treatment (pure; see the module docstring)."""
    n, m = alarm.evaluation_periods, alarm.datapoints_to_alarm
    treat = alarm.treat_missing_data
    words = _WORDS[Comparison(alarm.comparison)]
    present = [(v, s) for v, s in zip(values, starts, strict=True) if v is not None]
    missing = n - len(present)
    breaching_points = [(v, s) for v, s in present if breaches(alarm.comparison, v, alarm.threshold)]
    recent = sorted(present, key=lambda p: -p[1])
    listed = "[" + ", ".join(_fmt_point(v, s) for v, s in recent) + "]"
    reason_data: dict[str, Any] = {
        "version": "1.0",
        "queryDate": now.isoformat(),
        "startDate": _at(starts[0]).isoformat() if starts else None,
        "statistic": "Sum",
        "period": alarm.period,
        "recentDatapoints": [v for v, _ in recent],
        "threshold": alarm.threshold,
        "evaluatedDatapoints": [
            {"timestamp": _at(s).isoformat(), "value": v} for v, s in zip(values, starts, strict=True) if v is not None
        ],
    }
    if treat in (MissingData.BREACHING, MissingData.NOT_BREACHING):
        as_breaching = treat == MissingData.BREACHING
        bad = len(breaching_points) + (missing if as_breaching else 0)
        state = AlarmState.ALARM if bad >= m else AlarmState.OK
        label = "Breaching" if as_breaching else "NonBreaching"
        if not present:
            reason = (
                f"Threshold Crossed: no datapoints were received for {n} period{'s' if n != 1 else ''} and "
                f"{n} missing datapoint{'s were' if n != 1 else ' was'} treated as [{label}]."
            )
        else:
            reason = _threshold_reason(state, bad, n, listed, words, alarm, m)
            if missing:
                reason = (
                    reason[:-1]
                    + f"; {missing} missing datapoint{'s were' if missing != 1 else ' was'} "
                    + (f"treated as [{label}].")
                )
        return Evaluation(alarm, list(starts), list(values), state, reason, reason_data)
    if not present:
        if treat == MissingData.IGNORE:
            state = AlarmState(alarm.state)
            reason = alarm.state_reason
        else:
            state = AlarmState.INSUFFICIENT_DATA
            reason = (
                f"Insufficient Data: {n} datapoint{'s were' if n != 1 else ' was'} unknown "
                f"(no matching events in the last {n} period{'s' if n != 1 else ''})."
            )
        return Evaluation(alarm, list(starts), list(values), state, reason, reason_data)
    state = AlarmState.ALARM if len(breaching_points) >= m else AlarmState.OK
    reason = _threshold_reason(state, len(breaching_points), len(present), listed, words, alarm, m)
    return Evaluation(alarm, list(starts), list(values), state, reason, reason_data)


def _threshold_reason(state: str, bad: int, of: int, listed: str, words: str, alarm: Alarm, m: int) -> str:
    plural = "s" if m != 1 else ""
    if state == AlarmState.ALARM:
        verb = "was" if bad == 1 else "were"
        return (
            f"Threshold Crossed: {bad} out of the last {of} datapoint{'s' if of != 1 else ''} {listed} {verb} "
            f"{words} the threshold ({alarm.threshold:.1f}) (minimum {m} datapoint{plural} for OK -> ALARM "
            "transition)."
        )
    good = of - bad
    verb = "was" if good == 1 else "were"
    return (
        f"Threshold Crossed: {good} out of the last {of} datapoint{'s' if of != 1 else ''} {listed} {verb} not "
        f"{words} the threshold ({alarm.threshold:.1f}) (minimum {m} datapoint{plural} for ALARM -> OK transition)."
    )


def _new_principal_rows(accounts: Iterable[str], since: datetime, until: datetime, step: int) -> list[dict[str, Any]]:
    """First uses of a key by a principal in ``[since, until)``, bucketed like usage rows.

    ``KeyFirstUse`` holds the rolled-up ones; pairs first seen in events
    above the watermark (not rolled up yet) are found live, so a first use
    is never late for its period.
    """
    accounts = list(accounts)
    rows: list[dict[str, Any]] = [
        {"account_id": a, "key_id": k, "principal_arn": p, "bucket": t, "event_name": "", "error_code": ""}
        for a, k, p, t in KeyFirstUse.objects.filter(
            account_id__in=accounts, first_used_at__gte=since, first_used_at__lt=until
        ).values_list("account_id", "key_id", "principal_arn", "first_used_at")
    ]
    mark = UsageWatermark.objects.filter(id=1).values_list("last_event_id", flat=True).first() or 0
    live = list(
        usage_events()
        .filter(
            id__gt=mark,
            recipient_account_id__in=accounts,
            error_code="",
            event_name__in=CRYPTO_EVENTS,
            event_time__lt=until,
        )
        .exclude(key_id="")
        .exclude(principal_arn="")
        .values("recipient_account_id", "key_id", "principal_arn")
        .annotate(first=Min("event_time"))
        .order_by()
    )
    if live:
        seen = set(
            KeyFirstUse.objects.filter(key_id__in={r["key_id"] for r in live}).values_list("key_id", "principal_arn")
        )
        for r in live:
            if (r["key_id"], r["principal_arn"]) not in seen and since <= r["first"] < until:
                rows.append(
                    {
                        "account_id": r["recipient_account_id"],
                        "key_id": r["key_id"],
                        "principal_arn": r["principal_arn"],
                        "bucket": r["first"],
                        "event_name": "",
                        "error_code": "",
                    }
                )
    for row in rows:
        row["count"] = 1
        row["bucket"] = _at(_epoch(row["bucket"]) // step * step)
    return rows


def datapoints(alarms: Sequence[Alarm], now: datetime) -> dict[int, tuple[list[int], list[float | None]]]:
    """Each alarm's period starts and Sum values (None: no datapoint), in a few batched queries."""
    out: dict[int, tuple[list[int], list[float | None]]] = {}
    by_step: dict[int, list[Alarm]] = defaultdict(list)
    for alarm in alarms:
        by_step[granularity(alarm.period)].append(alarm)
    for step, group in by_step.items():
        windows = {a.pk: window(a, now) for a in group}
        since = _at(min(w[0] for w in windows.values()))
        until = _at(max(w[1] for w in windows.values()))
        usage = [a for a in group if a.metric != AlarmMetric.NEW_PRINCIPAL_USE]
        firsts = [a for a in group if a.metric == AlarmMetric.NEW_PRINCIPAL_USE]
        sources: list[tuple[list[Alarm], list[dict[str, Any]]]] = []
        if usage:
            accounts = {a.account_id for a in usage}
            sources.append((usage, usage_rows(resolution=step, since=since, until=until, account_ids=accounts)))
        if firsts:
            sources.append((firsts, _new_principal_rows({a.account_id for a in firsts}, since, until, step)))
        for members, rows in sources:
            # Index the rows by account and by (account, key), sorted by
            # time: each alarm reads only its window's slice (bisect).
            by_account: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
            by_key: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
            for row in rows:
                entry = (_epoch(row["bucket"]), row)
                by_account[row["account_id"]].append(entry)
                by_key[(row["account_id"], row["key_id"])].append(entry)
            times: dict[Any, list[int]] = {}
            for index in (by_account, by_key):
                for name, entries in index.items():
                    entries.sort(key=lambda entry: entry[0])
                    times[name] = [moment for moment, _ in entries]
            for alarm in members:
                start, end = windows[alarm.pk]
                n, period = alarm.evaluation_periods, alarm.period
                sums: list[float | None] = [None] * n
                series: Any = (alarm.account_id, alarm.key_id) if alarm.key_id else alarm.account_id
                candidates = (by_key if alarm.key_id else by_account).get(series, [])
                moments = times.get(series, [])
                first_use = alarm.metric == AlarmMetric.NEW_PRINCIPAL_USE
                for moment, row in candidates[bisect_left(moments, start) : bisect_left(moments, end)]:
                    if not (_first_use_matches(alarm, row) if first_use else _counts(alarm, row)):
                        continue
                    i = (moment - start) // period
                    sums[i] = (sums[i] or 0) + row["count"]
                out[alarm.pk] = ([start + i * period for i in range(n)], sums)
    return out


def _first_use_matches(alarm: Alarm, row: dict[str, Any]) -> bool:
    return (not alarm.key_id or row["key_id"] == alarm.key_id) and (
        not alarm.principal_arn or row["principal_arn"] == alarm.principal_arn
    )


def _record_transitions(evaluations: Sequence[Evaluation], now: datetime) -> int:
    """Record state changes in one transaction; returns how many were recorded.

    Each is claimed with a conditional update on the old state, so two
    evaluators running at once record a change once. A change writes its
    history row, a SetAlarmState audit event and its notifications (sent
    after the commit).
    """
    from audit.services.notifications import notifications_queue

    if not evaluations:
        return 0
    with transaction.atomic():
        claimed = [
            ev
            for ev in evaluations
            if Alarm.objects.filter(pk=ev.alarm.pk, state=ev.alarm.state).update(
                state=ev.state,
                state_reason=ev.reason,
                state_reason_data=ev.reason_data,
                state_updated_at=now,
                last_evaluated_at=now,
            )
            == 1
        ]
        entries = AlarmHistory.objects.bulk_create(
            [
                AlarmHistory(
                    alarm=ev.alarm,
                    timestamp=now,
                    old_state=ev.alarm.state,
                    new_state=ev.state,
                    reason=ev.reason,
                    reason_data=ev.reason_data,
                )
                for ev in claimed
            ]
        )
        for ev, entry in zip(claimed, entries, strict=True):
            alarm = ev.alarm
            audit_record(
                caller=Caller.system("evaluate_alarms", account_id=alarm.account_id),
                event_name="SetAlarmState",
                event_source="kmsweb.alarms",
                request_parameters={"AlarmId": alarm.pk, "AlarmName": alarm.name},
                response_elements={"OldState": alarm.state, "NewState": ev.state, "Reason": ev.reason},
                event_time=now,
            )
            alarm.state, alarm.state_reason, alarm.state_updated_at = ev.state, ev.reason, now
            if alarm.actions_enabled and (alarm.emails or alarm.webhook_url):
                notifications_queue(alarm=alarm, transition=entry)
    return len(claimed)


def alarms_evaluate(*, caller: Caller, now: datetime, alarm_ids: Sequence[int] | None = None) -> dict[str, int]:
    """The ``evaluate_alarms`` job: create missing built-ins, evaluate every alarm,
    record transitions (history, a SetAlarmState audit event, notifications).

    Idempotent: evaluating twice at one instant changes nothing the second
    time; a transition is claimed with a conditional update on the old state.
    The transitions of one run commit together (one transaction).
    """
    from audit.services.alarms import alarms_ensure_builtin

    created = alarms_ensure_builtin() if alarm_ids is None else 0
    qs = Alarm.objects.defer("webhook_secret_ciphertext")
    if alarm_ids is not None:
        qs = qs.filter(pk__in=alarm_ids)
    alarms = list(qs)
    points = datapoints(alarms, now)
    changes = []
    for alarm in alarms:
        starts, values = points[alarm.pk]
        evaluation = decide(alarm, starts, values, now)
        if evaluation.state != alarm.state:
            changes.append(evaluation)
    transitions = _record_transitions(changes, now)
    Alarm.objects.filter(pk__in=[a.pk for a in alarms]).update(last_evaluated_at=now)
    return {"alarms": len(alarms), "transitions": transitions, "builtins_created": created}


def alarm_series(*, alarm: Alarm, now: datetime, periods: int = 60) -> dict[str, Any]:
    """The alarm's metric over its last ``periods`` periods, with its threshold (the detail chart)."""
    probe = Alarm(**{f.attname: getattr(alarm, f.attname) for f in Alarm._meta.concrete_fields})
    probe.evaluation_periods = max(periods, alarm.evaluation_periods)
    # Longer than the evaluation range, so cap it at what the roll-ups index well.
    probe.evaluation_periods = min(probe.evaluation_periods, max(1, 14 * 86400 // alarm.period))
    starts, values = datapoints([probe], now)[alarm.pk]
    return {
        "labels": [_at(s).isoformat() for s in starts],
        "values": values,
        "threshold": alarm.threshold,
        "comparison": _SYMBOL[Comparison(alarm.comparison)],
        "period": alarm.period,
        "evaluationPeriods": alarm.evaluation_periods,
    }
