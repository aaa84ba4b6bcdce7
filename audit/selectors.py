"""Reading the audit trail: usage series, recent denials, the Audit page's
search, event details, signing keys and the report's figures.

Usage series read the roll-ups (``audit.services.usage.usage_rows``: minute
buckets for the last hour, hour buckets for a day, day buckets for a month),
plus the events not rolled up yet, so a chart is exact to the second.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Max, Min, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from audit import canonical, report
from audit.filters import AuditFilter, encode_cursor
from audit.models import DAY, HOUR, MINUTE, AuditDigest, AuditEvent, AuditExport, JobOutcome, JobRun, SigningKey
from audit.services.sealing import SEAL_EVENT
from audit.services.usage import CRYPTO_EVENTS, usage_rows
from audit.verification import Report, audit_integrity
from keys.models import Alias, Key
from keys.selectors import key_ref_names_alias, key_resolve_ref
from kmsweb.lib.caller import SYSTEM_PRINCIPAL_ARN, Caller
from kmsweb.lib.errors import NotFound
from policies.models import Grant, GrantRequestDecision, Principal
from policies.roles import role_allows


@dataclass(frozen=True)
class Range:
    """A chart range: how far back, and the bucket width."""

    name: str
    label: str
    span: timedelta
    unit: str  # Trunc kind
    step: timedelta


RANGES = {
    "hour": Range("hour", "Last hour", timedelta(hours=1), "minute", timedelta(minutes=1)),
    "day": Range("day", "Last 24 hours", timedelta(days=1), "hour", timedelta(hours=1)),
    "month": Range("month", "Last 30 days", timedelta(days=30), "day", timedelta(days=1)),
}
_RESOLUTION = {"minute": MINUTE, "hour": HOUR, "day": DAY}
DENIED = "AccessDeniedException"
MAX_OPERATION_SERIES = 6


def _events_for(caller: Caller) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(recipient_account_id=caller.account_id)


def _floor(moment: datetime, unit: str) -> datetime:
    moment = moment.replace(second=0, microsecond=0)
    if unit in ("hour", "day"):
        moment = moment.replace(minute=0)
    if unit == "day":
        moment = moment.replace(hour=0)
    return moment


def usage_series(
    *, caller: Caller, range_name: str = "day", key_id: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Requests per operation per bucket, plus errors and access denials.

    Returns Chart.js-ready data: ``labels`` (ISO bucket starts) and
    ``datasets`` with a ``kind`` of ``operation``, ``error`` or ``denied``.
    """
    rng = RANGES.get(range_name, RANGES["day"])
    now = now or timezone.now()
    start = _floor(now - rng.span, rng.unit) + rng.step
    rows = usage_rows(
        resolution=_RESOLUTION[rng.unit],
        since=start,
        until=now + timedelta(microseconds=1),
        account_ids=[caller.account_id],
        key_id=key_id or None,
    )
    buckets: list[datetime] = []
    cursor = start
    while cursor <= now:
        buckets.append(cursor)
        cursor += rng.step
    index = {b: i for i, b in enumerate(buckets)}
    per_op: dict[str, list[int]] = defaultdict(lambda: [0] * len(buckets))
    errors = [0] * len(buckets)
    denied = [0] * len(buckets)
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        if row["bucket"] > now:
            continue
        i = index.get(_floor(row["bucket"], rng.unit))
        if i is None:
            continue
        if row["error_code"] == DENIED:
            denied[i] += row["count"]
        elif row["error_code"]:
            errors[i] += row["count"]
        else:
            per_op[row["event_name"]][i] += row["count"]
            totals[row["event_name"]] += row["count"]
    top = sorted(totals, key=lambda op: (-totals[op], op))[:MAX_OPERATION_SERIES]
    datasets: list[dict[str, Any]] = [{"label": op, "kind": "operation", "data": per_op[op]} for op in top]
    others = [op for op in totals if op not in top]
    if others:
        datasets.append(
            {
                "label": "Other",
                "kind": "operation",
                "data": [sum(per_op[op][i] for op in others) for i in range(len(buckets))],
            }
        )
    datasets.append({"label": "Errors", "kind": "error", "data": errors})
    datasets.append({"label": "Access denied", "kind": "denied", "data": denied})
    return {
        "range": rng.name,
        "labels": [b.isoformat() for b in buckets],
        "datasets": datasets,
        "total": sum(totals.values()) + sum(errors) + sum(denied),
    }


