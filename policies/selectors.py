"""Reading principals and users' second factors."""

from __future__ import annotations

from typing import Any

from kmsweb.lib.errors import AccessDenied
from policies.models import Principal


class UnlinkedUser(AccessDenied):
    """A signed-in dashboard user no longer acts as any principal."""


def principal_for_user(user: Any) -> Principal:
    """The principal a dashboard user acts as (created at first login)."""
    principal = Principal.objects.filter(user=user).select_related("account").first()
    if principal is None:
        raise UnlinkedUser(f"Dashboard user {user.get_username()!r} is not linked to a principal.")
    return principal


def user_has_confirmed_device(user: Any) -> bool:
    from policies.models import TotpDevice

    return TotpDevice.objects.filter(user=user, confirmed=True).exists()
