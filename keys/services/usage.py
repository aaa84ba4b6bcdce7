"""GetKeyLastUsage: the last successful cryptographic use of a key, from the audit trail.

No per-key counter is written on the hot path: every cryptographic call
already records one audit event carrying the key id, and the
``audit_key_time_idx`` index (key_id, event_time) finds the newest one with
a short backward index scan.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from audit.models import AuditEvent
from audit.services import audited
from keys.models import Key
from kmsweb.lib import operations
from kmsweb.lib.caller import Caller
from policies.authorization import authorize

# botocore's KeyLastUsageTrackingOperation enum: the cryptographic operations.
TRACKED_OPERATIONS = operations.CRYPTO


def _tracking_start(key: Key) -> datetime:
    """When the trail this answer reads begins for ``key``: its creation, or
    the oldest event still kept (older ones may have been archived)."""
    oldest = AuditEvent.objects.order_by("id").values_list("event_time", flat=True).first()
    return max(key.created_at, oldest) if oldest is not None else key.created_at


def key_last_usage(*, caller: Caller, key: Key) -> dict[str, Any]:
    """GetKeyLastUsage: operation, time, event id and request id of the key's
    newest successful cryptographic call, or an empty ``KeyLastUsage``.

    A ReEncrypt is counted for its source key (the key its event names).
    """
    with audited(caller, "GetKeyLastUsage", request_parameters={"KeyId": str(key.id)}) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:GetKeyLastUsage", key=key)
        event = (
            AuditEvent.objects.filter(key_id=str(key.id), error_code="", event_name__in=TRACKED_OPERATIONS)
            .order_by("-event_time")
            .values("event_name", "event_time", "event_id", "request_id")
            .first()
        )
        usage: dict[str, Any] = {}
        if event is not None:
            usage = {
                "Operation": event["event_name"],
                "Timestamp": event["event_time"],
                "CloudTrailEventId": str(event["event_id"]),
                "KmsRequestId": event["request_id"],
            }
        return {
            "KeyId": key.key_id,
            "KeyLastUsage": usage,
            "TrackingStartDate": _tracking_start(key),
            "KeyCreationDate": key.created_at,
        }
