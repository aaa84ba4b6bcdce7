"""The audit services: recording (the only writer of events), signing keys,
sealing, verification, retention and exports."""

from audit.services.recording import (
    REDACTED_MEMBERS,
    Operation,
    audit_internal_error,
    audit_record,
    audit_rejected_request,
    audited,
    redact,
    storable,
    user_identity,
)

__all__ = [
    "REDACTED_MEMBERS",
    "Operation",
    "audit_internal_error",
    "audit_record",
    "audit_rejected_request",
    "audited",
    "redact",
    "storable",
    "user_identity",
]
