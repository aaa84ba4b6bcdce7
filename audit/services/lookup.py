"""Searching the trail from the dashboard: authorized and itself audited
(CloudTrail's ``LookupEvents``), so the trail shows who looked at it."""

from __future__ import annotations

from audit.filters import AuditFilter
from audit.models import AuditEvent
from audit.selectors import EventPage, event_get_for, event_page_for
from audit.services.recording import audited
from audit.services.signing import EVENT_SOURCE
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import ValidationError
from policies.authorization import authorize

LOOKUP_EVENT = "LookupEvents"


def audit_search(*, caller: Caller, flt: AuditFilter, errors: dict[str, str] | None = None) -> EventPage:
    """One page of the Audit table; ``kmsweb:SearchAudit``. A filter with errors is refused (and recorded)."""
    params = {"Filter": flt.describe(), "Sort": flt.sort}
    with audited(caller, LOOKUP_EVENT, request_parameters=params, read_only=True, event_source=EVENT_SOURCE):
        authorize(caller=caller, action="kmsweb:SearchAudit")
        if errors:
            raise ValidationError("; ".join(f"{name}: {message}" for name, message in errors.items()))
        return event_page_for(caller=caller, flt=flt)


def audit_event_open(*, caller: Caller, event_id: str) -> AuditEvent:
    """One event's full record; ``kmsweb:SearchAudit``."""
    with audited(
        caller, LOOKUP_EVENT, request_parameters={"EventId": event_id}, read_only=True, event_source=EVENT_SOURCE
    ):
        authorize(caller=caller, action="kmsweb:SearchAudit")
        return event_get_for(caller=caller, event_id=event_id)
