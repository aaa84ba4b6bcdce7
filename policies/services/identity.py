"""Identity policies: create, update and delete them; attach and detach them.

Documents are validated by the policy engine (``parse_policy``), so a
policy that would be refused at evaluation is refused when saved.
"""

from __future__ import annotations

import json

from django.db import IntegrityError, transaction

from audit.services import audited
from compliance.triggers import compliance_evaluation_request
from kmsweb.generations import CREDENTIALS, IDENTITY, generation_bump
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AlreadyExists, MalformedPolicyDocument, NotFound, ValidationError
from policies import evaluation as ev
from policies.authorization import authorize
from policies.models import AccessKey, AccessKeyStatus, Account, IdentityPolicy, PolicyAttachment, Principal

FULL_ACCESS_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "FullKmsAccess", "Effect": "Allow", "Action": "kms:*", "Resource": "*"}],
    },
    indent=2,
)


def _validated(document: str) -> str:
    try:
        ev.parse_policy(document, kind="identity")
    except ev.PolicyError as exc:
        raise MalformedPolicyDocument(exc.message) from exc
    return document


def identity_policy_put(
    *,
    caller: Caller,
    account: Account,
    name: str,
    document: str,
    principal: Principal | None = None,
    description: str = "",
) -> IdentityPolicy:
    """Create or replace a managed policy (no ``principal``) or an inline one."""
    event = "PutPrincipalPolicy" if principal is not None else "CreatePolicy"
    with audited(
        caller, event, request_parameters={"PolicyName": name, "Principal": principal.arn if principal else None}
    ):
        authorize(caller=caller, action="iam:PutPrincipalPolicy" if principal else "iam:CreatePolicy")
        _validated(document)
        policy = IdentityPolicy.objects.filter(account=account, name=name, principal=principal).first()
        if policy is None:
            policy = IdentityPolicy(account=account, name=name, principal=principal)
        policy.document = document
        policy.description = description
        try:
            policy.full_clean(validate_constraints=False)
        except Exception as exc:
            raise ValidationError(f"Invalid policy name {name!r}: letters, digits and +=,.@_- only.") from exc
        try:
            with transaction.atomic():
                policy.save()
            generation_bump(IDENTITY)
            compliance_evaluation_request()
        except IntegrityError as exc:
            raise AlreadyExists(f"A policy named {name!r} already exists.") from exc
        return policy


def identity_policy_delete(*, caller: Caller, policy: IdentityPolicy) -> None:
    """Delete a policy (a managed one is detached from everyone first)."""
    with audited(caller, "DeletePolicy", request_parameters={"PolicyName": policy.name}):
        authorize(caller=caller, action="iam:DeletePolicy")
        policy.delete()
        generation_bump(IDENTITY)
        compliance_evaluation_request()


def policy_attach(*, caller: Caller, principal: Principal, policy: IdentityPolicy) -> None:
    """Attach a managed policy of the principal's account to it (idempotent)."""
    with audited(
        caller, "AttachPrincipalPolicy", request_parameters={"PolicyName": policy.name, "Principal": principal.arn}
    ):
        authorize(caller=caller, action="iam:AttachPrincipalPolicy")
        if policy.is_inline or policy.account_id != principal.account_id:
            raise ValidationError("Only a managed policy of the principal's own account can be attached.")
        PolicyAttachment.objects.get_or_create(principal=principal, policy=policy)
        generation_bump(IDENTITY)
        compliance_evaluation_request()


def policy_detach(*, caller: Caller, principal: Principal, policy: IdentityPolicy) -> None:
    with audited(
        caller, "DetachPrincipalPolicy", request_parameters={"PolicyName": policy.name, "Principal": principal.arn}
    ):
        authorize(caller=caller, action="iam:DetachPrincipalPolicy")
        deleted, _ = PolicyAttachment.objects.filter(principal=principal, policy=policy).delete()
        generation_bump(IDENTITY)
        compliance_evaluation_request()
        if not deleted:
            raise NotFound(f"{policy.name} is not attached to {principal.arn}.")


def access_key_set_status(*, caller: Caller, access_key: AccessKey, active: bool) -> None:
    """Deactivate (or reactivate) an access key; it stops signing at once."""
    status = AccessKeyStatus.ACTIVE if active else AccessKeyStatus.INACTIVE
    with audited(
        caller, "UpdateAccessKey", request_parameters={"AccessKeyId": access_key.access_key_id, "Status": status}
    ):
        authorize(caller=caller, action="iam:UpdateAccessKey")
        AccessKey.objects.filter(pk=access_key.pk).update(status=status)
        generation_bump(CREDENTIALS)


def access_key_delete(*, caller: Caller, access_key: AccessKey) -> None:
    with audited(caller, "DeleteAccessKey", request_parameters={"AccessKeyId": access_key.access_key_id}):
        authorize(caller=caller, action="iam:DeleteAccessKey")
        access_key.delete()
        generation_bump(CREDENTIALS)
