"""How many approvals a grant request for a key needs (kmsweb's addition to AWS)."""

from __future__ import annotations

from audit.services import audited
from keys.models import Key
from keys.services.common import key_forget, require_customer_managed, require_not_pending_deletion
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import ValidationError
from policies.authorization import authorize

GRANT_APPROVALS_CHOICES = (1, 2)


def key_set_grant_approvals(*, caller: Caller, key: Key, required: int) -> Key:
    """Set ``Key.grant_approvals_required`` to 1 or 2 distinct approvers.

    Needs ``kmsweb:UpdateGrantApprovals`` and ``kms:PutKeyPolicy`` on the key:
    the count decides who can gain access to the key, as its policy does.
    Pending requests keep the larger of their own count and the key's (see
    ``grant_request_decide``), so lowering it never loosens a waiting request.
    """
    with audited(
        caller, "UpdateGrantApprovals", request_parameters={"KeyId": str(key.id), "ApprovalsRequired": required}
    ) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kmsweb:UpdateGrantApprovals")
        authorize(caller=caller, action="kms:PutKeyPolicy", key=key)
        require_customer_managed(key, "UpdateGrantApprovals")
        if isinstance(required, bool) or required not in GRANT_APPROVALS_CHOICES:
            raise ValidationError("A key requires 1 or 2 approvals for a grant request.")
        key = Key.objects.select_for_update(of=("self",)).get(pk=key.pk)
        require_not_pending_deletion(key)
        Key.objects.filter(pk=key.pk).update(grant_approvals_required=required)
        key_forget(key)
        key.grant_approvals_required = required
        return key
