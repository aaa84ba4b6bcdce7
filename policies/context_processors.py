"""Template context for every dashboard page: the sidebar's grant request count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest


def grant_requests(request: HttpRequest) -> dict[str, Callable[[], int]]:
    """``grant_requests_waiting``: counted only if the page's sidebar shows it (one query).

    Rendered with the page rather than fetched by a separate request, so no
    page pays a round trip for it and an idle page never polls (each request
    would extend the session past its idle timeout).
    """
    user: Any = getattr(request, "user", None)

    def waiting() -> int:
        # Only for a user past the second factor, as every dashboard page is.
        if user is None or not user.is_authenticated or not getattr(user, "is_verified", lambda: False)():
            return 0
        from policies.selectors import grant_request_waiting_count_for_user

        return grant_request_waiting_count_for_user(user=user)

    return {"grant_requests_waiting": waiting}


def people_nav(request: HttpRequest) -> dict[str, Callable[[], bool]]:
    """``people_nav``: whether the sidebar shows People (administrators; asked only when rendered)."""
    user: Any = getattr(request, "user", None)

    def shown() -> bool:
        if user is None or not user.is_authenticated or not getattr(user, "is_verified", lambda: False)():
            return False
        from policies.roles import ADMINISTRATOR_ROLE

        roles = getattr(request, "dashboard_roles", None)
        if roles is not None:
            return ADMINISTRATOR_ROLE in roles
        return bool(user.is_superuser or user.groups.filter(name=ADMINISTRATOR_ROLE).exists())

    return {"people_nav": shown}
