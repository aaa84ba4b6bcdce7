"""Empty kmsweb's audit table in the benchmark database before a run.

    python bench/kmsweb_audit_reset.py

The floor's audit table is emptied before each of its runs (``setup_db.py
--truncate``); kmsweb's gets the same, so both INSERT into a table that
starts empty. ``BENCH_KEEP_AUDIT=1`` keeps the rows (to measure kmsweb
writing into a large trail). Only a database whose name contains "bench" is
touched: kmsweb's audit trail is append-only everywhere else.
"""

import os
import sys
from urllib.parse import urlsplit

import psycopg

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/kmsweb_bench"


def main() -> int:
    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    name = urlsplit(url).path.lstrip("/")
    if "bench" not in name:
        print(f"refusing to empty the audit table of {name!r}: not a benchmark database", file=sys.stderr)
        return 2
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('audit_auditevent') IS NOT NULL").fetchone()[0]
        if not exists:
            print("audit_auditevent not there yet (migrate creates it)")
            return 0
        if os.environ.get("BENCH_KEEP_AUDIT") == "1":
            count = conn.execute("SELECT count(*) FROM audit_auditevent").fetchone()[0]
            print(f"audit_auditevent kept ({count} rows)")
            return 0
        conn.execute("TRUNCATE audit_auditevent")
    print("audit_auditevent emptied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
