"""Reading the audit trail for the dashboard: usage series and recent denials.

Usage is counted straight from audit events, bucketed in the database; the
background-jobs issue adds roll-up tables that these functions can read
instead without changing their output.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, QuerySet
from django.db.models.functions import Trunc
from django.utils import timezone

from audit.models import AuditEvent
from kmsweb.lib.caller import Caller


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
DENIED = "AccessDeniedException"
MAX_OPERATION_SERIES = 6
# "Last used" means used for cryptography, as AWS's key last-usage does.
CRYPTO_EVENTS = (
    "Encrypt",
    "Decrypt",
    "ReEncrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "Sign",
    "Verify",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
)


def _events_for(caller: Caller) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(recipient_account_id=caller.account_id)


def _usage_events(caller: Caller) -> QuerySet[AuditEvent]:
    """KMS requests that count as use: the dashboard's own page reads
    (DescribeKey on every key page view) and sign-ins do not."""
    return _events_for(caller).filter(event_source="kms.amazonaws.com").exclude(origin="dashboard", read_only=True)


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
    qs = _usage_events(caller).filter(event_time__gte=start, event_time__lte=now)
    if key_id:
        qs = qs.filter(key_id=key_id)
    rows = (
        qs.annotate(bucket=Trunc("event_time", rng.unit))
        .values("bucket", "event_name", "error_code")
        .annotate(n=Count("id"))
        .order_by()
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
        i = index.get(_floor(row["bucket"], rng.unit))
        if i is None:
            continue
        if row["error_code"] == DENIED:
            denied[i] += row["n"]
        elif row["error_code"]:
            errors[i] += row["n"]
        else:
            per_op[row["event_name"]][i] += row["n"]
            totals[row["event_name"]] += row["n"]
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
    """The latest AccessDenied events in the caller's account."""
    return list(_events_for(caller).filter(error_code=DENIED).order_by("-event_time")[:limit])


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