def recent_denials(*, caller: Caller, limit: int = 10) -> list[AuditEvent]:
    """The latest AccessDenied events in the caller's account (each with ``key_alias``)."""
    return with_key_aliases(list(_events_for(caller).filter(error_code=DENIED).order_by("-event_time")[:limit]))


def with_key_aliases(events: list[AuditEvent]) -> list[AuditEvent]:
    """Set ``key_alias`` on each event: its key's first alias today, or "" (one query for the lot)."""
    ids = {e.key_id for e in events if e.key_id}
    first: dict[str, str] = {}
    for key_id, name in Alias.objects.filter(key_id__in=ids).order_by("name").values_list("key_id", "name"):
        first.setdefault(str(key_id), name)
    for e in events:
        e.key_alias = first.get(e.key_id or "", "")  # type: ignore[attr-defined]
    return events


def last_used_by_key(*, key_ids: list[str]) -> dict[str, datetime]:
    """When each key was last used for cryptography (one grouped query)."""
    if not key_ids:
        return {}
    rows = (
        AuditEvent.objects.filter(key_id__in=key_ids, error_code="", event_name__in=CRYPTO_EVENTS)
        .values("key_id")
        .annotate(last=Max("event_time"))
        .order_by()
    )
    return {row["key_id"]: row["last"] for row in rows}


# -- The Audit page, event detail, exports --------------------------------------------------------


def audit_events_for(*, caller: Caller) -> QuerySet[AuditEvent]:
    """The events ``caller`` may search: its account's, those on its account's
    keys, and the account-less ones (system jobs, unauthenticated requests).
    Operators' commands see all."""
    if caller.is_system and not caller.account_id:
        return AuditEvent.objects.all()
    # Calls from other accounts on this account's keys belong to its trail too
    # (CloudTrail delivers a cross-account call to both accounts).
    own_keys = [str(k) for k in Key.objects.filter(account_id=caller.account_id).values_list("id", flat=True)]
    return AuditEvent.objects.filter(Q(recipient_account_id__in=[caller.account_id, ""]) | Q(key_id__in=own_keys))


def audit_filter_for(*, caller: Caller, params: Mapping[str, Any]) -> tuple[AuditFilter, dict[str, str]]:
    """Parse a filter and check that the key and principal it names exist.

    The key may be named by alias (or alias ARN): it is resolved to the key
    it names now, and the search is on that key's id.
    """
    alias_error = ""
    typed_key = str(params.get("key") or "").strip()
    if typed_key and key_ref_names_alias(typed_key):
        params = {name: params.get(name) for name in params}
        try:
            params["key"] = str(key_resolve_ref(caller=caller, key_ref=typed_key).id)
        except NotFound as exc:
            params["key"] = ""
            alias_error = exc.message
    flt, errors = AuditFilter.parse(params)
    if alias_error:
        errors["key"] = alias_error
    if flt.key:
        keys = Key.objects.filter(id=flt.key)
        if not caller.is_system:
            keys = keys.filter(account_id=caller.account_id)
        if not keys.exists():
            errors["key"] = f"Unknown key '{flt.key}'."
    if flt.principal and flt.principal != SYSTEM_PRINCIPAL_ARN:
        match = _PRINCIPAL.match(flt.principal)
        if match is None or (
            match["rest"] != "root"
            and not Principal.objects.filter(
                account_id=match["account"], type=match["type"], name=match["name"]
            ).exists()
        ):
            errors["principal"] = f"Unknown principal '{flt.principal}'."
    return flt, errors


_PRINCIPAL = re.compile(r"^arn:aws:iam::(?P<account>\d{12}):(?P<rest>root|(?P<type>user|role|service)/(?P<name>.+))$")
# The table shows these; the JSON members stay in the database until a row is opened.
_ROW_COLUMNS = (
    "id",
    "event_id",
    "event_time",
    "event_name",
    "event_source",
    "principal_arn",
    "source_ip",
    "error_code",
    "origin",
    "key_id",
    "read_only",
)


