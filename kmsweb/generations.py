"""Generation counters: a change that takes away access applies on every process at once.

Web processes cache, for the API's hot path, the keys, the access keys with
their principals, the identity policies and the grants they read on every
call (:mod:`kmsweb.ttlcache`). Each cached table has a counter in
``kmsweb.CacheGeneration``; a service that changes such a table bumps its
counter in the same transaction as the change (:func:`generation_bump`).

Each request reads the counters once, with one small SELECT, on its first
cache lookup (concurrent requests of a process share one read that began
after each of them started, see ``_read_for``) (:func:`generations_scope` opens the request's scope; the read
is lazy, so a request that never reaches a cache does not pay it). A cached
entry remembers the counter its loader read, and only a request that read
the same counter may use it. A request that starts after a change was
answered reads the bumped counter (the change and its bump committed
together before the answer), so no entry loaded before the change can
serve it, in this process or any other, on this node or another.

PostgreSQL's LISTEN/NOTIFY would save the read but not give this
guarantee: a notification reaches the other processes some time after the
commit, and a request may start in between.

A read-only API call on PostgreSQL skips the read (``optimistic`` scope):
it assumes the counters this process saw last, and the statement that
commits its audit event checks them (:func:`generations_check_sql`). The
event is written only if the counters are still those the call assumed;
if one moved, the event is not written and the call raises
:class:`StaleGenerations`, and the API answers it again from a scope that
reads the counters. The check runs after the call started and after every
lookup it made, and counters only grow, so a call whose check passes used
no entry older than a change answered before it started; one whose check
fails leaves no event and no answer. The read-only calls, the API's hot
path, then cost the database one statement each (shared by the calls
committing together) instead of two.

Outside a request scope (Celery jobs, management commands, a service called
from a shell or a test) nothing is cached: each lookup reads the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction

KEYS = "keys"
CREDENTIALS = "credentials"
IDENTITY = "identity"
GRANTS = "grants"
NAMES = (KEYS, CREDENTIALS, IDENTITY, GRANTS)

_TABLE = "kmsweb_cachegeneration"
_READ_SQL = f"SELECT name, value FROM {_TABLE}"  # noqa: S608 - a constant table name
# An upsert: a test database flushed between tests has lost its seeded rows.
_BUMP_SQL = (
    f"INSERT INTO {_TABLE} (name, value) VALUES (%s, 1) "  # noqa: S608 - a constant table name
    f"ON CONFLICT (name) DO UPDATE SET value = {_TABLE}.value + 1"
)
_READ_SQL_BYTES = _READ_SQL.encode()
# The read's prepared statement on each connection (psycopg names its own "_pg3_<n>").
_STATEMENT = b"kmsweb_generations"


class Forgetful(Protocol):
    """A per-process cache that can drop everything it holds."""

    def invalidate(self) -> None: ...


_caches: dict[str, list[Forgetful]] = {name: [] for name in NAMES}
# The counters the last request of this process read, to drop stale entries early.
_last_read: dict[str, int] = {}
_last_read_lock = threading.Lock()


class StaleGenerations(BaseException):  # noqa: N818 - a signal to answer again, not an error
    """A call's assumed counters had moved when its event was to commit: nothing was written.

    A ``BaseException``, so that no ``except Exception`` on the way (a
    service's audit of an unexpected failure, the API's last-resort answer)
    turns it into an answer: it unwinds to the API, which serves the call
    again from a scope that reads the counters.
    """


class _Scope:
    """One request's view of the counters, read on first use (or assumed, when optimistic)."""

    __slots__ = ("assumed", "optimistic", "started", "values")

    def __init__(self, optimistic: bool = False) -> None:
        self.values: dict[str, int] | None = None
        self.started = time.monotonic()
        self.optimistic = optimistic
        # Whether ``values`` were taken from this process's last read, unread:
        # they must then be checked where the request's event commits.
        self.assumed = False


# The last shared read of the counters: (when it began, by time.monotonic(); the values).
_shared: tuple[float, dict[str, int]] | None = None
_shared_reading = False
_shared_cond = threading.Condition(threading.Lock())


