"""Usage roll-ups: counting audit events into minute, hour and day buckets.

``usage_rollup`` is the only writer of ``UsageRollup`` and ``KeyFirstUse``;
``usage_rows`` is how charts and alarms read usage (roll-ups plus the few
events not rolled up yet, so what they show is exact, not a minute late).

What counts as usage: KMS requests (``event_source`` kms.amazonaws.com),
except the dashboard's own page reads (a DescribeKey on every key page view).
Jobs' RunJob events, sign-ins and alarm changes are not usage.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, Count, DateTimeField, F, Func, Max, Q, QuerySet, Value, When
from django.db.models.functions import Trunc

from audit.models import DAY, HOUR, MINUTE, AuditEvent, UsageRollup, UsageWatermark
from kmsweb.lib import operations
from kmsweb.lib.caller import Caller

DENIED = "AccessDeniedException"
INVALID_STATE = "KMSInvalidStateException"
# AWS's CloudTrail metric filter for "use of a key pending deletion" matches
# this message; kmsweb words it the same way (keys/services/common.py).
PENDING_DELETION_SUFFIX = " is pending deletion."
# A multi-Region primary key scheduled for deletion, waiting for its replicas to go first.
PENDING_REPLICA_DELETION_SUFFIX = " is pending replica deletion."
CRYPTO_EVENTS = operations.CRYPTO
# An audit event's id is taken at its INSERT, which is the last statement
# of its transaction before COMMIT; we assume that commit follows within
# this many seconds (see usage_rollup).
SAFETY_LAG = timedelta(seconds=10)
# Events per transaction: bounds a catch-up's lock time and memory.
CHUNK = 500_000
DIMENSIONS = ("account_id", "key_id", "event_name", "outcome", "error_code", "pending_deletion", "principal_arn")

_USAGE_WHERE = "e.event_source = 'kms.amazonaws.com' AND NOT (e.origin = 'dashboard' AND e.read_only)"
_OUTCOME_SQL = f"CASE WHEN e.error_code = '' THEN 'ok' WHEN e.error_code = '{DENIED}' THEN 'denied' ELSE 'error' END"  # noqa: S608
_PENDING_SQL = (
    f"(e.error_code = '{INVALID_STATE}' AND (e.error_message LIKE '%%{PENDING_DELETION_SUFFIX}'"
    f" OR e.error_message LIKE '%%{PENDING_REPLICA_DELETION_SUFFIX}'))"
)
_COLS = "account_id, key_id, event_name, outcome, error_code, pending_deletion, principal_arn"
_CONFLICT = (
    "ON CONFLICT (account_id, resolution, bucket, key_id, event_name, outcome, error_code, pending_deletion,"
    " principal_arn) DO UPDATE SET count = audit_usagerollup.count + excluded.count"
)
_CRYPTO_IN = ", ".join(f"'{n}'" for n in CRYPTO_EVENTS)


def _first_use(source: str) -> str:
    """First successful cryptographic use per (key, principal), from the minute groups in ``source``."""
    return (
        "INSERT INTO audit_keyfirstuse (account_id, key_id, principal_arn, first_used_at, first_event_id)"  # noqa: S608
        f" SELECT account_id, key_id, principal_arn, MIN(first_at), MIN(first_id) FROM {source}"
        f" WHERE outcome = 'ok' AND key_id <> '' AND principal_arn <> '' AND event_name IN ({_CRYPTO_IN})"
        " GROUP BY account_id, key_id, principal_arn ON CONFLICT (key_id, principal_arn) DO NOTHING"
    )


def _minute_select(bucket_sql: str) -> str:
    # Constants only; the id range is passed as parameters.
    return (
        f"SELECT {bucket_sql} AS bucket, e.recipient_account_id AS account_id, e.key_id, e.event_name,"  # noqa: S608
        f" {_OUTCOME_SQL} AS outcome, e.error_code, {_PENDING_SQL} AS pending_deletion, e.principal_arn,"
        " COUNT(*) AS n, MIN(e.event_time) AS first_at, MIN(e.id) AS first_id"
        f" FROM audit_auditevent e WHERE e.id > %s AND e.id <= %s AND {_USAGE_WHERE}"
        " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
    )


def _rollup_postgresql(cursor: Any, low: int, high: int) -> None:
    # One statement, one pass over the events: the minute groups are
    # computed once and feed the three resolutions and the first uses
    # (data-modifying CTEs); each upsert adds to existing counts.
    def upsert(resolution: int, trunc: str) -> str:
        if not trunc:  # the minute groups are already one row per minute and dimensions
            return (
                f"INSERT INTO audit_usagerollup (resolution, bucket, {_COLS}, count)"  # noqa: S608
                f" SELECT {resolution}, bucket, {_COLS}, n FROM m {_CONFLICT}"
            )
        return (
            f"INSERT INTO audit_usagerollup (resolution, bucket, {_COLS}, count)"  # noqa: S608
            f" SELECT {resolution}, date_trunc('{trunc}', bucket), {_COLS}, SUM(n) FROM m"
            f" GROUP BY 2, 3, 4, 5, 6, 7, 8, 9 {_CONFLICT}"
        )

    minutes = _minute_select("date_trunc('minute', e.event_time)")
    cursor.execute(
        f"WITH m AS MATERIALIZED ({minutes}),"
        f" mins AS ({upsert(MINUTE, '')}),"
        f" hours AS ({upsert(HOUR, 'hour')}),"
        f" days AS ({upsert(DAY, 'day')})"
        f" {_first_use('m')}",
        [low, high],
    )


def _rollup_sqlite(cursor: Any, low: int, high: int) -> None:
    # Django stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS[.ffffff]' text;
    # strftime keeps that shape, so the ORM reads these buckets back as is.
    cursor.execute("DROP TABLE IF EXISTS temp.kmsweb_rollup_m")
    cursor.execute(
        "CREATE TEMP TABLE kmsweb_rollup_m AS " + _minute_select("strftime('%%Y-%%m-%%d %%H:%%M:00', e.event_time)"),
        [low, high],
    )
    for resolution, fmt in ((MINUTE, "%Y-%m-%d %H:%M:00"), (HOUR, "%Y-%m-%d %H:00:00"), (DAY, "%Y-%m-%d 00:00:00")):
        # "WHERE true": SQLite's parser needs it between a SELECT and ON CONFLICT.
        cursor.execute(
            f"INSERT INTO audit_usagerollup (resolution, bucket, {_COLS}, count)"  # noqa: S608
            f" SELECT {resolution}, strftime('{fmt}', bucket), {_COLS}, SUM(n) FROM temp.kmsweb_rollup_m WHERE true"
            f" GROUP BY 2, 3, 4, 5, 6, 7, 8, 9 {_CONFLICT}"
        )
    cursor.execute(_first_use("temp.kmsweb_rollup_m"))
    cursor.execute("DROP TABLE temp.kmsweb_rollup_m")


def _upper_bound(low: int, now: datetime) -> int:
    """The highest id above ``low`` of an event recorded at least ``SAFETY_LAG`` ago.

    Scans only the events not rolled up yet (a primary-key range).
    """
    found = AuditEvent.objects.filter(id__gt=low, event_time__lte=now - SAFETY_LAG).aggregate(top=Max("id"))["top"]
    return found or low


def usage_rollup(*, caller: Caller, now: datetime) -> dict[str, int]:
    """Count the audit events not rolled up yet into the roll-ups (the ``rollup_usage`` job).

    Idempotent and safe on two workers: the single ``UsageWatermark`` row is
    locked (``SELECT ... FOR UPDATE``) for the transaction that adds the
    counts of events ``(last_event_id, high]`` and moves the watermark to
    ``high``; a second worker waits for the lock, then sees the new
    watermark and counts only what is left. A crash rolls back both.

    Events committed out of id order: an autocommit INSERT can take a lower
    id than another and commit after it, and a watermark past it would skip
    it forever. ``high`` is therefore the id of the newest event whose
    ``event_time`` is at least ``SAFETY_LAG`` old. Every event is INSERTed
    as the last statement of its transaction (``audited``), right after its
    ``event_time`` is read, so an id below ``high`` was taken before that
    event's time and its transaction has had ``SAFETY_LAG`` to commit. We
    chose this over reading PostgreSQL's in-flight transaction ids because
    it works the same on SQLite, costs one primary-key range scan of the new events, and only delays the
    roll-ups (readers add the events above the watermark live, see
    ``usage_rows``). A transaction stalled for longer than the lag between
    its INSERT and its COMMIT would be missed: none of kmsweb's does.

    Returns ``{"events": n}`` (events rolled up) for the JobRun record.
    """
    total = 0
    UsageWatermark.objects.get_or_create(id=1)
    while True:
        with transaction.atomic():
            mark = UsageWatermark.objects.select_for_update().get(id=1)
            low = mark.last_event_id
            high = _upper_bound(low, now)
            if high <= low:
                break
            top = min(high, low + CHUNK)
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    _rollup_postgresql(cursor, low, top)
                else:
                    _rollup_sqlite(cursor, low, top)
            total += top - low
            mark.last_event_id, mark.updated_at = top, now
            mark.save(update_fields=["last_event_id", "updated_at"])
    return {"event_ids": total, "watermark": _watermark()}


class _SqliteBucket(Func):
    """The bucket start with SQLite's own strftime (Django's Trunc is a Python function there).

    A Python function inside a query needs the GIL while SQLite holds its
    connection lock; a test live server shares one connection between
    threads, and another thread holding the GIL while it waits for that lock
    deadlocks the two. strftime is C, and keeps Django's datetime text shape.
    """

    function = "strftime"
    output_field = DateTimeField()

    def __init__(self, fmt: str, expression: Any) -> None:
        super().__init__(Value(fmt), expression)


_SQLITE_FORMATS = {MINUTE: "%Y-%m-%d %H:%M:00", HOUR: "%Y-%m-%d %H:00:00", DAY: "%Y-%m-%d 00:00:00"}


def _bucket(resolution: int) -> Func:
    if connection.vendor == "sqlite":
        return _SqliteBucket(_SQLITE_FORMATS[resolution], F("event_time"))
    return Trunc("event_time", _TRUNC[resolution])


def _watermark() -> int:
    return UsageWatermark.objects.filter(id=1).values_list("last_event_id", flat=True).first() or 0


# -- Reading ------------------------------------------------------------------------------------

_TRUNC = {MINUTE: "minute", HOUR: "hour", DAY: "day"}


def usage_events() -> QuerySet[AuditEvent]:
    """The events that count as usage (the roll-ups' own filter, in the ORM)."""
    return AuditEvent.objects.filter(event_source="kms.amazonaws.com").exclude(origin="dashboard", read_only=True)


def usage_rows(
    *,
    resolution: int,
    since: datetime,
    until: datetime,
    account_ids: Iterable[str] | None = None,
    key_id: str | None = None,
) -> list[dict[str, Any]]:
    """Usage counts per bucket and dimension for ``since <= bucket < until``.

    The roll-ups hold events up to the watermark; the events above it (the
    last minute or so) are counted straight from the audit table in the same
    snapshot, so the result is exact. Rows: ``bucket`` plus ``DIMENSIONS``
    and ``count``.
    """
    accounts = list(account_ids) if account_ids is not None else None
    # Roll-ups and the events above the watermark must come from one
    # snapshot, or a roll-up committing in between is counted twice: on
    # PostgreSQL one REPEATABLE READ transaction (inside a caller's
    # transaction, the caller's isolation applies). SQLite has one writer
    # and readers that see whole commits, and a test live server shares its
    # one connection between threads, which a transaction here would upset.
    postgres = connection.vendor == "postgresql"
    outer = connection.in_atomic_block
    with transaction.atomic() if postgres else nullcontext():
        if postgres and not outer:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        mark = _watermark()
        rolled = UsageRollup.objects.filter(resolution=resolution, bucket__gte=since, bucket__lt=until)
        raw = usage_events().filter(id__gt=mark, event_time__gte=since, event_time__lt=until)
        if accounts is not None:
            rolled = rolled.filter(account_id__in=accounts)
            raw = raw.filter(recipient_account_id__in=accounts)
        if key_id is not None:
            rolled = rolled.filter(key_id=key_id)
            raw = raw.filter(key_id=key_id)
        rows = list(rolled.values("bucket", *DIMENSIONS, "count"))
        live = (
            raw.annotate(
                bucket=_bucket(resolution),
                account_id=F("recipient_account_id"),
                outcome=Case(
                    When(error_code="", then=Value("ok")),
                    When(error_code=DENIED, then=Value("denied")),
                    default=Value("error"),
                ),
                pending_deletion=Case(
                    When(
                        Q(error_code=INVALID_STATE)
                        & (
                            Q(error_message__endswith=PENDING_DELETION_SUFFIX)
                            | Q(error_message__endswith=PENDING_REPLICA_DELETION_SUFFIX)
                        ),
                        then=Value(True),
                    ),
                    default=Value(False),
                ),
            )
            .values("bucket", *DIMENSIONS)
            .annotate(count=Count("id"))
            .order_by()
        )
        rows.extend(live)
    return rows
