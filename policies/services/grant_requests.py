"""Grant requests (kmsweb's addition to AWS): ask for a grant, approvers decide.

A principal asks for a grant on a key (grantee, operations, constraints,
justification, duration). Approvers — principals allowed
``kmsweb:DecideGrantRequest``, with MFA — approve or reject; the requester
(and the grantee) never decide. When a request reaches the approvals its key
requires (``Key.grant_approvals_required``, 1 or 2) the grant is created by
``grant_create`` in the same transaction, expiring ``duration`` after that
approval. One rejection rejects. The requester may withdraw a pending
request; a job expires requests left pending for
``KMSWEB_GRANT_REQUEST_TTL_DAYS``. Requests and their decisions are never
deleted: they are the history the dashboard shows.

Every step is one audited service call; approvers are emailed on a new
request and the requester on the decision, after the transaction commits.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audited
from keys.models import Key, KeyManager
from keys.services.common import check_storable_text, require_not_pending_deletion
from kmsweb.lib import operations
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    AccessDenied,
    AlreadyExists,
    InvalidState,
    KmsError,
    UnsupportedOperation,
    ValidationError,
)
from policies.authorization import authorize
from policies.models import GrantRequest, GrantRequestDecision, GrantRequestState, Principal
from policies.selectors import principal_for_arn
from policies.services.grants import grant_create, grant_parameters_check
from policies.services.notifications import grant_request_decided_mail, grant_request_new_mail

logger = logging.getLogger(__name__)

MIN_DURATION = timedelta(hours=1)
MAX_DURATION = timedelta(days=90)
MAX_TEXT = 2000
_IAM_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):(.+)$")


def grant_request_deadline(request: GrantRequest) -> datetime:
    """When a pending request expires if nobody decides it."""
    return request.created_at + timedelta(days=settings.KMSWEB_GRANT_REQUEST_TTL_DAYS)


def _principal_of(caller: Caller) -> Principal:
    principal = Principal.objects.filter(pk=caller.principal_pk).first() if caller.principal_pk else None
    if principal is None:
        raise AccessDenied(
            f"{caller.principal_arn or 'The caller'} is not a principal that can take part in grant requests."
        )
    return principal


def _check_text(member: str, value: str, *, required: bool) -> str:
    value = value.strip()
    if required and not value:
        raise ValidationError(f"{member} must not be empty.")
    if len(value) > MAX_TEXT:
        raise ValidationError(f"{member} must be at most {MAX_TEXT} characters long.")
    check_storable_text(member, value)
    return value


def _check_context_text(constraints: Mapping[str, Any] | None) -> None:
    # Constraints land in a JSON column: PostgreSQL's jsonb cannot hold U+0000.
    for context in (constraints or {}).values():
        for name, value in dict(context or {}).items():
            check_storable_text("Constraints", str(name))
            check_storable_text("Constraints", str(value))


def _require_pending(request: GrantRequest, now: datetime) -> None:
    if request.state != GrantRequestState.PENDING:
        raise InvalidState(f"Grant request {request.pk} is {request.state}; only a pending request can change.")
    deadline = grant_request_deadline(request)
    if deadline <= now:
        raise InvalidState(f"Grant request {request.pk} expired on {deadline:%Y-%m-%d %H:%M} UTC; ask again.")


def _locked(request: GrantRequest) -> GrantRequest:
    # Two approvers deciding at once must not both see "one approval short".
    # of=self: lock the request only, not the key (key operations go on).
    return GrantRequest.objects.select_for_update(of=("self",)).select_related("key", "requester").get(pk=request.pk)


def _issuer(approver: Caller, key: Key) -> Caller:
    """Who creates an approved grant: the platform, on behalf of the final approver.

    The approvers' authority is ``kmsweb:DecideGrantRequest`` plus the key's
    approval rule, not ``kms:CreateGrant`` (which they usually lack), so the
    grant is issued as the platform; its ``created_by`` and the CreateGrant
    audit event's principal name the approver, and the shared request id ties
    that event to the approval's.
    """
    system = Caller.system("grant-requests", account_id=key.account_id or "", region=key.region)
    return dataclasses.replace(
        system,
        principal_arn=approver.principal_arn,
        source_ip=approver.source_ip,
        mfa_present=approver.mfa_present,
        request_id=approver.request_id,
    )


def grant_request_create(
    *,
    caller: Caller,
    key: Key,
    grantee_principal: str,
    operations: Sequence[str],
    constraints: Mapping[str, Any] | None,
    justification: str,
    duration: timedelta,
) -> GrantRequest:
    """Ask for a grant on ``key``; returns the pending request.

    The caller needs ``kmsweb:RequestGrant`` (identity) and ``kms:DescribeKey``
    on the key. Grantee, operations and constraints pass CreateGrant's own
    checks now, so approvers only see requests that can become grants.
    ``duration`` (1 hour to 90 days) is how long the grant will last once
    approved. The key's current approval count is copied onto the request.
    Emails the account's approvers after commit.
    """
    ops = sorted(set(operations))
    params = {
        "KeyId": str(key.id),
        "GranteePrincipal": grantee_principal,
        "Operations": ops,
        "Constraints": dict(constraints) if constraints else None,
        "DurationSeconds": int(duration.total_seconds()),
    }
    with audited(caller, "CreateGrantRequest", request_parameters={k: v for k, v in params.items() if v}) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kmsweb:RequestGrant")
        authorize(caller=caller, action="kms:DescribeKey", key=key)
        requester = _principal_of(caller)
        if key.manager != KeyManager.CUSTOMER:
            raise UnsupportedOperation(f"Grants on the AWS managed key {key.arn} are created by its service only.")
        require_not_pending_deletion(key)
        if len(grantee_principal) > 256:
            raise ValidationError("GranteePrincipal must be at most 256 characters long.")
        _check_context_text(constraints)
        checked = grant_parameters_check(
            key=key, grantee_principal=grantee_principal, operations=ops, constraints=constraints
        )
        if not MIN_DURATION <= duration <= MAX_DURATION:
            raise ValidationError("The duration must be between 1 hour and 90 days.")
        request = GrantRequest.objects.create(
            key=key,
            requester=requester,
            grantee_principal=grantee_principal,
            operations=ops,
            constraints=checked,
            justification=_check_text("Justification", justification, required=True),
            duration=duration,
            approvals_required=key.grant_approvals_required,
            created_at=timezone.now(),
        )
        op.response_elements = {"GrantRequestId": request.pk, "State": request.state}
        transaction.on_commit(partial(grant_request_new_mail, request_id=request.pk))
        return request


def grant_request_decide(*, caller: Caller, request: GrantRequest, approve: bool, comment: str) -> GrantRequest:
    """Approve or reject a pending request; returns it as it now stands.

    Approvers only (``kmsweb:DecideGrantRequest`` and ``kms:DescribeKey`` on
    the key), with MFA. Neither the requester nor the grantee may decide, and
    an approver approves once. A rejection needs a comment and rejects at
    once. The approval that reaches the required count — the larger of the
    request's and the key's current setting, so raising a key's setting also
    holds pending requests — creates the grant (``grant_create``, expiring
    ``duration`` from now) in the same transaction; a failure there undoes
    the approval. Emails the requester once the request is decided.
    """
    event = "ApproveGrantRequest" if approve else "RejectGrantRequest"
    with audited(caller, event, request_parameters={"GrantRequestId": request.pk, "Comment": comment or None}) as op:
        op.keys.append(request.key)
        authorize(caller=caller, action="kmsweb:DecideGrantRequest")
        authorize(caller=caller, action="kms:DescribeKey", key=request.key)
        if not caller.mfa_present:
            raise AccessDenied("Deciding a grant request needs multi-factor authentication.")
        comment = _check_text("Comment", comment or "", required=not approve)
        now = timezone.now()
        locked = _locked(request)
        _require_pending(locked, now)
        approver = _principal_of(caller)
        if approver.pk == locked.requester_id:
            raise AccessDenied("A requester cannot decide their own grant request; withdraw it instead.")
        if approver.arn == locked.grantee_principal:
            raise AccessDenied("The grantee of a grant request cannot decide it.")
        approvals = locked.decisions.filter(verdict="approve")
        if approve and approvals.filter(principal=approver).exists():
            raise AlreadyExists(f"You have already approved grant request {locked.pk}; another approver must.")
        GrantRequestDecision.objects.create(
            request=locked,
            principal=approver,
            verdict="approve" if approve else "reject",
            comment=comment,
            created_at=now,
        )
        required = max(locked.approvals_required, locked.key.grant_approvals_required)
        changes: dict[str, Any] = {"approvals_required": required}
        if not approve:
            changes.update(state=GrantRequestState.REJECTED, decided_at=now)
        elif approvals.values("principal").distinct().count() >= required:
            require_not_pending_deletion(locked.key)
            grant, _token = grant_create(
                caller=_issuer(caller, locked.key),
                key=locked.key,
                grantee_principal=locked.grantee_principal,
                operations=locked.operations,
                constraints=locked.constraints,
                name=f"grant-request-{locked.pk}",
                expires_at=now + locked.duration,
            )
            changes.update(state=GrantRequestState.APPROVED, decided_at=now, grant=grant)
        GrantRequest.objects.filter(pk=locked.pk).update(**changes)
        locked.refresh_from_db()
        op.response_elements = {"GrantRequestId": locked.pk, "State": locked.state}
        if locked.grant_id:
            op.response_elements["GrantId"] = locked.grant.grant_id  # type: ignore[union-attr]
        if locked.state != GrantRequestState.PENDING:
            transaction.on_commit(partial(grant_request_decided_mail, request_id=locked.pk))
        return locked


def grant_request_withdraw(*, caller: Caller, request: GrantRequest) -> GrantRequest:
    """The requester takes back a pending request (kept, as withdrawn)."""
    with audited(caller, "WithdrawGrantRequest", request_parameters={"GrantRequestId": request.pk}) as op:
        op.keys.append(request.key)
        requester = _principal_of(caller)
        if requester.pk != request.requester_id:
            raise AccessDenied(f"Only the requester can withdraw grant request {request.pk}.")
        now = timezone.now()
        locked = _locked(request)
        _require_pending(locked, now)
        GrantRequestDecision.objects.create(request=locked, principal=requester, verdict="withdraw", created_at=now)
        GrantRequest.objects.filter(pk=locked.pk).update(state=GrantRequestState.WITHDRAWN, decided_at=now)
        locked.refresh_from_db()
        op.response_elements = {"GrantRequestId": locked.pk, "State": locked.state}
        return locked


def grant_request_describe(*, caller: Caller, request: GrantRequest) -> GrantRequest:
    """Read one request (REST GET): its requester, or an approver of its key's account."""
    with audited(
        caller, "DescribeGrantRequest", request_parameters={"GrantRequestId": request.pk}, read_only=True
    ) as op:
        op.keys.append(request.key)
        if caller.principal_pk is None or caller.principal_pk != request.requester_id:
            authorize(caller=caller, action="kmsweb:DecideGrantRequest")
            authorize(caller=caller, action="kms:DescribeKey", key=request.key)
        return request


