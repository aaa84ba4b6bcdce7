"""HTMX plumbing shared by the dashboard views."""

from __future__ import annotations

from django.http import HttpRequest


def wants_partial(request: HttpRequest) -> bool:
    """An HTMX request that swaps a fragment (not a boosted navigation)."""
    htmx = getattr(request, "htmx", None)
    return htmx is not None and bool(htmx) and not htmx.boosted
