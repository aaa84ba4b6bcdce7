"""Group commit of the read-only calls' audit events, still durable before the answer.

A call that changes no state (Encrypt, Decrypt, Sign, Describe…) has one
row to write: its audit event. Committing each alone costs a WAL flush and
a statement per call; here the events of concurrent calls in one process
share a transaction (one multi-row INSERT in autocommit, on PostgreSQL
prepared once per connection and batch size) and one flush. Each call
still answers only after the transaction holding its event has committed,
so an answered call always has its durable event.

A leader waits for the calls of its process that are already on their way
(``arrive``: a read-only API call, from its start until its event is queued
or the call ends) before it takes the queue, at most
``KMSWEB_AUDIT_GROUP_WAIT_US`` microseconds (default 5,000; 0: never). Calls
that share a process's CPU finish at about the same time anyway, so their
events share one statement and one flush instead of two or three, at little
cost in latency: the database's work per event falls with the batch's size.
A lone call has nobody on the way and leads at once. Calls that arrive
after the leader started waiting are not waited for (the next batch takes
them), so a steady stream cannot keep a batch open.

The process has one writer per database. A call hands its event over and
waits; the first waiting call to find no commit in progress leads: it takes
every event queued so far (up to ``MAX_BATCH``), writes them on its own
database connection and wakes the calls whose events it wrote. Events that
arrive meanwhile wait for the next leader. A lone call leads at once, with
no hand-over to another thread, so it pays no latency for the grouping.

The order in which events commit is not their id order across processes;
the sealer waits for every transaction writing audit rows before it seals
(``audit.services.sealing``), so a batch is sealed like any other writer.

A call that assumed the cache generations instead of reading them hands
them over with its event (``verify``): the batch's statement writes its
event only if they still hold (``kmsweb.generations``), and the call whose
event was left out raises ``StaleGenerations`` and is answered again.

When the commit fails, every call of the batch fails with
``AuditWriteFailed`` (``KMSInternalException``, HTTP 500) and no result:
its work is discarded, no plaintext leaves. A lost connection can fail the
client's COMMIT after the server made it durable, so before failing the
batch the leader asks again, on a new connection, whether the batch's
events are there (by their ``event_id``): if they are, the calls succeed.
An error that is not the connection's (one event the database refuses)
writes the events one by one instead, so only the refused one fails.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections, router

from audit.models import AuditEvent
from kmsweb import metrics
from kmsweb.generations import StaleGenerations
from kmsweb.lib.errors import InternalError

logger = logging.getLogger(__name__)

# Events per transaction at most: bounds one statement's size and the wait
# of the calls queued behind a large batch.
MAX_BATCH = 128
# Batches committing at once. One: every event that arrives during a commit
# waits for it and goes in the next batch (the largest batches, the least
# database work per event); a process then commits at most
# threads / commit latency events per second.
MAX_IN_FLIGHT = 1
# How long a failure keeps /readyz saying the writer is failing.
FAILING_FOR_SECONDS = 5.0


class AuditWriteFailed(InternalError):
    """The audit event could not be committed: the call fails, unanswered by its result.

    Carries ``audited = True``: the audit store is what failed, and a call
    refused this way has no event at all.
    """


@dataclass(slots=True)
class _Pending:
    values: dict[str, Any]
    # The generations the call assumed, to be checked by the statement (None: nothing to check).
    verify: str | None = None
    taken: bool = False
    done: bool = False
    error: BaseException | None = None


@dataclass
class WriterState:
    """What /readyz and /metrics read of a writer."""

    batches: int = 0
    events: int = 0
    failures: int = 0
    last_failure: float | None = None
    last_success: float | None = None


@dataclass
class GroupWriter:
    """One database's group-committing audit writer for this process."""

    alias: str
    max_batch: int = MAX_BATCH
    max_in_flight: int = MAX_IN_FLIGHT
    state: WriterState = field(default_factory=WriterState)

    def __post_init__(self) -> None:
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        # A waiting leader's own condition: woken when a call it waits for
        # queues its event or ends, not when batches finish.
        self._joined = threading.Condition(lock)
        self._queue: list[_Pending] = []
        self._leading = 0
        # The calls on their way (thread id -> arrival number), and the last number given.
        self._on_the_way: dict[int, int] = {}
        self._arrivals = 0
        self._leaders_waiting = 0

    def arrive(self) -> None:
        """This thread's call will hand over an event soon: a leader may wait for it."""
        with self._cond:
            self._arrivals += 1
            self._on_the_way[threading.get_ident()] = self._arrivals

    def depart(self) -> None:
        """This thread's call is over (its event queued, or none to come)."""
        with self._cond:
            self._gone(threading.get_ident())

    def _gone(self, ident: int) -> None:
        # Called with the lock held.
        if self._on_the_way.pop(ident, None) is not None and self._leaders_waiting:
            self._joined.notify_all()

    def _wait_for_calls_on_the_way(self) -> None:
        """As leader (the lock held): wait until the calls that arrived before now queued their events or ended.

        At most ``KMSWEB_AUDIT_GROUP_WAIT_US``, and not once the queue holds a full batch.
        """
        wait = settings.KMSWEB_AUDIT_GROUP_WAIT_US
        if wait <= 0 or not self._on_the_way:
            return
        horizon = self._arrivals
        deadline = time.monotonic() + wait / 1_000_000
        self._leaders_waiting += 1
        try:
            while len(self._queue) < self.max_batch and any(n <= horizon for n in self._on_the_way.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._joined.wait(remaining)
        finally:
            self._leaders_waiting -= 1

    def commit(self, values: dict[str, Any], verify: str | None = None) -> None:
        """Write ``values`` (one event's columns) and return once its transaction committed.

        ``verify``: the cache generations the call assumed (``vector_text``);
        the event is written only if they still hold. Raises
        ``StaleGenerations`` when they did not (nothing written), and
        ``AuditWriteFailed`` when the commit failed.
        """
        values.setdefault("event_id", uuid.uuid4())
        pending = _Pending(values, verify)
        cond = self._cond
        with cond:
            self._queue.append(pending)
            self._gone(threading.get_ident())
        while True:
            with cond:
                while not pending.done and (pending.taken or self._leading >= self.max_in_flight):
                    cond.wait()
                if pending.done:
                    break
                self._leading += 1
                self._wait_for_calls_on_the_way()
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                for item in batch:
                    item.taken = True
            # Until the write says otherwise, the batch failed: a leader
            # interrupted mid-write (a worker's timeout) commits nobody's answer.
            errors: list[BaseException | None] | None = [RuntimeError("the audit write was interrupted")] * len(batch)
            try:
                errors = self._write(batch)
            finally:
                with cond:
                    for i, item in enumerate(batch):
                        item.done = True
                        item.error = errors[i] if errors is not None else None
                    self._leading -= 1
                    cond.notify_all()
        if pending.error is not None:
            if isinstance(pending.error, StaleGenerations):
                raise StaleGenerations
            failed = AuditWriteFailed("An internal error occurred.")
            failed.audited = True
            raise failed from pending.error

    def _write(self, batch: list[_Pending]) -> list[BaseException | None] | None:
        """Commit ``batch``; None when all of it committed, else each event's error (None: committed)."""
        started = time.perf_counter()
        try:
            outcome = _write_batch(batch, self.alias)
        except Exception as exc:
            outcome = self._after_failure(exc, batch)
        elapsed = time.perf_counter() - started
        failed = stale = 0
        if outcome is not None:
            stale = sum(1 for e in outcome if isinstance(e, StaleGenerations))
            failed = sum(1 for e in outcome if e is not None) - stale
        now = time.monotonic()
        self.state.batches += 1
        self.state.events += len(batch) - failed - stale
        if failed:
            self.state.failures += 1
            self.state.last_failure = now
            metrics.AUDIT_WRITER_FAILURES.inc()
        else:
            self.state.last_success = now
        metrics.AUDIT_WRITER_BATCH.observe(len(batch) - failed - stale)
        metrics.AUDIT_WRITER_COMMIT.observe(elapsed)
        return outcome

    def _after_failure(self, exc: Exception, batch: Sequence[_Pending]) -> list[BaseException | None] | None:
        connection = connections[self.alias]
        if not isinstance(exc, OperationalError | InterfaceError) and isinstance(exc, DatabaseError):
            # The database refused a row, the connection is fine: write the
            # events one by one so that only the refused one fails.
            logger.warning("audit batch of %d refused (%s); writing its events one by one", len(batch), exc)
            errors: list[BaseException | None] = []
            for pending in batch:
                try:
                    one = _write_batch([pending], self.alias)
                    errors.append(None if one is None else one[0])
                except Exception as error:
                    errors.append(error)
            return errors
        logger.error("audit batch of %d failed to commit: %s", len(batch), exc)
        # The connection is broken or its COMMIT's outcome unknown: a new
        # connection tells which of the batch's events are durable.
        try:
            connection.close()
        except Exception:  # closing a broken connection may raise; it is closed either way
            logger.debug("closing the audit writer's broken connection", exc_info=True)
        ids = [p.values["event_id"] for p in batch]
        try:
            there = AuditEvent.objects.using(self.alias).filter(event_id__in=ids)
            found = set(there.values_list("event_id", flat=True))
        except Exception:
            logger.exception("audit batch outcome unknown: the database cannot be reached")
            try:
                connection.close()
            except Exception:
                logger.debug("closing the audit writer's connection", exc_info=True)
            return [exc] * len(batch)
        if len(found) == len(batch):
            logger.warning("audit batch of %d committed although its COMMIT reported an error", len(batch))
            return None
        # An event that is not there failed, whether its check would have
        # passed or not: its call fails, unanswered.
        return [None if event_id in found else exc for event_id in ids]

    def failing(self) -> bool:
        """Whether the last commit failed within ``FAILING_FOR_SECONDS``, with no success since."""
        state = self.state
        if state.last_failure is None:
            return False
        if state.last_success is not None and state.last_success > state.last_failure:
            return False
        return time.monotonic() - state.last_failure < FAILING_FOR_SECONDS


def _write_batch(batch: Sequence[_Pending], alias: str) -> list[BaseException | None] | None:
    """Write ``batch`` with one statement in autocommit: atomic on its own, and durable when it returns.

    None when every event was written; else, per event, ``StaleGenerations``
    for an event left out by its check (None: written). One event: the
    prepared single-row INSERT (the cheapest for one row), checked or not;
    more: one multi-row INSERT (``insert_many``), which checks the events'
    generations. No BEGIN or COMMIT round trips: a single statement
    is its own transaction.
    """
    from audit.services.recording import _insert, insert_checked, insert_many  # recording hands its events here

    connection = connections[alias]
    if connection.in_atomic_block or not connection.get_autocommit():
        raise RuntimeError("the group writer writes in autocommit only")
    checks = [p.verify for p in batch]
    if len(batch) == 1:
        if checks[0] is None:
            _insert(batch[0].values)
            return None
        return None if insert_checked(batch[0].values, checks[0]) else [StaleGenerations()]
    written = insert_many([p.values for p in batch], using=alias, checks=checks)
    if written is None or len(written) == len(batch):
        return None
    return [None if p.values["event_id"] in written else StaleGenerations() for p in batch]


_writers: dict[str, GroupWriter] = {}
_writers_lock = threading.Lock()


def group_writer(alias: str) -> GroupWriter:
    """This process's writer for database ``alias``."""
    writer = _writers.get(alias)
    if writer is None:
        with _writers_lock:
            writer = _writers.setdefault(alias, GroupWriter(alias))
    return writer


class on_the_way:  # noqa: N801 - used as a function: ``with on_the_way():``
    """A read-only call in progress: the audit events' writer's leader may wait for its event.

    ``active`` False: nothing (a call that hands no event to the writer).
    A class, not a generator: it wraps every API call.
    """

    __slots__ = ("_writer",)

    def __init__(self, active: bool = True) -> None:
        self._writer = group_writer(router.db_for_write(AuditEvent)) if active else None

    def __enter__(self) -> None:
        if self._writer is not None:
            self._writer.arrive()

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.depart()


def group_writers() -> list[GroupWriter]:
    """Every writer this process has started (for /readyz and /metrics)."""
    return list(_writers.values())
