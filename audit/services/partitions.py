"""The audit event table's monthly partitions (PostgreSQL).

Migration ``0008_partitioned_events`` partitions the table by month on
``event_time``; the sealing job calls ``audit_partitions_ensure`` every run so
that the next months exist before their first event, and the retention job
drops whole months once every event in them is archived. Events whose month
has no partition land in the DEFAULT partition; creating that month later
moves them into it. On SQLite (one plain table) every function here is a
no-op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection, transaction

from audit.models import AuditEvent

TABLE = AuditEvent._meta.db_table
DEFAULT = f"{TABLE}_pdefault"
# Months created ahead of the current one.
MONTHS_AHEAD = 3
_NAME = re.compile(rf"^{TABLE}_p(\d{{4}})(\d{{2}})$")


@dataclass(frozen=True)
class Partition:
    """One monthly partition: ``start <= event_time < end``."""

    name: str
    start: datetime
    end: datetime


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of ``moment``'s month."""
    moment = moment.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return month.replace(year=index // 12, month=index % 12 + 1)


def partitioned() -> bool:
    """Whether the event table is partitioned (PostgreSQL after migration 0008)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cur:
        cur.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [TABLE])
        row = cur.fetchone()
    return row is not None and row[0] == "p"


def audit_partitions() -> list[Partition]:
    """The monthly partitions, oldest first (the DEFAULT partition is not among them)."""
    if not partitioned():
        return []
    with connection.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        names = [row[0] for row in cur.fetchall()]
    out = []
    for name in names:
        match = _NAME.match(name)
        if match:
            start = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
            out.append(Partition(name, start, add_months(start, 1)))
    return sorted(out, key=lambda p: p.start)


def audit_partitions_ensure(*, now: datetime, ahead: int = MONTHS_AHEAD) -> list[str]:
    """Create the partitions of ``now``'s month and the ``ahead`` next ones that are missing; their names.

    Events already in the DEFAULT partition for such a month are moved into
    the new partition in the same transaction (PostgreSQL refuses to create
    a partition whose rows sit in the DEFAULT one).
    """
    if not partitioned():
        return []
    have = {p.start for p in audit_partitions()}
    first = month_start(now)
    created = []
    for n in range(ahead + 1):
        month = add_months(first, n)
        if month not in have:
            created.append(audit_partition_create(month=month))
    return created


def audit_partition_create(*, month: datetime) -> str:
    """Create the partition of the month starting at ``month`` (moving its rows out of DEFAULT); its name.

    The table is made apart, with a CHECK of its bounds, and then attached:
    ATTACH takes a lock on the parent that lets audit INSERTs go on (CREATE
    TABLE ... PARTITION OF would stop them), and the CHECK spares it a scan.
    ``lock_timeout`` keeps a busy DEFAULT partition from holding it up:
    the next run tries again.
    """
    name = f"{TABLE}_p{month:%Y%m}"
    end = add_months(month, 1)
    bounds = [month, end]
    low, high = month.isoformat(), end.isoformat()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL lock_timeout = '5s'")
        cur.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS)")
        cur.execute(
            f"ALTER TABLE {name} ADD CONSTRAINT {name}_bounds CHECK (event_time >= '{low}' AND event_time < '{high}')"
        )
        cur.execute(
            f"SELECT EXISTS (SELECT 1 FROM {DEFAULT} WHERE event_time >= %s AND event_time < %s)",  # noqa: S608
            bounds,
        )
        if cur.fetchone()[0]:
            # Move the month's rows out of DEFAULT (PostgreSQL refuses to attach a month DEFAULT holds rows of).
            cur.execute(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
            cur.execute(
                f"INSERT INTO {name} SELECT * FROM {DEFAULT} WHERE event_time >= %s AND event_time < %s",  # noqa: S608
                bounds,
            )
            cur.execute("SET LOCAL kmsweb.audit_retention = 'on'")
            cur.execute(f"DELETE FROM {DEFAULT} WHERE event_time >= %s AND event_time < %s", bounds)  # noqa: S608
            cur.execute("SET LOCAL kmsweb.audit_retention = 'off'")
        cur.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ('{low}') TO ('{high}')")
        cur.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bounds")
    return name


def audit_partitions_droppable(*, before: datetime, after_id: int, through_id: int) -> list[Partition]:
    """Months that end by ``before`` and hold only events with ``after_id < id <= through_id``.

    An event below ``after_id`` would sit in an already archived range (an
    insertion ``verify_audit`` reports): its month is kept, as evidence.
    """
    out = []
    with connection.cursor() as cur:
        for part in audit_partitions():
            if part.end > before:
                break
            cur.execute(
                f"SELECT EXISTS (SELECT 1 FROM {part.name} WHERE id > %s OR id <= %s)",  # noqa: S608
                [through_id, after_id],
            )
            if not cur.fetchone()[0]:
                out.append(part)
    return out


def drop_partitions(parts: list[Partition]) -> int:
    """Drop ``parts`` (inside the caller's transaction); the number of events they held."""
    count = 0
    with connection.cursor() as cur:
        for part in parts:
            cur.execute(f"SELECT count(*) FROM {part.name}")  # noqa: S608
            count += cur.fetchone()[0]
            cur.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {part.name}")
            cur.execute(f"DROP TABLE {part.name}")
    return count