_scope: ContextVar[_Scope | None] = ContextVar("kmsweb_generation_scope", default=None)


def generation_register(name: str, cache: Forgetful) -> None:
    """Tie ``cache`` to the counter ``name``: it is dropped when the counter moves."""
    if name not in _caches:
        raise ValueError(f"unknown cache generation {name!r}")
    _caches[name].append(cache)


def _forget(name: str) -> None:
    for cache in _caches[name]:
        cache.invalidate()


def generation_bump(*names: str) -> None:
    """Bump the counters ``names`` in the current transaction, after the change's writes.

    Call it from the service that changes a cached table, inside the
    transaction of the change, once that change's rows are written (and
    locked): the bumped counter then becomes visible to other processes in
    the same commit as the change. This process's caches are also dropped at
    once (the rest of this request sees the change) and again on commit.
    Counters are bumped in name order, so two transactions bumping several
    never wait on each other in a cycle.
    """
    ordered = sorted(set(names))
    with connection.cursor() as cursor:
        for name in ordered:
            if name not in _caches:
                raise ValueError(f"unknown cache generation {name!r}")
            cursor.execute(_BUMP_SQL, [name])
    for name in ordered:
        _forget(name)
        transaction.on_commit(lambda name=name: _forget(name))  # type: ignore[misc]


def generations_read() -> dict[str, int]:
    """The counters as the database holds them now (a missing row reads as 0)."""
    # One lookup of the connection: each attribute read through
    # ``django.db.connection`` costs a thread-local lookup of its own.
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor == "postgresql":
        rows = _read_direct(conn)
    else:
        with conn.cursor() as cursor:
            cursor.execute(_READ_SQL)
            rows = cursor.fetchall()
    values = dict.fromkeys(NAMES, 0)
    values.update((str(name), int(value)) for name, value in rows)
    return values


def _read_direct(conn: Any) -> list[tuple[str, int]]:
    """The read through libpq itself, prepared on each connection.

    Every API call makes it, so it skips psycopg's cursor machinery (half
    of the read's client CPU), and runs as a prepared statement (half of
    PostgreSQL's). A prepared statement can be gone (psycopg sends
    ``DEALLOCATE ALL`` when it drops its own cache, a pooler may too): then
    it is prepared again. That is tried only outside a transaction, where a
    failed statement spoils nothing; inside one (a dashboard view's first
    lookup may come in a service's transaction), and with
    ``KMSWEB_DB_PREPARED_STATEMENTS`` off, the query is sent as text. Still
    inside Django's connection handling: health check, connection setup and
    database error wrapping.
    """
    from django.conf import settings
    from psycopg import pq

    conn.close_if_health_check_failed()
    conn.ensure_connection()
    pgconn = conn.connection.pgconn
    with conn.wrap_database_errors:
        if settings.KMSWEB_DB_PREPARED_STATEMENTS and pgconn.transaction_status == pq.TransactionStatus.IDLE:
            result = pgconn.exec_prepared(_STATEMENT, [])
            if result.status != pq.ExecStatus.TUPLES_OK:
                _check(pgconn.prepare(_STATEMENT, _READ_SQL_BYTES), pq.ExecStatus.COMMAND_OK)
                result = pgconn.exec_prepared(_STATEMENT, [])
        else:
            result = pgconn.exec_(_READ_SQL_BYTES)
        _check(result, pq.ExecStatus.TUPLES_OK)
        return [
            (bytes(result.get_value(i, 0) or b"").decode(), int(bytes(result.get_value(i, 1) or b"0")))
            for i in range(result.ntuples)
        ]


def _check(result: Any, expected: Any) -> None:
    """Raise psycopg's error for a failed libpq result (Django wraps it as its own)."""
    from psycopg import OperationalError

    if result.status != expected:
        message = (result.error_message or b"").decode("utf-8", "replace").strip()
        raise OperationalError(message or f"reading the cache generations failed ({result.status})")


