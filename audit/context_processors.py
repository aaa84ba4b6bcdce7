"""Template context for every dashboard page: the alarm banner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest


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
