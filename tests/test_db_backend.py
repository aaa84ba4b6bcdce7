"""kmsweb's PostgreSQL backend: the health check of a busy connection is spaced out,
and a connection the server closed is still replaced.

Needs PostgreSQL (marked; CI runs it). Each test opens its own connection to
terminate the backend of Django's, as a server restart or an idle timeout would.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from django.db import OperationalError, close_old_connections, connection, connections
from django.test.utils import override_settings


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def _terminate(pid: int) -> None:
    """Close a backend from outside, as the server does when it restarts."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def _new_request() -> None:
    """What Django does between two requests on a persistent connection."""
    close_old_connections()
    connection.health_check_done = False


@pytest.fixture
def persistent_connection() -> Iterator[None]:
    """Django's connection made persistent with health checks, as in production."""
    old = connection.settings_dict["CONN_MAX_AGE"], connection.settings_dict["CONN_HEALTH_CHECKS"]
    connection.close()
    connection.settings_dict["CONN_MAX_AGE"] = None
    connection.settings_dict["CONN_HEALTH_CHECKS"] = True
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["CONN_MAX_AGE"], connection.settings_dict["CONN_HEALTH_CHECKS"] = old


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_checks_a_busy_connection_at_most_once_per_interval(
    persistent_connection: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[bool] = []
    wrapper_class = type(connections["default"])
    original = wrapper_class.is_usable

    def counted(self: object) -> bool:
        usable = original(self)  # type: ignore[arg-type]
        checks.append(usable)
        return usable

    monkeypatch.setattr(wrapper_class, "is_usable", counted)
    with override_settings(KMSWEB_DB_HEALTH_CHECK_SECONDS=3600):
        pid = _backend_pid()
        for _ in range(5):
            _new_request()
            assert _backend_pid() == pid
        assert checks == []  # the connection was fresh and in use: no SELECT 1
    with override_settings(KMSWEB_DB_HEALTH_CHECK_SECONDS=0):
        for _ in range(3):
            _new_request()
            _backend_pid()
        assert checks == [True, True, True]  # 0: before every request, as Django does


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_replaces_a_connection_the_server_closed_once_the_check_is_due(persistent_connection: None) -> None:
    with override_settings(KMSWEB_DB_HEALTH_CHECK_SECONDS=0.0):
        pid = _backend_pid()
        _terminate(pid)
        _new_request()
        assert _backend_pid() != pid  # checked, found dead, reconnected: no error


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_connection_that_dies_between_checks_fails_one_request_only(persistent_connection: None) -> None:
    with override_settings(KMSWEB_DB_HEALTH_CHECK_SECONDS=3600):
        pid = _backend_pid()
        _terminate(pid)
        _new_request()
        with pytest.raises(OperationalError):
            _backend_pid()
        # The end of the failed request closes the connection that erred ...
        _new_request()
        # ... and the next request works on a new one.
        assert _backend_pid() != pid
