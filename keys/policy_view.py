"""AWS's "default view" of a key policy: key administrators, key users, other accounts.

The AWS console shows a key policy it wrote itself as three lists of
principals instead of JSON; a policy with statements of its own is shown
only as JSON. kmsweb does the same. Pure functions over policy text: no ORM.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

ROOT_SID = "Enable IAM User Permissions"
ADMIN_SID = "Allow access for Key Administrators"
USE_SID = "Allow use of the key"
GRANT_SID = "Allow attachment of persistent resources"

# What the console gives key administrators: everything but use of the key.
ADMIN_ACTIONS = (
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
)

# What key users may do, by the key's usage.
USE_ACTIONS = {
    "ENCRYPT_DECRYPT": ("kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"),
    "SIGN_VERIFY": ("kms:DescribeKey", "kms:GetPublicKey", "kms:Sign", "kms:Verify"),
    "GENERATE_VERIFY_MAC": ("kms:DescribeKey", "kms:GenerateMac", "kms:VerifyMac"),
    "KEY_AGREEMENT": ("kms:DescribeKey", "kms:GetPublicKey", "kms:DeriveSharedSecret"),
    "KEY_ENCAPSULATION": ("kms:DescribeKey", "kms:GetPublicKey", "kms:Decapsulate"),
}
GRANT_ACTIONS = ("kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant")
_KNOWN_SIDS = {ROOT_SID, ADMIN_SID, USE_SID, GRANT_SID}
_ACCOUNT_ROOT = re.compile(r"^arn:aws:iam::(\d{12}):root$")


@dataclass(frozen=True)
class DefaultView:
    """The three lists of the console's default view."""

    administrators: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    other_accounts: list[str] = field(default_factory=list)


def _principals(statement: dict[str, Any]) -> list[str] | None:
    principal = statement.get("Principal")
    if not isinstance(principal, dict) or set(principal) != {"AWS"}:
        return None
    value = principal["AWS"]
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return None
    return values


def default_view_of(policy_text: str, account_id: str) -> DefaultView | None:
    """The default view of a policy, or None when the policy has statements the view cannot show."""
    try:
        doc = json.loads(policy_text)
    except ValueError:
        return None
    statements = doc.get("Statement") if isinstance(doc, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        return None
    by_sid: dict[str, dict[str, Any]] = {}
    for statement in statements:
        if not isinstance(statement, dict) or statement.get("Sid") not in _KNOWN_SIDS:
            return None
        if statement.get("Effect") != "Allow" or statement["Sid"] in by_sid:
            return None
        by_sid[statement["Sid"]] = statement
    root = by_sid.get(ROOT_SID)
    if root is None or _principals(root) != [f"arn:aws:iam::{account_id}:root"] or root.get("Action") != "kms:*":
        return None
    admins = _principals(by_sid[ADMIN_SID]) if ADMIN_SID in by_sid else []
    use = _principals(by_sid[USE_SID]) if USE_SID in by_sid else []
    grant = _principals(by_sid[GRANT_SID]) if GRANT_SID in by_sid else []
    if admins is None or use is None or grant is None or sorted(grant) != sorted(use):
        return None
    users, accounts = [], []
    for arn in use:
        match = _ACCOUNT_ROOT.match(arn)
        if match and match.group(1) != account_id:
            accounts.append(match.group(1))
        else:
            users.append(arn)
    return DefaultView(administrators=admins, users=users, other_accounts=accounts)


def _principal(arns: list[str]) -> dict[str, Any]:
    return {"AWS": arns[0] if len(arns) == 1 else arns}


def policy_from_default_view(view: DefaultView, *, account_id: str, key_usage: str) -> str:
    """The key policy the console writes for these lists (the account root keeps ``kms:*``)."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": ROOT_SID,
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ]
    if view.administrators:
        statements.append(
            {
                "Sid": ADMIN_SID,
                "Effect": "Allow",
                "Principal": _principal(view.administrators),
                "Action": list(ADMIN_ACTIONS),
                "Resource": "*",
            }
        )
    users = view.users + [f"arn:aws:iam::{a}:root" for a in view.other_accounts]
    if users:
        statements.append(
            {
                "Sid": USE_SID,
                "Effect": "Allow",
                "Principal": _principal(users),
                "Action": list(USE_ACTIONS.get(key_usage, USE_ACTIONS["ENCRYPT_DECRYPT"])),
                "Resource": "*",
            }
        )
        statements.append(
            {
                "Sid": GRANT_SID,
                "Effect": "Allow",
                "Principal": _principal(users),
                "Action": list(GRANT_ACTIONS),
                "Resource": "*",
                "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
            }
        )
    return json.dumps({"Version": "2012-10-17", "Id": "key-consolepolicy-3", "Statement": statements}, indent=2)
