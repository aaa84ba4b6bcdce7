"""Template context for every dashboard page: the alarm banner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest


def alarms(request: HttpRequest) -> dict[str, Callable[[], list[str]]]:
    """``alarms_firing``: names of the user's account's alarms in ALARM (one query, only if rendered)."""
    user: Any = getattr(request, "user", None)

    def firing() -> list[str]:
        # Only for a user past the second factor, as every dashboard page is.
        if user is None or not user.is_authenticated or not getattr(user, "is_verified", lambda: False)():
            return []
        from audit.models import Alarm, AlarmState
        from policies.models import Principal

        account = Principal.objects.filter(user=user).values("account_id")[:1]
        return list(
            Alarm.objects.filter(account_id__in=account, state=AlarmState.ALARM)
            .order_by("name")
            .values_list("name", flat=True)
        )

    return {"alarms_firing": firing}
