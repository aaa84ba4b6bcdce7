"""kmsweb's WSGI handler: the KMS API answered before Django's request cycle.

A KMS API call (``POST /``, see :func:`~kmsweb.api.views.is_api_call`)
needs nothing of Django's request cycle: no URL resolution, middleware,
session, user, CSRF token or template. :class:`KmswebWSGIHandler` hands such a request straight to
:func:`kmsweb.api.views.answer` and passes everything else to Django's own
handler. What Django's cycle does that the API still needs is done here:
database connections are checked after each call, as Django's
``request_finished`` receiver does (``request_started``'s check of the same
connections would find them as that one left them; the two signals, whose
only receivers are Django's own connection, cache and URLconf housekeeping,
are not sent for API calls); the body is read from the WSGI
stream under ``DATA_UPLOAD_MAX_MEMORY_SIZE``; ``is_secure()`` honours
``SECURE_PROXY_SSL_HEADER``.

Production (``kmsweb.wsgi``) and the test suite's live servers use this
handler; the test client, which has no WSGI server, reaches the same
:func:`~kmsweb.api.views.answer` through ``AwsApiMiddleware``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.wsgi import WSGIHandler, get_script_name
from django.db import close_old_connections, reset_queries

from kmsweb.api.views import answer, error_answer, is_api_call
from kmsweb.lib.caller import new_request_id
from kmsweb.lib.errors import InternalError

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


class ApiRequest:
    """The parts of a WSGI request that the KMS API reads, as Django names them."""

    __slots__ = ("META", "method", "path", "_body")

    def __init__(self, environ: dict[str, Any]) -> None:
        self.META = environ
        self.method: str | None = "POST"
        # Django's request.path for PATH_INFO "/": the script prefix, then "/".
        self.path = get_script_name(environ).rstrip("/") + "/"
        self._body: bytes | None = None

    @property
    def body(self) -> bytes:
        """The request body, read once; ``RequestDataTooBig`` past the limit, unread."""
        if self._body is None:
            try:
                length = int(self.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            if limit is not None and length > limit:
                raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
            self._body = self.META["wsgi.input"].read(length) if length > 0 else b""
        return self._body

    def is_secure(self) -> bool:
        """As Django's ``HttpRequest.is_secure``: a trusted proxy's header first."""
        header = settings.SECURE_PROXY_SSL_HEADER
        if header:
            name, secure_value = header
            value = self.META.get(name)
            if value is not None:
                return value.split(",", 1)[0].strip() == secure_value
        return self.META.get("wsgi.url_scheme") == "https"


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


class KmswebWSGIHandler(WSGIHandler):
    """Django's WSGI handler, with KMS API calls answered before its request cycle."""

    # django-stubs types the handler's answer as its response object; a WSGI app returns the body's chunks.
    def __call__(  # type: ignore[override]
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        if not is_api_call(environ):
            return super().__call__(environ, start_response)
        if settings.DEBUG:
            reset_queries()
        try:
            reply = answer(ApiRequest(environ))
        except Exception:  # answer() answers every failure itself; this is a last resort
            request_id = new_request_id()
            logger.exception("internal error serving an API call (request %s)", request_id)
            reply = error_answer(InternalError("An internal error occurred."), request_id)
        finally:
            # Once, after the call: it leaves the connection as the next
            # call needs it (closed if broken or past CONN_MAX_AGE, health
            # check due on first use), which is what Django's check before
            # each request would establish.
            close_old_connections()
        start_response(_status_line(reply.status), reply.headers())
        return [reply.body]
