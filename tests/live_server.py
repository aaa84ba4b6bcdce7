"""The handler live test servers run: kmsweb's own, counting requests in flight.

A browser test can end while its page still has a request being served (a
chart's data fetched on load); if the test database were flushed meanwhile,
that request's queries and the flush's TRUNCATE could deadlock. The ``page``
fixture waits for :func:`wait_idle` after closing its browser context.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from kmsweb.api.wsgi import KmswebWSGIHandler

_lock = threading.Condition()
_in_flight = 0


def _done() -> None:
    global _in_flight
    with _lock:
        _in_flight -= 1
        _lock.notify_all()


class _Tracked:
    """A WSGI response that counts as in flight until the server closes it."""

    def __init__(self, response: Iterable[bytes]) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._response)

    def close(self) -> None:
        try:
            close = getattr(self._response, "close", None)
            if close is not None:
                close()  # Django's request_finished: the request's last database work
        finally:
            _done()


class CountingHandler(KmswebWSGIHandler):
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        global _in_flight
        with _lock:
            _in_flight += 1
        try:
            response = super().__call__(environ, start_response)
        except BaseException:
            _done()
            raise
        return _Tracked(response)


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
