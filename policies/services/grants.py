"""Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant.

A grant lets its grantee use one key for the listed operations, optionally
only with a given encryption context. Grants take effect at once (the token
is accepted immediately). Retired, revoked and expired grants stay as rows
with ``retired_at`` so history can still name them; they give nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.core import signing
from django.db.models import Q
from django.utils import timezone

from audit.services import audited
from compliance.triggers import compliance_evaluation_request
from keys.models import Key, KeyManager, KeySpec, KeyState
from keys.selectors import decode_marker, encode_marker
from kmsweb.generations import GRANTS, generation_bump
from kmsweb.lib import operations
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    AccessDenied,
    Disabled,
    DryRunOperation,
    InvalidArn,
    InvalidGrantId,
    InvalidGrantToken,
    InvalidState,
    NotFound,
    ValidationError,
)
from policies import evaluation as ev
from policies.authorization import authorize, authorize_retire
from policies.models import Grant, Principal

# Operations a grant may list for a symmetric encryption key, and the ones
# an encryption-context constraint makes sense for (AWS refuses constraints
# on the others).
SYMMETRIC_GRANT_OPERATIONS = operations.grant_operations(operations.SYMMETRIC)
CONSTRAINABLE_OPERATIONS = SYMMETRIC_GRANT_OPERATIONS - {"DescribeKey"}
# Operations a grant may list for the other kinds of keys, by key usage (AWS's
# grant operations table): each key offers only the operations it can do.
_ANY_KEY_OPERATIONS = frozenset(
    name for name in SYMMETRIC_GRANT_OPERATIONS if operations.OPERATIONS[name].grant_for == set(operations.KEY_KINDS)
)
GRANT_OPERATIONS_BY_USAGE = {
    usage: operations.grant_operations(usage)
    for usage in (
        operations.ENCRYPT_DECRYPT,
        operations.SIGN_VERIFY,
        operations.GENERATE_VERIFY_MAC,
        operations.KEY_AGREEMENT,
        operations.KEY_ENCAPSULATION,
    )
}
_TOKEN_SALT = "kmsweb.grant-token"  # noqa: S105 - a signing salt, not a secret
_PRINCIPAL_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):(root|(user|role|service)/[\w+=,.@/-]{1,512})$")


def grant_token_for(grant: Grant) -> str:
    """An opaque token naming the grant, usable at once (signed, not stored)."""
    return signing.dumps({"g": grant.grant_id, "n": secrets.token_hex(4)}, salt=_TOKEN_SALT, compress=True)


def grant_from_token(token: str) -> Grant:
    """The grant a token names; ``InvalidGrantTokenException`` for anything else."""
    try:
        payload = signing.loads(token, salt=_TOKEN_SALT)
        grant_id = str(payload["g"])
    except (signing.BadSignature, KeyError, TypeError, ValueError) as exc:
        raise InvalidGrantToken("The grant token is not valid.") from exc
    grant = Grant.objects.select_related("key").filter(grant_id=grant_id).first()
    if grant is None:
        raise InvalidGrantToken("The grant token is not valid.")
    return grant


def grant_tokens_check(*, tokens: Sequence[str]) -> None:
    """GrantTokens on any request must be tokens kmsweb issued."""
    for token in tokens:
        grant_from_token(token)


def _check_principal_arn(arn: str, member: str) -> None:
    match = _PRINCIPAL_ARN.match(arn)
    if match is None:
        raise InvalidArn(f"{member} '{arn}' is not a valid principal ARN.")
    account_id, rest = match.group(1), match.group(2)
    if rest == "root":
        return
    kind, _, name = rest.partition("/")
    if not Principal.objects.filter(account_id=account_id, type=kind, name=name).exists():
        raise InvalidArn(f"{member} '{arn}' does not name an existing principal.")


def _check_constraints(constraints: Mapping[str, Any] | None, operations: Sequence[str]) -> dict[str, Any] | None:
    if not constraints:
        return None
    subset = constraints.get("EncryptionContextSubset")
    equals = constraints.get("EncryptionContextEquals")
    source_arn = constraints.get("SourceArn")
    if subset is None and equals is None:
        return {"SourceArn": source_arn} if source_arn else None
    if subset is not None and equals is not None:
        raise ValidationError("A grant constraint uses EncryptionContextSubset or EncryptionContextEquals, not both.")
    outside = sorted(set(operations) - CONSTRAINABLE_OPERATIONS)
    if outside:
        raise ValidationError(
            f"Encryption context constraints are not allowed for the operations {', '.join(outside)}."
        )
    out: dict[str, Any] = {}
    if subset is not None:
        out["EncryptionContextSubset"] = dict(subset)
    if equals is not None:
        out["EncryptionContextEquals"] = dict(equals)
    if source_arn:
        out["SourceArn"] = source_arn
    return out or None


def _is_service_principal(principal: str) -> bool:
    """A stored grantee or retiring principal names a service (``logs.amazonaws.com``), not an ARN.

    Only a stored value can be told apart this way: an ARN given as
    GranteePrincipal or RetiringPrincipal is checked to be one first.
    """
    return bool(principal) and not principal.startswith("arn:")


def _entry(grant: Grant) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "KeyId": grant.key.arn,
        "GrantId": grant.grant_id,
        "CreationDate": grant.created_at,
        "GranteePrincipal": grant.grantee_principal,
        "IssuingAccount": f"arn:aws:iam::{grant.issuing_account}:root",
        "Operations": list(grant.operations),
    }
    if _is_service_principal(grant.grantee_principal):
        entry["GranteeServicePrincipal"] = grant.grantee_principal
    if grant.name:
        entry["Name"] = grant.name
    if grant.retiring_principal:
        entry["RetiringPrincipal"] = grant.retiring_principal
        if _is_service_principal(grant.retiring_principal):
            entry["RetiringServicePrincipal"] = grant.retiring_principal
    if grant.constraints:
        entry["Constraints"] = grant.constraints
    return entry


def grant_parameters_check(
    *,
    key: Key,
    grantee_principal: str,
    operations: Sequence[str],
    constraints: Mapping[str, Any] | None,
    retiring_principal: str | None = None,
    grantee_is_service: bool = False,
    retiring_is_service: bool = False,
) -> dict[str, Any] | None:
    """CreateGrant's input checks, shared with grant requests; returns the normalized constraints.

    Raises ``ValidationError`` (no or invalid operations, bad constraints) or
    ``InvalidArnException`` (a grantee or retiring principal that is not an
    existing principal's ARN). Reads principals; changes nothing.
    """
    if not operations:
        raise ValidationError("Operations must list at least one operation.")
    if key.key_spec == KeySpec.SYMMETRIC_DEFAULT:
        invalid = sorted(set(operations) - SYMMETRIC_GRANT_OPERATIONS)
        if invalid:
            raise ValidationError(f"The operations {', '.join(invalid)} are not valid for the symmetric key {key.arn}.")
    else:
        invalid = sorted(set(operations) - GRANT_OPERATIONS_BY_USAGE.get(key.key_usage, _ANY_KEY_OPERATIONS))
        if invalid:
            raise ValidationError(
                f"The operations {', '.join(invalid)} are not valid for the {key.key_spec} key {key.arn} "
                f"with key usage {key.key_usage}."
            )
        if constraints and set(constraints) - {"SourceArn"}:
            raise ValidationError(
                f"Encryption context grant constraints are not supported for the {key.key_spec} key {key.arn}."
            )
    checked = _check_constraints(constraints, operations)
    # A service principal (checked against the model's pattern on the wire) is no ARN to look up.
    if not grantee_is_service:
        _check_principal_arn(grantee_principal, "GranteePrincipal")
    if retiring_principal and not retiring_is_service:
        _check_principal_arn(retiring_principal, "RetiringPrincipal")
    return checked


def _check_service_grant(
    *,
    grantee_principal: str | None,
    grantee_service_principal: str | None,
    retiring_principal: str | None,
    retiring_service_principal: str | None,
    constraints: Mapping[str, Any] | None,
) -> None:
    """AWS's rules for grants to AWS service principals (the 2026 CreateGrant members).

    A grant names its grantee by ARN or by service principal, never both;
    a grant to a service principal must carry a SourceArn constraint (the
    resource the service acts for) and name who may retire it. A SourceArn
    on a grant to an ARN is refused: kmsweb evaluates it only as part of a
    service principal's grant, so it would not restrict that grant.
    """
    if (grantee_principal is None) == (grantee_service_principal is None):
        raise ValidationError("You must specify either GranteePrincipal or GranteeServicePrincipal, but not both.")
    if retiring_principal and retiring_service_principal:
        raise ValidationError("You can specify either RetiringPrincipal or RetiringServicePrincipal, but not both.")
    source_arn = (constraints or {}).get("SourceArn")
    if grantee_service_principal is None:
        if source_arn:
            raise ValidationError("The SourceArn grant constraint is supported only with a GranteeServicePrincipal.")
        return
    if not source_arn:
        raise ValidationError(
            "When you specify a GranteeServicePrincipal, you must also specify a SourceArn constraint."
        )
    if not (retiring_principal or retiring_service_principal):
        raise ValidationError(
            "When you specify a GranteeServicePrincipal, you must also specify a RetiringPrincipal "
            "or a RetiringServicePrincipal."
        )


def _require_grantable(key: Key) -> None:
    """AWS's key state table for CreateGrant: a disabled key is DisabledException,
    a key pending deletion or pending import KMSInvalidStateException."""
    if key.state == KeyState.DISABLED:
        raise Disabled(f"{key.arn} is disabled.")
    if key.state == KeyState.PENDING_DELETION:
        raise InvalidState(f"{key.arn} is pending deletion.")
    if key.state == KeyState.PENDING_REPLICA_DELETION:
        raise InvalidState(f"{key.arn} is pending replica deletion.")
    if key.state == KeyState.PENDING_IMPORT:
        raise InvalidState(f"{key.arn} is pending import.")


def grant_create(
    *,
    caller: Caller,
    key: Key,
    grantee_principal: str | None = None,
    operations: Sequence[str],
    retiring_principal: str | None = None,
    constraints: Mapping[str, Any] | None = None,
    name: str | None = None,
    expires_at: datetime | None = None,
    dry_run: bool = False,
    grantee_service_principal: str | None = None,
    retiring_service_principal: str | None = None,
) -> tuple[Grant, str]:
    """CreateGrant. Returns the grant and a token for it.

    The grantee is a principal's ARN or an AWS service principal
    (``GranteeServicePrincipal``, with a ``SourceArn`` constraint); a
    service principal is stored in place of the ARN, told apart by having
    no ``arn:`` prefix. No caller is a service principal itself (kmsweb's
    services act on behalf of a principal), so such a grant allows nothing
    until a service can call as itself for a resource.

    A grant with the same name and the same parameters is returned again
    (AWS's idempotency by Name). A grantee creating a grant through a grant
    that lists CreateGrant may only grant operations its own grant has,
    under the same or stricter constraints (``evaluation.grant_may_create``).
    """
    ops = sorted(set(operations))
    params = {
        "KeyId": str(key.id),
        "GranteePrincipal": grantee_principal,
        "GranteeServicePrincipal": grantee_service_principal,
        "RetiringPrincipal": retiring_principal,
        "RetiringServicePrincipal": retiring_service_principal,
        "Operations": ops,
        "Constraints": dict(constraints) if constraints else None,
        "Name": name,
    }
    with audited(caller, "CreateGrant", request_parameters={k: v for k, v in params.items() if v}) as op:
        op.keys.append(key)
        _check_service_grant(
            grantee_principal=grantee_principal,
            grantee_service_principal=grantee_service_principal,
            retiring_principal=retiring_principal,
            retiring_service_principal=retiring_service_principal,
            constraints=constraints,
        )
        grantee_principal = grantee_principal or grantee_service_principal or ""
        retiring_principal = retiring_principal or retiring_service_principal
        checked = grant_parameters_check(
            key=key,
            grantee_principal=grantee_principal,
            operations=ops,
            constraints=constraints,
            retiring_principal=retiring_principal,
            grantee_is_service=grantee_service_principal is not None,
            retiring_is_service=retiring_service_principal is not None,
        )
        constraint_type = next((c for c in sorted(checked or {}) if c.startswith("EncryptionContext")), None)
        context: dict[str, Any] = {
            "kms:GranteePrincipal": grantee_principal,
            "kms:GrantOperations": ops,
            "kms:GrantIsForAWSResource": caller.via_service is not None,
        }
        if retiring_principal:
            context["kms:RetiringPrincipal"] = retiring_principal
        if constraint_type:
            context["kms:GrantConstraintType"] = constraint_type
        proposed = ev.ProposedGrant(
            operations=frozenset(ops),
            encryption_context_subset=(checked or {}).get("EncryptionContextSubset"),
            encryption_context_equals=(checked or {}).get("EncryptionContextEquals"),
        )
        authorize(caller=caller, action="kms:CreateGrant", key=key, context=context, proposed_grant=proposed)
        if key.manager == KeyManager.AWS and caller.via_service is None:
            raise AccessDenied(f"Grants on the AWS managed key {key.arn} are created by its service only.")
        _require_grantable(key)
        if dry_run:
            raise DryRunOperation()
        if name:
            existing = Grant.objects.filter(key=key, name=name, retired_at__isnull=True).first()
            if (
                existing is not None
                and existing.grantee_principal == grantee_principal
                and (existing.retiring_principal or None) == (retiring_principal or None)
                and sorted(existing.operations) == ops
                and existing.constraints == checked
            ):
                op.response_elements = {"GrantId": existing.grant_id}
                return existing, grant_token_for(existing)
        grant = Grant.objects.create(
            grant_id=hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
            key=key,
            name=name or "",
            grantee_principal=grantee_principal,
            retiring_principal=retiring_principal or "",
            operations=ops,
            constraints=checked,
            issuing_account=key.account_id or caller.account_id,
            created_by=caller.principal_arn,
            created_at=timezone.now(),
            expires_at=expires_at,
        )
        op.response_elements = {"GrantId": grant.grant_id}
        generation_bump(GRANTS)
        compliance_evaluation_request()
        return grant, grant_token_for(grant)


def grant_list(
    *,
    caller: Caller,
    key: Key,
    grant_id: str | None = None,
    grantee_principal: str | None = None,
    limit: int | None = None,
    marker: str | None = None,
) -> dict[str, Any]:
    """ListGrants for a key (live grants), optionally one grant or one grantee."""
    limit = limit or 50
    with audited(caller, "ListGrants", request_parameters={"KeyId": str(key.id), "Limit": limit}, read_only=True) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:ListGrants", key=key)
        qs = Grant.objects.live(timezone.now()).filter(key=key).select_related("key").order_by("created_at", "id")
        if grant_id:
            if not _GRANT_ID.fullmatch(grant_id):
                raise InvalidGrantId(f"Invalid grant id '{grant_id}'.")
            qs = qs.filter(grant_id=grant_id)
        if grantee_principal:
            qs = qs.filter(grantee_principal=grantee_principal)
        return _page(qs, limit, marker, "Grants")


def _page(qs: Any, limit: int, marker: str | None, member: str) -> dict[str, Any]:
    if marker:
        (last_pk,) = decode_marker(marker, 1)
        if not isinstance(last_pk, int):
            from kmsweb.lib.errors import InvalidMarker

            raise InvalidMarker("The marker is not valid.")
        qs = qs.filter(pk__gt=last_pk)
    page = list(qs.order_by("pk")[: limit + 1])
    truncated = len(page) > limit
    page = page[:limit]
    result: dict[str, Any] = {member: [_entry(g) for g in page], "Truncated": truncated}
    if truncated:
        result["NextMarker"] = encode_marker([page[-1].pk])
    return result


def grant_list_retirable(
    *,
    caller: Caller,
    retiring_principal: str | None = None,
    limit: int | None = None,
    marker: str | None = None,
    retiring_service_principal: str | None = None,
) -> dict[str, Any]:
    """ListRetirableGrants: live grants naming ``retiring_principal``, in every key of the region.

    ``retiring_service_principal`` lists the grants a service principal may
    retire; as in AWS, only that service principal itself may ask.
    """
    limit = limit or 50
    params = {"RetiringPrincipal": retiring_principal, "RetiringServicePrincipal": retiring_service_principal}
    with audited(
        caller,
        "ListRetirableGrants",
        request_parameters={k: v for k, v in params.items() if v},
        read_only=True,
    ):
        authorize(caller=caller, action="kms:ListRetirableGrants")
        if (retiring_principal is None) == (retiring_service_principal is None):
            raise ValidationError(
                "You must specify either RetiringPrincipal or RetiringServicePrincipal, but not both."
            )
        if retiring_principal is not None and _PRINCIPAL_ARN.match(retiring_principal) is None:
            raise InvalidArn(f"RetiringPrincipal '{retiring_principal}' is not a valid principal ARN.")
        if retiring_service_principal is not None and not (
            caller.principal_type == "service"
            and f"{caller.principal_name}.amazonaws.com" == retiring_service_principal
        ):
            raise AccessDenied(
                f"User: {caller.principal_arn} is not authorized to perform: kms:ListRetirableGrants: "
                "the RetiringServicePrincipal filter is only for callers in that service principal"
            )
        qs = (
            Grant.objects.live(timezone.now())
            .filter(retiring_principal=retiring_principal or retiring_service_principal, key__region=caller.region)
            .select_related("key")
        )
        return _page(qs, limit, marker, "Grants")


_GRANT_ID = re.compile(r"[0-9a-f]{64}")


def _find(key: Key | None, grant_id: str | None) -> Grant:
    if not grant_id or not _GRANT_ID.fullmatch(grant_id):
        raise InvalidGrantId(f"Invalid grant id '{grant_id}'.")
    grant = Grant.objects.select_related("key").filter(grant_id=grant_id, retired_at__isnull=True).first()
    if grant is None or (key is not None and grant.key_id != key.id):
        raise NotFound(f"Grant '{grant_id}' does not exist.")
    return grant


def grant_retire(
    *,
    caller: Caller,
    token: str | None = None,
    key: Key | None = None,
    grant_id: str | None = None,
    dry_run: bool = False,
) -> Grant:
    """RetireGrant, by token or by key + grant id.

    The grant decides who may (``authorization.authorize_retire``): its
    retiring principal, its grantee when it lists RetireGrant, the issuing
    account's root user, and, for a grant whose retiring principal is an
    account, that account's principals allowed ``kms:RetireGrant``. A policy
    alone never retires another principal's grant.
    """
    with audited(
        caller, "RetireGrant", request_parameters={"KeyId": str(key.id) if key else None, "GrantId": grant_id}
    ) as op:
        if token:
            grant = grant_from_token(token)
        elif key is not None and grant_id:
            grant = _find(key, grant_id)
        else:
            raise ValidationError("Give a GrantToken, or both KeyId and GrantId.")
        op.keys.append(grant.key)
        if grant.retired_at is not None:
            raise NotFound(f"Grant '{grant.grant_id}' does not exist.")
        authorize_retire(caller=caller, grant=grant)
        if dry_run:
            raise DryRunOperation()
        Grant.objects.filter(pk=grant.pk).update(retired_at=timezone.now(), retired_how="retired")
        generation_bump(GRANTS)
        compliance_evaluation_request()
        return grant


def grant_revoke(*, caller: Caller, key: Key, grant_id: str, dry_run: bool = False) -> Grant:
    """RevokeGrant: a principal allowed kms:RevokeGrant on the key ends a grant."""
    with audited(caller, "RevokeGrant", request_parameters={"KeyId": str(key.id), "GrantId": grant_id}) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:RevokeGrant", key=key)
        grant = _find(key, grant_id)
        if dry_run:
            raise DryRunOperation()
        Grant.objects.filter(pk=grant.pk).update(retired_at=timezone.now(), retired_how="revoked")
        generation_bump(GRANTS)
        compliance_evaluation_request()
        return grant


def grants_retire_expired(*, caller: Caller, now: datetime) -> int:
    """Mark grants past their approved duration as expired (the job's service).

    Idempotent: a conditional update, so two workers never double-count.
    """
    with audited(caller, "RetireExpiredGrants") as op:
        expired = Grant.objects.filter(retired_at__isnull=True, expires_at__lte=now)
        ids = list(expired.values_list("grant_id", flat=True)[:10_000])
        count = Grant.objects.filter(grant_id__in=ids, retired_at__isnull=True).update(
            retired_at=now, retired_how="expired"
        )
        op.response_elements = {"retired": count}
        if count:
            generation_bump(GRANTS)
        op.additional_event_data["grantIds"] = ids[:100]
        return count


def grants_for_principal(*, principal_arn: str, now: datetime) -> Any:
    """Live grants whose grantee is ``principal_arn`` (dashboard)."""
    return Grant.objects.live(now).filter(Q(grantee_principal=principal_arn)).select_related("key")
