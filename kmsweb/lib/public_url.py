"""Absolute links to the dashboard, for e-mails, webhooks and API answers.

``KMSWEB_PUBLIC_URL`` names the address people reach kmsweb at (behind a
proxy, on another port). Unset, a link made while serving a request uses
that request's scheme and host (Django checks the host against
``ALLOWED_HOSTS`` first); a link made outside any request (a Celery job)
falls back to ``http://localhost:$PORT``, so operators running jobs set
``KMSWEB_PUBLIC_URL``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextvars import ContextVar

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse

_request_base: ContextVar[str | None] = ContextVar("kmsweb_request_base", default=None)


def public_url(path: str) -> str:
    """``path`` (starting with /) as an absolute URL people can open."""
    base = settings.KMSWEB_PUBLIC_URL or _request_base.get() or f"http://localhost:{os.environ.get('PORT', '8000')}"
    return base.rstrip("/") + path


class PublicUrlMiddleware:
    """Remember the request's own base URL while it is served (links made in on-commit hooks included)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            base: str | None = request.build_absolute_uri("/").rstrip("/")
        except DisallowedHost:
            base = None  # CommonMiddleware refuses the request; no link is made from it
        token = _request_base.set(base)
        try:
            return self.get_response(request)
        finally:
            _request_base.reset(token)