@dataclass(frozen=True)
class EventPage:
    """One keyset page of the Audit table, with cursors to its neighbours."""

    rows: list[AuditEvent]
    newer: str | None  # cursor for the page before (towards the start of the sort)
    older: str | None  # cursor for the page after


def event_page_for(*, caller: Caller, flt: AuditFilter) -> EventPage:
    """A page of events matching ``flt``: ``per_page + 1`` rows fetched, never an OFFSET."""
    qs, backwards = flt.page(audit_events_for(caller=caller))
    fetched = list(qs.only(*_ROW_COLUMNS)[: flt.per_page + 1])
    more = len(fetched) > flt.per_page
    rows = with_key_aliases(fetched[: flt.per_page])
    if backwards:
        rows.reverse()
    if not rows:
        return EventPage(rows=[], newer=None, older=None)
    first, last = rows[0], rows[-1]
    has_before = more if backwards else bool(flt.after)
    has_after = True if backwards else more
    return EventPage(
        rows=rows,
        newer=encode_cursor(first.event_time, first.id) if has_before else None,
        older=encode_cursor(last.event_time, last.id) if has_after else None,
    )


def event_get_for(*, caller: Caller, event_id: str) -> AuditEvent:
    try:
        parsed = uuid.UUID(event_id)
    except ValueError:
        raise NotFound(f"Invalid event id '{event_id}'.") from None
    event = audit_events_for(caller=caller).filter(event_id=parsed).first()
    if event is None:
        raise NotFound(f"Event {event_id} does not exist (or was archived).")
    return event


def event_record(event: AuditEvent) -> dict[str, Any]:
    """The CloudTrail record of an event, exactly as exports and digests see it."""
    return canonical.record([getattr(event, name) for name in canonical.EVENT_COLUMNS])


def trail_integrity(*, caller: Caller) -> Report | None:
    """The Audit page's integrity panel (``audit_integrity``): for those who may export, else None.

    The panel speaks of the whole trail (every account's events), so it is
    shown to the role that signs exports of it.
    """
    if not role_allows(caller.roles, "kmsweb:ExportAudit"):
        return None
    return audit_integrity()


def event_digest(event: AuditEvent) -> AuditDigest | None:
    """The digest that sealed ``event``, if it is sealed yet."""
    return AuditDigest.objects.filter(last_event_id__gte=event.id, first_event_id__lte=event.id).defer("leaves").first()


def public_keys() -> list[dict[str, Any]]:
    """Every audit signing key's public half, newest first (current and retired)."""
    return [
        {
            "fingerprint": k.fingerprint,
            "algorithm": "ECDSA P-256 with SHA-256",
            "publicKeyPem": k.public_pem,
            "createdAt": k.created_at.isoformat(),
            "retiredAt": k.retired_at.isoformat() if k.retired_at else None,
            "current": k.retired_at is None,
        }
        for k in SigningKey.objects.order_by("-created_at", "-id").defer("private_key_ciphertext")
    ]


def exports_for(*, caller: Caller, limit: int = 10) -> list[AuditExport]:
    return list(AuditExport.objects.filter(account_id=caller.account_id, requested_by=caller.principal_arn)[:limit])


def export_get_for(*, caller: Caller, export_id: str) -> AuditExport:
    try:
        parsed = uuid.UUID(export_id)
    except ValueError:
        raise NotFound(f"Invalid export id '{export_id}'.") from None
    export = AuditExport.objects.filter(pk=parsed, account_id=caller.account_id).first()
    if export is None:
        raise NotFound(f"Export {export_id} does not exist.")
    return export


