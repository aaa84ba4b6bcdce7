"""Django's PostgreSQL backend with the health check of a busy connection spaced out.

With persistent connections and ``CONN_HEALTH_CHECKS``, Django sends
``SELECT 1`` before the first query of every request, so that a connection
the server closed while it sat idle is replaced instead of failing the
request. On the API, where a worker answers hundreds of requests a second on
one connection, that is a second round trip for every call's single INSERT
(measured: about a tenth of a request's CPU, client and server together).

Here the check runs when the connection has not been checked for
``KMSWEB_DB_HEALTH_CHECK_SECONDS`` (default 1 s; 0 checks before every
request, as Django does). A connection that dies within that second fails
the request that finds it, as it would if it died between Django's check
and the query; Django then closes it at the end of that request, because
an error occurred on it, and the next request opens a new one.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's PostgreSQL wrapper; only the health check's timing differs."""

    # Set by Django's base wrapper; django-stubs does not declare them.
    health_check_enabled: bool
    health_check_done: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._checked_at = float("-inf")

    def close_if_health_check_failed(self) -> None:
        if self.connection is None or not self.health_check_enabled or self.health_check_done:
            return
        now = time.monotonic()
        if now - self._checked_at < settings.KMSWEB_DB_HEALTH_CHECK_SECONDS:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
        self._checked_at = now

    def connect(self) -> None:
        super().connect()
        # A new connection is as fresh as a checked one.
        self._checked_at = time.monotonic()
