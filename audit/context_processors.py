"""Template context for every dashboard page: the alarm banner and the sealing banner."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from kmsweb.lib import clock

# Every page asks; sealing runs once a minute: a few seconds' staleness is
# harmless. (expires at, by time.monotonic(); status), shared by the process.
SEALING_CACHE_SECONDS = 10.0
_sealing_cache: list[tuple[float, Any]] = []


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


def sealing(request: HttpRequest) -> dict[str, Callable[[], Any]]:
    """``sealing_behind``: a ``SealingStatus`` when audit sealing falls behind, else None.

    Behind means an event has waited longer than ``KMSWEB_SEALING_BEHIND_SECONDS``
    to be sealed, or the last seal_audit run failed. One query, only if the
    page renders the banner (signed-in pages), shared by the process for a
    few seconds.
    """
    user: Any = getattr(request, "user", None)

    def behind() -> Any:
        if user is None or not user.is_authenticated:
            return None
        from audit.selectors import sealing_status

        def load() -> Any:
            return sealing_status(
                now=clock.now(), behind_after=timedelta(seconds=settings.KMSWEB_SEALING_BEHIND_SECONDS)
            )

        now = time.monotonic()
        if _sealing_cache and _sealing_cache[0][0] > now:
            status = _sealing_cache[0][1]
        else:
            status = load()
            _sealing_cache[:] = [(now + SEALING_CACHE_SECONDS, status)]
        return status if status.behind else None

    return {"sealing_behind": behind}


def sealing_cache_clear() -> None:
    """Forget the cached status (tests; a process that just sealed)."""
    _sealing_cache.clear()