def report_data(*, caller: Caller, flt: AuditFilter, events: QuerySet[AuditEvent], now: datetime) -> report.ReportData:
    """What the PDF report shows for ``flt``'s period (see ``audit.report``)."""
    account = caller.account_id
    keys = Key.objects.filter(manager__in=["CUSTOMER", "AWS"], deleted_at__isnull=True).prefetch_related("aliases")
    grants = Grant.objects.select_related("key")
    if account:
        keys = keys.filter(account_id=account)
        grants = grants.filter(key__account_id=account)
    if flt.key:
        keys = keys.filter(id=flt.key)
        grants = grants.filter(key_id=flt.key)
    if flt.since:
        grants = grants.filter(created_at__gte=flt.since)
    if flt.until:
        grants = grants.filter(created_at__lt=flt.until)
    totals = events.aggregate(
        n=Count("id"),
        denied=Count("id", filter=Q(error_code=DENIED)),
        failed=Count("id", filter=~Q(error_code="") & ~Q(error_code=DENIED)),
        oldest=Min("event_time"),
        newest=Max("event_time"),
    )
    inventory = report.Section(
        "Key inventory and rotation status",
        ["Key", "Aliases", "Kind", "State", "Created", "Rotation", "Last rotated", "Next rotation"],
    )
    inventory.total = keys.count()
    for k in keys.order_by("created_at")[: report.MAX_ROWS]:
        inventory.rows.append(
            [
                str(k.id),
                ", ".join(a.name for a in k.aliases.all()),
                "customer" if k.manager == "CUSTOMER" else "service managed",
                k.state,
                f"{k.created_at:%Y-%m-%d}",
                f"every {k.rotation_period_days} days" if k.rotation_enabled else "off",
                f"{k.last_rotated_at:%Y-%m-%d}" if k.last_rotated_at else "never",
                _next_rotation(k),
            ]
        )
    issued = report.Section(
        "Grants issued", ["Grant", "Key", "Grantee", "Operations", "Created by", "Created", "Approved by", "Status"]
    )
    issued.total = grants.count()
    page = list(grants.order_by("created_at")[: report.MAX_ROWS])
    approvals: dict[int, list[str]] = defaultdict(list)
    for decision in GrantRequestDecision.objects.filter(
        request__grant__in=[g.pk for g in page], verdict="approve"
    ).select_related("principal", "request"):
        if decision.request.grant_id is not None:
            approvals[decision.request.grant_id].append(decision.principal.arn)
    for g in page:
        issued.rows.append(
            [
                g.grant_id[:16] + "…",
                str(g.key_id),
                g.grantee_principal,
                ", ".join(g.operations),
                g.created_by,
                f"{g.created_at:%Y-%m-%d %H:%M}",
                ", ".join(approvals.get(g.pk, [])) or "direct (CreateGrant)",
                g.retired_how or "active",
            ]
        )
    denied = report.Section("Denials", ["Time", "Event", "Principal", "Source IP", "Key", "Message"])
    denied.total = totals["denied"]
    for e in events.filter(error_code=DENIED).order_by("event_time", "id")[: report.MAX_ROWS]:
        denied.rows.append(
            [f"{e.event_time:%Y-%m-%d %H:%M:%S}", e.event_name, e.principal_arn, e.source_ip, e.key_id, e.error_message]
        )
    alarms = report.Section("Alarms", ["Time", "Alarm", "Event", "What happened", "By"])
    # Alarm changes and state transitions; not the Alarms pages being read.
    alarm_events = events.filter(event_name__icontains="alarm", read_only=False)
    alarms.total = alarm_events.count()
    alarm_page = list(alarm_events.order_by("event_time", "id")[: report.MAX_ROWS])
    names = _alarm_names(alarm_page)
    for e in alarm_page:
        alarms.rows.append(
            [
                f"{e.event_time:%Y-%m-%d %H:%M:%S}",
                _alarm_name(e, names),
                e.event_name,
                _alarm_change(e),
                e.principal_arn,
            ]
        )

    def when(moment: datetime | None) -> str:
        return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "the beginning"

    return report.ReportData(
        title="kmsweb audit report",
        period=f"{when(flt.since)} to {when(flt.until) if flt.until else f'{now:%Y-%m-%d %H:%M} UTC'}",
        scope=f"account {account}" if account else "all accounts",
        generated_at=now,
        summary=[
            ("Events", str(totals["n"])),
            ("Denied", str(totals["denied"])),
            ("Failed (other errors)", str(totals["failed"])),
            ("Oldest event", when(totals["oldest"]) if totals["oldest"] else "-"),
            ("Newest event", when(totals["newest"]) if totals["newest"] else "-"),
            ("Filter", json.dumps(flt.describe()) if flt.is_filtered else "none"),
        ],
        sections=[inventory, issued, denied, alarms],
    )


