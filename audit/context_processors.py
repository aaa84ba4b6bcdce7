"""Template context for every dashboard page: the alarm banner and the sealing banner."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from kmsweb.lib import clock

# Every page asks; sealing runs once a minute: a few seconds' staleness is
# harmless. (expires at, by time.monotonic(); status), shared by the process.
SEALING_CACHE_SECONDS = 10.0
_sealing_cache: list[tuple[float, Any]] = []


@dataclass
class AlarmBanner:
    """Alarms someone should look at: those in ALARM, and those that went to
    ALARM and came back to OK before anyone acknowledged them (a built-in
    alarm can be in ALARM for only a minute)."""

    alarm: list[str] = field(default_factory=list)
    unacknowledged: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.alarm or self.unacknowledged)


def alarms(request: HttpRequest) -> dict[str, Callable[[], AlarmBanner]]:
    """``alarms_firing``: the user's account's alarms needing attention (one query, only if rendered)."""
    user: Any = getattr(request, "user", None)

    def firing() -> AlarmBanner:
        banner = AlarmBanner()
        # Only for a user past the second factor, as every dashboard page is.
        if user is None or not user.is_authenticated or not getattr(user, "is_verified", lambda: False)():
            return banner
        from django.db.models import F, Max, Q

        from audit.models import Alarm, AlarmState
        from policies.models import Principal

        account = Principal.objects.filter(user=user).values("account_id")[:1]
        rows = (
            Alarm.objects.filter(account_id__in=account)
            .annotate(
                trip=Max(
                    "history__timestamp",
                    filter=Q(history__new_state=AlarmState.ALARM) & ~Q(history__old_state=AlarmState.ALARM),
                ),
                ack=Max("history__timestamp", filter=Q(history__reason_data__has_key="acknowledged")),
            )
            .filter(Q(state=AlarmState.ALARM) | Q(trip__isnull=False) & (Q(ack__isnull=True) | Q(ack__lt=F("trip"))))
            .order_by("name")
            .values_list("name", "state")
        )
        for name, state in rows:
            (banner.alarm if state == AlarmState.ALARM else banner.unacknowledged).append(name)
        return banner

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
