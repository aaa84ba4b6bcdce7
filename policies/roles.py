"""Dashboard roles and the ``kms:`` actions each allows.

A role is a Django group of the same name. Until the authorization issue
turns each role into an identity policy of the user's principal, the
``authorize`` hook checks a dashboard caller's actions against this table;
the names are the ones an identity policy would list, so the views will not
change when it does.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

READ_ACTIONS = ("kms:Describe*", "kms:List*", "kms:Get*")

ROLES: dict[str, tuple[str, ...]] = {
    "viewer": READ_ACTIONS,
    "key-admin": READ_ACTIONS
    + (
        "kms:CreateKey",
        "kms:CreateAlias",
        "kms:DeleteAlias",
        "kms:UpdateAlias",
        "kms:EnableKey",
        "kms:DisableKey",
        "kms:UpdateKeyDescription",
        "kms:EnableKeyRotation",
        "kms:DisableKeyRotation",
        "kms:RotateKeyOnDemand",
        "kms:TagResource",
        "kms:UntagResource",
        "kms:ScheduleKeyDeletion",
        "kms:CancelKeyDeletion",
        "kms:PutKeyPolicy",
    ),
    "approver": READ_ACTIONS + ("kmsweb:DecideGrantRequest",),
    "auditor": READ_ACTIONS + ("kmsweb:SearchAudit", "kmsweb:ExportAudit"),
}
ROLE_LABELS = {
    "viewer": "Viewer",
    "key-admin": "Key administrator",
    "approver": "Approver",
    "auditor": "Auditor",
}
# Superusers hold every role.
ALL_ROLES = tuple(ROLES)


def role_allows(roles: Iterable[str], action: str) -> bool:
    """True when any of ``roles`` lists an action pattern matching ``action``."""
    return any(fnmatchcase(action, pattern) for role in roles for pattern in ROLES.get(role, ()))
