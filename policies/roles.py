"""Dashboard roles and the ``kms:`` actions each allows.

A role is a Django group of the same name, and stands for an identity policy
(``role_policy_document``) that ``authorize`` adds to a dashboard user's own
policies. The views use ``role_allows`` only to decide which buttons to show;
the decision itself is always ``authorize``'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from fnmatch import fnmatchcase
from functools import cache

READ_ACTIONS = (
    "kms:Describe*",
    "kms:List*",
    "kms:Get*",
    "kmsweb:DescribeAlarms",
    "kmsweb:DescribeFindings",
    # Re-certification campaigns: everyone sees them; a reviewer decides the items assigned to them.
    "kmsweb:DescribeCampaigns",
)

# Asking for a grant changes nothing until approvers agree, so every role
# that works with keys may ask.
REQUEST_ACTIONS = ("kmsweb:RequestGrant",)

ROLES: dict[str, tuple[str, ...]] = {
    "viewer": READ_ACTIONS + REQUEST_ACTIONS,
    "key-admin": READ_ACTIONS
    + REQUEST_ACTIONS
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
        # Keys with imported material (GetParametersForImport is a kms:Get*).
        "kms:ImportKeyMaterial",
        "kms:DeleteImportedKeyMaterial",
        # How many approvals a grant request for a key needs (with kms:PutKeyPolicy on the key).
        "kmsweb:UpdateGrantApprovals",
        # The Jobs page: whether rotations and scheduled deletions ran, and their errors.
        "kmsweb:ListJobs",
        # Alarms on usage; only this role (and administrators) may delete the built-in ones.
        "kmsweb:CreateAlarm",
        "kmsweb:UpdateAlarm",
        "kmsweb:AcknowledgeAlarm",
        "kmsweb:DeleteAlarm",
        "kmsweb:DeleteBuiltInAlarm",
    ),
    # Suppressing a compliance finding accepts a risk: the same people who decide grants.
    # Approvers are the security team of re-certification campaigns: they decide any item.
    "approver": READ_ACTIONS + ("kmsweb:DecideGrantRequest", "kmsweb:SuppressFinding", "kmsweb:DecideAnyCampaignItem"),
    # The Jobs page too: sealing and archiving are the audit trail's own jobs.
    "auditor": READ_ACTIONS
    + (
        "kmsweb:SearchAudit",
        "kmsweb:ExportAudit",
        "kmsweb:ExportComplianceReport",
        "kmsweb:ListJobs",
        "kmsweb:AcknowledgeAlarm",
    ),
    # Manages principals, their policies and access keys: it can give anyone
    # anything, so only superusers hold it unless an operator says otherwise.
    "administrator": ("kms:*", "kmsweb:*", "iam:*"),
}
ROLE_LABELS = {
    "viewer": "Viewer",
    "key-admin": "Key administrator",
    "approver": "Approver",
    "auditor": "Auditor",
    "administrator": "Administrator",
}
# Superusers hold every role.
ALL_ROLES = tuple(ROLES)
ADMINISTRATOR_ROLE = "administrator"


def role_allows(roles: Iterable[str], action: str) -> bool:
    """True when any of ``roles`` lists an action pattern matching ``action``."""
    return any(fnmatchcase(action, pattern) for role in roles for pattern in ROLES.get(role, ()))


@cache
def role_policy_document(role: str) -> str:
    """The identity policy a role stands for: Allow its actions on every resource."""
    actions = list(ROLES.get(role, ()))
    statement = [{"Sid": f"Role{role.title().replace('-', '')}", "Effect": "Allow", "Action": actions, "Resource": "*"}]
    return json.dumps({"Version": "2012-10-17", "Statement": statement if actions else []})
