"""Group commit of the read-only calls' audit events, still durable before the answer.

A call that changes no state (Encrypt, Decrypt, Sign, Describe…) has one
row to write: its audit event. Committing each alone costs a WAL flush and
a statement per call; here the events of concurrent calls in one process
share a transaction (one multi-row INSERT in autocommit, on PostgreSQL
prepared once per connection and batch size) and one flush. Each call
still answers only after the transaction holding its event has committed,
so an answered call always has its durable event.

``KMSWEB_AUDIT_GROUP_WAIT_US`` (microseconds; default 0: off) makes a leader whose
previous batch held more than one event wait that long before it takes the
queue, so that more calls share the commit: fewer statements per event for
the database, that much more latency per call.

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
from django.db import DatabaseError, InterfaceError, OperationalError, connections

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
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Pending] = []
        self._leading = 0
        self._last_batch = 0

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
        while True:
            with cond:
                while not pending.done and (pending.taken or self._leading >= self.max_in_flight):
                    cond.wait()
                if pending.done:
                    break
                self._leading += 1
                wait = settings.KMSWEB_AUDIT_GROUP_WAIT_US
                if wait > 0 and self._last_batch > 1 and len(self._queue) < self.max_batch:
                    # Calls are arriving together: give the ones on their
                    # way a moment to join this batch (the lock is released
                    # meanwhile). A lone call, whose last batch was itself,
                    # never waits.
                    cond.wait(wait / 1_000_000)
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
        self._last_batch = len(batch)
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


def group_writers() -> list[GroupWriter]:
    """Every writer this process has started (for /readyz and /metrics)."""
    return list(_writers.values())