def grant_requests_expire(*, caller: Caller, now: datetime) -> int:
    """Expire requests left pending past ``KMSWEB_GRANT_REQUEST_TTL_DAYS`` (the job's service).

    Idempotent: a conditional update on the pending state, so two workers
    never expire a request twice, and a request decided meanwhile stays
    decided. Returns how many expired.
    """
    cutoff = now - timedelta(days=settings.KMSWEB_GRANT_REQUEST_TTL_DAYS)
    with audited(caller, "ExpireGrantRequests") as op:
        stale = GrantRequest.objects.filter(state=GrantRequestState.PENDING, created_at__lte=cutoff)
        ids = list(stale.order_by("pk").values_list("pk", flat=True)[:10_000])
        count = GrantRequest.objects.filter(pk__in=ids, state=GrantRequestState.PENDING).update(
            state=GrantRequestState.EXPIRED, decided_at=now
        )
        op.response_elements = {"expired": count}
        op.additional_event_data["grantRequestIds"] = ids[:100]
        return count


@dataclasses.dataclass(frozen=True)
class OperationPreview:
    """Whether the grantee can already do one requested operation today, and why."""

    operation: str
    allowed: bool | None  # None: could not be evaluated
    reason: str


def _grantee_caller(request: GrantRequest) -> Caller:
    match = _IAM_ARN.match(request.grantee_principal)
    account_id, rest = (match.group(1), match.group(2)) if match else ("", "")
    principal = principal_for_arn(request.grantee_principal)
    return Caller(
        principal_arn=request.grantee_principal,
        account_id=account_id,
        region=request.key.region,
        # Grants are used through the API, so that is how the grantee is judged.
        origin="api",
        principal_type=principal.type if principal else rest.partition("/")[0],
        principal_name=principal.name if principal else rest.rpartition("/")[2],
        principal_pk=principal.pk if principal else None,
        principal_tags=tuple(sorted((principal.tags or {}).items())) if principal else (),
        user_agent="kmsweb-grant-request-preview",
    )