@dataclass(frozen=True)
class SealingStatus:
    """Whether sealing keeps up: the oldest unsealed event and the last seal_audit run."""

    oldest_unsealed_at: datetime | None
    last_run_failed: bool
    last_error: str
    behind_after: timedelta
    now: datetime

    @property
    def lag(self) -> timedelta | None:
        return None if self.oldest_unsealed_at is None else self.now - self.oldest_unsealed_at

    @property
    def lagging(self) -> bool:
        """An event has waited longer than ``behind_after`` to be sealed."""
        lag = self.lag
        return lag is not None and lag > self.behind_after

    @property
    def behind(self) -> bool:
        """Lagging, or the last run failed."""
        return self.last_run_failed or self.lagging


def sealing_status(*, now: datetime, behind_after: timedelta) -> SealingStatus:
    """How far sealing lags, in one query (through the primary key and the JobRun index).

    The oldest unsealed event is the first after the newest digest's last
    event, leaving out the seals' own events (each is sealed by the next
    digest, so one always waits). No digest yet: every event is unsealed.
    """
    last_sealed = AuditDigest.objects.order_by("-sequence").values("last_event_id")[:1]
    oldest = (
        AuditEvent.objects.filter(id__gt=Coalesce(Subquery(last_sealed), Value(0)))
        .exclude(event_name=SEAL_EVENT)
        .order_by("id")
        .values("event_time")[:1]
    )
    last_run = JobRun.objects.filter(name="seal_audit").order_by("-started_at", "-id")
    # One row: the oldest unsealed event beside the last run's outcome. With
    # nothing unsealed (rare: page views are events too), a second read for the run.
    row: Any = (
        oldest.annotate(outcome=Subquery(last_run.values("outcome")[:1]), error=Subquery(last_run.values("error")[:1]))
        .values("event_time", "outcome", "error")
        .first()
    )
    if row is None:
        row = {"event_time": None, **(last_run.values("outcome", "error").first() or {"outcome": None, "error": ""})}
    failed = row["outcome"] == JobOutcome.FAILED
    return SealingStatus(
        oldest_unsealed_at=row["event_time"],
        last_run_failed=failed,
        last_error=(row["error"] or "") if failed else "",
        behind_after=behind_after,
        now=now,
    )


def _next_rotation(key: Key) -> str:
    """The report's "Next rotation": only a key that will rotate has one."""
    if not key.rotation_enabled or key.next_rotation_at is None:
        return ""
    if key.state in ("PendingDeletion", "PendingReplicaDeletion"):
        return "none (pending deletion)"
    if key.state != "Enabled":
        return f"paused ({key.state.lower()})"
    return f"{key.next_rotation_at:%Y-%m-%d}"


def _alarm_names(events: list[AuditEvent]) -> dict[str, str]:
    from audit.models import Alarm

    ids = {
        str((e.request_parameters or {}).get("alarmId") or (e.response_elements or {}).get("alarmId") or "")
        for e in events
    }
    ids.discard("")
    return {str(pk): name for pk, name in Alarm.objects.filter(pk__in=ids).values_list("pk", "name")}


def _alarm_name(event: AuditEvent, names: dict[str, str]) -> str:
    params = event.request_parameters or {}
    found = params.get("alarmName") or (event.response_elements or {}).get("alarmName")
    if found:
        return str(found)
    alarm_id = str(params.get("alarmId") or (event.response_elements or {}).get("alarmId") or "")
    return names.get(alarm_id, f"alarm {alarm_id} (deleted)" if alarm_id else "-")


