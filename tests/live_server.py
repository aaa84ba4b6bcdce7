"""The handler live test servers run: kmsweb's own, counting requests in flight.

A browser test can end while its page still has a request being served (a
chart's data fetched on load); if the test database were flushed meanwhile,
that request's queries and the flush's TRUNCATE could deadlock. The ``page``
fixture waits for :func:`wait_idle_after` after closing its browser context.

A request counts from the moment the server accepts its connection: on a
busy machine a connection the browser made before it closed can still wait
for its thread to start, and would otherwise be served after the wait.

On SQLite the server's threads share the test's in-memory database
connection, and two requests using it at once fail ("database table is
locked": a page's HTMX panels load side by side). There the server
answers one request at a time, from its start to the close of its
response (where Django's request_finished does the request's last
database work).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any

from django.core.servers.basehttp import ThreadedWSGIServer

from kmsweb.api.wsgi import KmswebWSGIHandler

_lock = threading.Condition()
_in_flight = 0
# Set in a connection's thread while the count its accept took is not yet its first request's.
_connection = threading.local()
# Held by the request being served, on SQLite only (see the module's docstring).
_one_at_a_time = threading.RLock()


def _shares_sqlite() -> bool:
    from django.db import connection

    return connection.vendor == "sqlite" and connection.allow_thread_sharing


def _begin() -> None:
    global _in_flight
    with _lock:
        _in_flight += 1


def _done() -> None:
    global _in_flight
    with _lock:
        _in_flight -= 1
        _lock.notify_all()


class _Tracked:
    """A WSGI response that counts as in flight until the server closes it."""

    def __init__(self, response: Iterable[bytes], serialized: bool) -> None:
        self._response = response
        self._serialized = serialized

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._response)

    def close(self) -> None:
        try:
            close = getattr(self._response, "close", None)
            if close is not None:
                close()  # Django's request_finished: the request's last database work
        finally:
            if self._serialized:
                _one_at_a_time.release()
            _done()


class CountingServer(ThreadedWSGIServer):
    """Counts a connection as in flight from its accept until its first request is counted or it closes."""

    def process_request(self, request: Any, client_address: Any) -> None:
        _begin()  # in the accepting thread, before the connection's thread starts
        try:
            super().process_request(request, client_address)
        except BaseException:
            _done()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        _connection.uncounted_accept = True
        try:
            super().process_request_thread(request, client_address)
        finally:
            if _connection.uncounted_accept:  # closed without a request
                _connection.uncounted_accept = False
                _done()


class CountingHandler(KmswebWSGIHandler):
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if getattr(_connection, "uncounted_accept", False):
            _connection.uncounted_accept = False  # the accept's count is this request's
        else:
            _begin()  # a later request on a kept-alive connection
        serialized = _shares_sqlite()
        if serialized:
            _one_at_a_time.acquire()
        try:
            response = super().__call__(environ, start_response)
        except BaseException:
            if serialized:
                _one_at_a_time.release()
            _done()
            raise
        return _Tracked(response, serialized)


def wait_idle_after(url: str, timeout: float = 10.0) -> bool:
    """Wait until every connection made to the live server before now has been served.

    The server accepts connections in the order they came: once it has
    answered a request of ours, it has accepted (and counted) every earlier one.
    """
    try:
        urllib.request.urlopen(f"{url}/healthz", timeout=timeout).close()  # noqa: S310 - the live server's URL
    except urllib.error.HTTPError:
        pass  # answered: that is all this needs
    return wait_idle(timeout)


def wait_idle(timeout: float = 10.0) -> bool:
    """Wait until no request is being served; False if one still was after ``timeout``."""
    deadline = time.monotonic() + timeout
    with _lock:
        while _in_flight > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            _lock.wait(remaining)
    return True
