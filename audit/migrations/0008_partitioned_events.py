"""On PostgreSQL, the audit event table becomes partitioned by month on
``event_time`` (declarative RANGE partitioning), with a DEFAULT partition as
a safety net; SQLite keeps one plain table.

The primary key becomes ``(id, event_time)`` and the ``event_id`` unique
constraint ``(event_id, event_time)``: PostgreSQL requires every unique
constraint of a partitioned table to hold the partition key. ``id`` keeps its
identity sequence (its value carries over), so the ids the sealer and the
verifier rely on continue where they were. The existing rows are copied into
the new table, the Django-named indexes and the append-only trigger are
created on the parent (PostgreSQL clones them onto every partition), and the
trigger function lets the retention job's DELETE through on the partitions
too. ``audit.services.partitions`` creates the months ahead afterwards.
"""

from datetime import UTC, datetime

from django.db import migrations

TABLE = "audit_auditevent"
MONTHS_AHEAD = 3

INDEXES = {
    "audit_key_time_idx": "(key_id, event_time)",
    "audit_account_time_idx": "(recipient_account_id, event_time)",
    "audit_time_id_idx": "(event_time, id)",
    "audit_name_time_idx": "(event_name, event_time, id)",
    "audit_principal_time_idx": "(principal_arn, event_time, id)",
    "audit_ip_time_idx": "(source_ip, event_time, id)",
    "audit_error_time_idx": "(error_code, event_time, id) WHERE NOT (error_code = '')",
}

APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION kmsweb_audit_append_only() RETURNS trigger AS $$
BEGIN
    -- The retention job deletes archived ranges (and the partition job moves
    -- rows out of the DEFAULT partition) with this session setting on.
    IF TG_OP = 'DELETE' AND left(TG_TABLE_NAME, {n}) = '{table}'
       AND current_setting('kmsweb.audit_retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
"""


def _months(first: datetime, last: datetime) -> list[datetime]:
    month = first.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    out = []
    while month <= last:
        out.append(month)
        month = _next_month(month)
    return out


def _next_month(month: datetime) -> datetime:
    return month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)


def _rebuild(schema_editor, *, partitioned: bool) -> None:
    def execute(sql: str) -> None:
        schema_editor.execute(sql, params=None)

    with schema_editor.connection.cursor() as cur:
        cur.execute(f"SELECT min(event_time), coalesce(max(id), 0) FROM {TABLE}")  # noqa: S608
        oldest, highest = cur.fetchone()
        cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
        old_sequence = cur.fetchone()[0]
        cur.execute(f"SELECT last_value, is_called FROM {old_sequence}")  # noqa: S608 (from the catalog)
        last_value, is_called = cur.fetchone()
    execute(f"ALTER TABLE {TABLE} RENAME TO {TABLE}_old")
    for name in INDEXES:
        execute(f"DROP INDEX IF EXISTS {name}")
    # The constraints' index names are taken again by the new table.
    execute(f"ALTER TABLE {TABLE}_old DROP CONSTRAINT IF EXISTS {TABLE}_pkey")
    execute(f"ALTER TABLE {TABLE}_old DROP CONSTRAINT IF EXISTS {TABLE}_event_id_key")
    how = " PARTITION BY RANGE (event_time)" if partitioned else ""
    execute(f"CREATE TABLE {TABLE} (LIKE {TABLE}_old INCLUDING DEFAULTS INCLUDING IDENTITY){how}")
    if partitioned:
        execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id, event_time)")
        execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_event_id_key UNIQUE (event_id, event_time)")
        now = datetime.now(UTC)
        first = min(oldest, now) if oldest is not None else now
        last = _months(now, now)[0]
        for _ in range(MONTHS_AHEAD):
            last = _next_month(last)
        for month in _months(first, last):
            execute(
                f"CREATE TABLE {TABLE}_p{month:%Y%m} PARTITION OF {TABLE} "
                f"FOR VALUES FROM ('{month.isoformat()}') TO ('{_next_month(month).isoformat()}')"
            )
        execute(f"CREATE TABLE {TABLE}_pdefault PARTITION OF {TABLE} DEFAULT")
    else:
        execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id)")
        execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_event_id_key UNIQUE (event_id)")
    execute(f"INSERT INTO {TABLE} OVERRIDING SYSTEM VALUE SELECT * FROM {TABLE}_old")  # noqa: S608
    execute(f"DROP TABLE {TABLE}_old")
    with schema_editor.connection.cursor() as cur:
        cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
        sequence = cur.fetchone()[0]
        if sequence != old_sequence:
            cur.execute(f"ALTER SEQUENCE {sequence} RENAME TO {old_sequence.rpartition('.')[2]}")
            sequence = old_sequence
        # The ids continue where they were (the verifier compares them with the sequence).
        if is_called or highest:
            cur.execute("SELECT setval(%s, %s, true)", [sequence, max(last_value, highest)])
    for name, columns in INDEXES.items():
        on, _, where = columns.partition(" WHERE ")
        execute(f"CREATE INDEX {name} ON {TABLE} {on}" + (f" WHERE {where}" if where else ""))
    execute(APPEND_ONLY_FUNCTION.format(n=len(TABLE), table=TABLE))
    execute(
        f"CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
        "FOR EACH ROW EXECUTE FUNCTION kmsweb_audit_append_only()"
    )


def partition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        _rebuild(schema_editor, partitioned=True)


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        _rebuild(schema_editor, partitioned=False)


class Migration(migrations.Migration):
    # One transaction: a failure leaves the plain table as it was.
    atomic = True

    dependencies = [
        ("audit", "0007_alter_alarm_metric"),
    ]

    operations = [
        migrations.RunPython(partition, unpartition, elidable=False),
    ]
