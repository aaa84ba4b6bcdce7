"""The one authorization hook every service calls before it acts.

For now it enforces account isolation only: a principal sees and uses only
its own account's keys, and platform owned keys are reserved to the
platform. The authorization issue replaces its body with the policy engine;
its signature and its callers stay as they are. Dashboard callers are also
held to their roles' action lists (``policies.roles``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keys.models import Key, KeyManager
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied
from policies.roles import role_allows


@dataclass(frozen=True)
class Decision:
    """The outcome of an authorization check, for the audit record."""

    allowed: bool
    reason: str


def authorize(
    *,
    caller: Caller,
    action: str,
    key: Key | None = None,
    context: Mapping[str, Any] | None = None,
) -> Decision:
    """Allow or refuse ``action`` (e.g. ``kms:Encrypt``) on ``key`` for ``caller``.

    Raises ``AccessDenied`` with AWS's message shape when refused.
    """
    if caller.is_system:
        return Decision(True, "platform")
    resource = key.arn if key is not None else f"arn:aws:kms:{caller.region}:{caller.account_id}:*"
    # Dashboard users act through their roles: a forged POST for an action
    # the role lacks ends here, audited like any denial.
    if caller.origin == "dashboard" and not role_allows(caller.roles, action):
        raise AccessDenied(
            f"User: {caller.principal_arn} is not authorized to perform: {action} on resource: "
            f"{resource} because no identity-based policy allows the {action} action"
        )
    if key is None:
        return Decision(True, "account-scoped action")
    if key.manager == KeyManager.OWNED or key.account_id != caller.account_id:
        raise AccessDenied(
            f"User: {caller.principal_arn} is not authorized to perform: {action} on resource: "
            f"{key.arn} because no resource-based policy allows the {action} action"
        )
    return Decision(True, "same account")
