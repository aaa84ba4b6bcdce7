"""Service delegations: which registered services may act for which principals.

A service principal signs a request naming a user or role in
``X-Kmsweb-On-Behalf-Of``; kmsweb serves it only when that principal has
delegated to the service (a ``ServiceDelegation`` row), and never for an
administrator. The request is then evaluated as the principal with
``kms:ViaService`` set (see docs/SERVICE_KEYS.md).
"""

from __future__ import annotations

import re

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audited
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, NotFound, ValidationError
from policies.authorization import authorize
from policies.models import Principal, PrincipalType, ServiceDelegation
from policies.roles import ADMINISTRATOR_ROLE

_ACTING_FOR_ARN = re.compile(r"arn:aws:iam::([0-9]{12}):(user|role)/([A-Za-z0-9+=,.@_-]{1,64})")


def principal_is_administrator(principal: Principal) -> bool:
    """Whether the principal's dashboard user is a superuser or holds the administrator role."""
    user = principal.user
    if user is None:
        return False
    return bool(user.is_superuser or user.groups.filter(name=ADMINISTRATOR_ROLE).exists())


def _check_pair(principal: Principal, service: Principal) -> None:
    if service.type != PrincipalType.SERVICE:
        raise ValidationError(f"{service.arn} is not a registered service principal.")
    if principal.type not in (PrincipalType.USER, PrincipalType.ROLE):
        raise ValidationError(f"Only a user or a role can delegate to a service, not {principal.arn}.")
    if principal.account_id != service.account_id:
        raise ValidationError(f"{service.arn} is not a service of {principal.arn}'s account.")


def _is_self(caller: Caller, principal: Principal) -> bool:
    return caller.principal_pk is not None and caller.principal_pk == principal.pk and caller.via_service is None


def service_delegation_create(*, caller: Caller, principal: Principal, service: Principal) -> ServiceDelegation:
    """Let ``service`` act for ``principal`` (a user or role of the service's account).

    Allowed to the principal itself, to kmsweb's operator (the system
    caller of ``manage.py service_delegation``) and to callers allowed
    ``iam:CreateServiceDelegation`` — never through a service, and never
    for an administrator, whose powers no service credential may carry.
    Idempotent: an existing delegation is returned. Audited as
    ``CreateServiceDelegation``.
    """
    params = {"PrincipalArn": principal.arn, "ServiceArn": service.arn}
    with audited(caller, "CreateServiceDelegation", request_parameters=params, event_source="kmsweb") as op:
        if not caller.is_system and not _is_self(caller, principal):
            if caller.via_service is not None:
                raise AccessDenied("A service cannot create delegations.")
            authorize(caller=caller, action="iam:CreateServiceDelegation")
        _check_pair(principal, service)
        if principal_is_administrator(principal):
            raise AccessDenied(f"No service may act for {principal.arn}: it is an administrator.")
        existing = ServiceDelegation.objects.filter(principal=principal, service=service).first()
        if existing is not None:
            return existing
        try:
            with transaction.atomic():
                delegation = ServiceDelegation.objects.create(
                    principal=principal, service=service, created_by=caller.principal_arn, created_at=timezone.now()
                )
        except IntegrityError:
            # A concurrent create won: the delegation exists, which is what was asked.
            return ServiceDelegation.objects.get(principal=principal, service=service)
        op.response_elements = params
        return delegation


def service_delegation_delete(*, caller: Caller, principal: Principal, service: Principal) -> None:
    """Withdraw ``service``'s right to act for ``principal``; it applies to the next request.

    Allowed to the principal itself, to the operator and to callers allowed
    ``iam:DeleteServiceDelegation``. ``NotFoundException`` if there is none.
    Audited as ``DeleteServiceDelegation``.
    """
    params = {"PrincipalArn": principal.arn, "ServiceArn": service.arn}
    with audited(caller, "DeleteServiceDelegation", request_parameters=params, event_source="kmsweb"):
        if not caller.is_system and not _is_self(caller, principal):
            authorize(caller=caller, action="iam:DeleteServiceDelegation")
        deleted, _ = ServiceDelegation.objects.filter(principal=principal, service=service).delete()
        if not deleted:
            raise NotFound(f"{service.arn} may not act for {principal.arn}: there is no such delegation.")


def principal_acting_for(*, service: Principal, arn: str) -> Principal:
    """The user or role a service principal's request is made for.

    Only a registered service principal may act for another principal, only
    for a user or role of its own account that delegated to it
    (``ServiceDelegation``), and never for an administrator. Every refusal
    is the same AccessDeniedException, so the header cannot probe for
    names; the audit record's decision says which rule refused.
    """

    def refusal(why: str) -> AccessDenied:
        error = AccessDenied(
            f"User: {service.arn} is not authorized to act on behalf of {arn[:256]!r}: only a registered "
            "service principal may, for a user or role of its own account that delegated to it."
        )
        error.decision = {
            "allowed": False,
            "reason": "not-delegated",
            "explanation": why,
            "statement": None,
            "invokedByArn": service.arn,
            "onBehalfOf": arn[:256],
        }
        return error

    if service.type != PrincipalType.SERVICE:
        raise refusal(f"{service.arn} is not a service principal, so it cannot act for another principal.")
    match = _ACTING_FOR_ARN.fullmatch(arn)
    if match is None or match.group(1) != service.account_id:
        raise refusal(f"The on-behalf-of principal is not a user or role ARN of account {service.account_id}.")
    principal = (
        Principal.objects.select_related("account", "user")
        .filter(account_id=service.account_id, type=match.group(2), name=match.group(3))
        .first()
    )
    if principal is None:
        raise refusal("The on-behalf-of principal does not exist.")
    if not ServiceDelegation.objects.filter(principal=principal, service=service).exists():
        raise refusal(f"{principal.arn} has not delegated to {service.arn}.")
    if principal_is_administrator(principal):
        raise refusal(f"{principal.arn} is an administrator: no service may act for it.")
    return principal