def grant_request_preview(*, request: GrantRequest) -> list[OperationPreview]:
    """Per requested operation: may the grantee already do it, without the new grant?

    Asks the authorization engine as the grantee would be asked through the
    API (with the constraint's encryption context where one applies). Reads
    only; not audited (it is advice for approvers, not an access decision).
    """
    grantee = _grantee_caller(request)
    constraint = request.constraints or {}
    context = constraint.get("EncryptionContextEquals") or constraint.get("EncryptionContextSubset") or {}
    previews = []
    for operation in request.operations:
        extra = {"EncryptionContext": dict(context)} if operation in operations.CONTEXT_BOUND else None
        try:
            decision = authorize(caller=grantee, action=f"kms:{operation}", key=request.key, context=extra)
        except KmsError as exc:
            why = (exc.decision or {}).get("explanation") or exc.message
            previews.append(OperationPreview(operation, False, why))
        except Exception:
            # Advice only: an engine failure must not hide the request from approvers.
            logger.exception("grant request %s: preview of %s failed", request.pk, operation)
            previews.append(OperationPreview(operation, None, "Could not be evaluated."))
        else:
            why = getattr(decision, "explanation", "") or f"Allowed ({decision.reason})."
            previews.append(OperationPreview(operation, True, why))
    return previews