def _alarm_change(event: AuditEvent) -> str:
    """An alarm event in words: a transition with its reason, an acknowledgement's comment, a change."""
    response = event.response_elements or {}
    params = event.request_parameters or {}
    if event.error_code:
        return f"Refused: {event.error_code}"
    if "newState" in response:
        return f"{response.get('oldState')} → {response['newState']}: {response.get('reason', '')}".strip()
    if event.event_name == "AcknowledgeAlarm":
        return f"Acknowledged: {params.get('comment') or 'no comment'}"
    if event.event_name in ("CreateAlarm", "UpdateAlarm"):
        condition = (
            f"{params.get('metricName', '')} {params.get('comparisonOperator', '')} {params.get('threshold', '')}"
        )
        return f"{'Created' if event.event_name == 'CreateAlarm' else 'Changed'}: {condition}"
    if event.event_name == "DeleteAlarm":
        return "Deleted"
    return event.event_name


@dataclass
class AlarmContext:
    """What made an alarm fire: the datapoint's period and the events counted in it, by key, principal and operation."""

    since: datetime
    until: datetime
    value: float | None
    keys: list[tuple[str, str, int]]  # (key id, first alias or "", events)
    principals: list[tuple[str, int]]
    operations: list[tuple[str, int]]
    search_url: str  # the Audit page's search for exactly these events


CONTEXT_ROWS = 5


def _alarm_events(alarm: Any, qs: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
    """The events an alarm's metric counts (the roll-up rules of audit.services.alarm_evaluation, on events)."""
    from audit.models import AlarmMetric
    from audit.services.alarm_evaluation import KEY_STATE_EVENTS

    if alarm.key_id:
        qs = qs.filter(key_id=alarm.key_id)
    if alarm.operation:
        qs = qs.filter(event_name=alarm.operation)
    if alarm.principal_arn:
        qs = qs.filter(principal_arn=alarm.principal_arn)
    if alarm.error_code:
        qs = qs.filter(error_code=alarm.error_code)
    if alarm.metric == AlarmMetric.DENIALS:
        qs = qs.filter(error_code=DENIED)
    elif alarm.metric == AlarmMetric.ERRORS:
        qs = qs.exclude(error_code="")
    elif alarm.metric == AlarmMetric.KEY_STATE_CHANGES:
        qs = qs.filter(error_code="", event_name__in=KEY_STATE_EVENTS)
    return qs


def alarm_context_for(*, caller: Caller, alarm: Any, trip: Any = None) -> AlarmContext | None:
    """The context of the alarm's latest breaching datapoint (of ``trip``, the
    history row that sent it to ALARM, else of its current state); None when
    no datapoint breached."""
    from audit.services.alarm_evaluation import breaches

    data = (trip.reason_data if trip is not None else None) or alarm.state_reason_data or {}
    points = [
        (datetime.fromisoformat(p["timestamp"]), p["value"])
        for p in data.get("evaluatedDatapoints", [])
        if p.get("value") is not None and breaches(alarm.comparison, p["value"], alarm.threshold)
    ]
    if not points:
        return None
    since, value = max(points)
    until = since + timedelta(seconds=alarm.period)
    events = _alarm_events(alarm, _events_for(caller).filter(event_time__gte=since, event_time__lt=until))

    def top(column: str) -> list[tuple[str, int]]:
        rows = events.exclude(**{column: ""}).values(column).annotate(n=Count("id")).order_by("-n", column)
        return [(row[column], row["n"]) for row in rows[:CONTEXT_ROWS]]

    key_counts = top("key_id")
    aliases: dict[str, str] = {}
    for alias in Alias.objects.filter(key_id__in=[k for k, _ in key_counts]).order_by("name"):
        aliases.setdefault(str(alias.key_id), alias.name)
    params = {
        "since": canonical.iso(since),
        "until": canonical.iso(until),
        "key": alarm.key_id,
        "event": alarm.operation,
        "principal": alarm.principal_arn,
        "outcome": {"denials": "denied", "errors": "error"}.get(alarm.metric, ""),
        "routine": "show",
    }
    return AlarmContext(
        since=since,
        until=until,
        value=value,
        keys=[(k, aliases.get(k, ""), n) for k, n in key_counts],
        principals=top("principal_arn"),
        operations=top("event_name"),
        search_url="?" + urlencode({k: v for k, v in params.items() if v}),
    )
