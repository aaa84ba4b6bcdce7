"""Create the benchmark database (if missing) and the floor's audit table.

    python bench/floor/setup_db.py [--truncate]

Reads DATABASE_URL (default postgres://postgres@127.0.0.1:5432/kmsweb_bench).
"""

import argparse
import os
import pathlib
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/kmsweb_bench"
SCHEMA = pathlib.Path(__file__).with_name("schema.sql")


def ensure_database(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truncate", action="store_true", help="empty the audit table")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    ensure_database(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA.read_text())
        if args.truncate:
            conn.execute("TRUNCATE bench_floor_audit")
        count = conn.execute("SELECT count(*) FROM bench_floor_audit").fetchone()[0]
    print(f"bench_floor_audit ready ({count} rows)")


if __name__ == "__main__":
    main()