@contextmanager
def generations_scope(*, optimistic: bool = False) -> Iterator[None]:
    """One request: its cache lookups use the counters read on the first of them.

    ``optimistic``: the lookups use the counters this process read last,
    unread, and the request's audit event checks them as it commits (see
    the module's docstring); a request that cannot have its event checked
    that way must not ask for it. A nested scope shares the outer one.
    """
    if _scope.get() is not None:
        yield
        return
    token = _scope.set(_Scope(optimistic))
    try:
        yield
    finally:
        _scope.reset(token)


def generation_observed(name: str) -> int | None:
    """The request's counter ``name`` (read now if it is the request's first lookup).

    None outside a request scope: the caller must not use a cached entry.
    """
    scope = _scope.get()
    if scope is None:
        return None
    if scope.values is None and scope.optimistic:
        with _last_read_lock:
            if len(_last_read) == len(NAMES):
                scope.values = dict(_last_read)
                scope.assumed = True
    if scope.values is None:
        scope.values = values = _read_for(scope)
        generations_seen(values)
    return scope.values[name]


def _read_for(scope: _Scope) -> dict[str, int]:
    """The counters for a request: a read that began after the request did, shared by the requests waiting on it.

    Concurrent requests of a process need one read, not one each: any read
    that began after a request's scope opened sees every change answered
    before that request started, which is all the request needs. The first
    request to find no read in progress reads for itself and for every
    request that started before its read began; a request that started
    later waits for the next read. Inside a transaction the read is the
    request's own (it would see the transaction's uncommitted bumps).
    """
    global _shared, _shared_reading
    if connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return generations_read()
    with _shared_cond:
        while True:
            shared = _shared
            if shared is not None and shared[0] >= scope.started:
                return shared[1]
            if not _shared_reading:
                _shared_reading = True
                break
            _shared_cond.wait()
    began = time.monotonic()
    values: dict[str, int] | None = None
    try:
        values = generations_read()
    finally:
        with _shared_cond:
            _shared_reading = False
            if values is not None and (_shared is None or began > _shared[0]):
                _shared = (began, values)
            _shared_cond.notify_all()
    assert values is not None  # generations_read() returned
    return values


def generations_unverified() -> str | None:
    """The counters the current request assumed without reading them, as the check compares them.

    None when there is nothing to check: no optimistic scope, no lookup
    made yet, or counters that were read.
    """
    scope = _scope.get()
    if scope is None or not scope.assumed or scope.values is None:
        return None
    return vector_text(scope.values)


def vector_text(values: dict[str, int]) -> str:
    """The counters as :func:`generations_check_sql` writes them: values in ``NAMES`` order, comma-separated."""
    return ",".join(str(values.get(name, 0)) for name in NAMES)


def generations_check_sql() -> str:
    """A scalar SQL subquery: the counters now, written as :func:`vector_text` writes them.

    A statement compares it with a request's :func:`generations_unverified`
    (a missing row reads as 0, as in :func:`generations_read`).
    """
    parts = ", ".join(f"coalesce(max(value) FILTER (WHERE name = '{name}'), 0)::text" for name in NAMES)
    return f"(SELECT concat_ws(',', {parts}) FROM {_TABLE})"  # noqa: S608 - constant names


def generations_verify(unverified: str) -> None:
    """Raise :class:`StaleGenerations` unless the counters now are ``unverified``.

    For an event written outside the group writer (an error recorded in a
    transaction of its own): the read is in the caller's transaction.
    """
    now = generations_read()
    generations_seen(now)
    if vector_text(now) != unverified:
        raise StaleGenerations


def generations_seen(values: dict[str, int]) -> None:
    """Take counters just read as this process's last read.

    Drops the caches whose counter moved.
    """
    with _last_read_lock:
        if values == _last_read:
            return
        for changed in [n for n in NAMES if _last_read.get(n) != values[n]]:
            _forget(changed)
        _last_read.clear()
        _last_read.update(values)


def generations_forget_all() -> None:
    """Drop every registered cache of this process (tests, between databases)."""
    global _shared
    with _shared_cond:
        _shared = None
    with _last_read_lock:
        _last_read.clear()
    for name in NAMES:
        _forget(name)
