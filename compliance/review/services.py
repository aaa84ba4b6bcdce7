"""Least-privilege review for a caller: load the facts, authorize, record the read.

Reading an access review, a change preview or the external-access list needs
``kmsweb:DescribeFindings`` (what ``GET /api/v1/findings`` needs: every
dashboard role has it; API principals through their identity policies), and
covers the caller's own account only. Each read is one audit event (source
``kmsweb.compliance``): ``GetAccessReview``, ``PreviewPolicyChange``,
``ListExternalAccess``. Previews change nothing: they run the engine and the
rules over a modified copy of the snapshot.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max

from audit.models import AuditEvent
from audit.services import audited
from compliance.review import analysis, preview
from compliance.rules.facts import GrantFact, PrincipalFact, Snapshot
from compliance.snapshot import snapshot_load
from keys.models import Key, KeyManager
from keys.services.common import check_policy_document
from kmsweb.lib import clock
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import MalformedPolicyDocument, NotFound, ValidationError
from kmsweb.lib.operations import CONTEXT_BOUND, OPERATIONS
from policies import evaluation as ev
from policies.authorization import authorize
from policies.services.grants import grant_parameters_check

READ_ACTION = "kmsweb:DescribeFindings"
EVENT_SOURCE = "kmsweb.compliance"
KMS_SOURCE = "kms.amazonaws.com"
DEFAULT_DAYS = 90
MAX_DAYS = 366


def _read(caller: Caller, event_name: str, params: dict[str, Any]) -> Any:
    clean = {k: v for k, v in params.items() if v not in ("", None)}
    return audited(caller, event_name, request_parameters=clean, read_only=True, event_source=EVENT_SOURCE)


def _pairs(value: Any) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(value, dict):
        return None
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def observed_calls(*, principal_arn: str, now: datetime, days: int) -> list[analysis.ObservedCall]:
    """The principal's successful KMS calls in the last ``days``, grouped by action, key and context.

    Counts and last use come from one grouped query over the audit trail; the
    encryption context of context-bound calls is part of the group, so the
    generator sees every distinct context the principal used. ReEncrypt counts
    as ReEncryptFrom on its source key and ReEncryptTo on its destination, as
    it is authorized.
    """
    base = AuditEvent.objects.filter(
        principal_arn=principal_arn,
        event_source=KMS_SOURCE,
        error_code="",
        event_time__gte=now - timedelta(days=days),
        event_time__lte=now,
    )
    plain = (
        base.exclude(event_name__in=[*CONTEXT_BOUND, "ReEncrypt"])
        .values_list("event_name", "key_id", "aws_region", "recipient_account_id")
        .annotate(n=Count("id"), last=Max("event_time"))
        .order_by()
    )
    rows: list[tuple[str, str, str, str, Any, int, datetime]] = [
        (name, key_id, region, account, None, n, last) for name, key_id, region, account, n, last in plain
    ]
    # Context-bound calls are few kinds: their contexts are read per event and grouped here.
    grouped: dict[tuple[str, str, str, str, Any], list[Any]] = defaultdict(lambda: [0, None])
    bound = base.filter(event_name__in=[*CONTEXT_BOUND, "ReEncrypt"]).values_list(
        "event_name", "key_id", "aws_region", "recipient_account_id", "request_parameters", "resources", "event_time"
    )
    for name, key_id, region, account, params, resources, at in bound.iterator(chunk_size=2000):
        params = params or {}
        if name == "ReEncrypt":
            entries = [(key_id, "kms:ReEncryptFrom", params.get("sourceEncryptionContext"))]
            arns = [r.get("ARN", "") for r in resources or () if isinstance(r, dict)]
            destination = next((a.rsplit("/", 1)[-1] for a in arns if a and not a.endswith(key_id)), key_id)
            entries.append((destination, "kms:ReEncryptTo", params.get("destinationEncryptionContext")))
        else:
            entries = [(key_id, f"kms:{name}", params.get("encryptionContext"))]
        for kid, action, context in entries:
            slot = grouped[(action, kid, region, account, _pairs(context) or ())]
            slot[0] += 1
            slot[1] = at if slot[1] is None or at > slot[1] else slot[1]
    for (action, kid, region, account, context), (n, last) in grouped.items():
        rows.append((action[4:], kid, region, account, context, n, last))
    key_ids = {row[1] for row in rows if row[1]}
    keys = {str(k): (r, a) for k, r, a in Key.objects.filter(id__in=key_ids).values_list("id", "region", "account_id")}
    calls = []
    for name, key_id, region, account, context, n, last in rows:
        if name not in OPERATIONS:
            continue
        if key_id:
            key_region, key_account = keys.get(key_id, (region, account))
            arn = f"arn:aws:kms:{key_region}:{key_account}:key/{key_id}"
            resource_account = key_account
        else:
            arn, resource_account = f"arn:aws:kms:{region}:{account}:*", account
        calls.append(
            analysis.ObservedCall(
                action=f"kms:{name}",
                resource_arn=arn,
                resource_account=resource_account,
                key_id=key_id,
                encryption_context=context if name in CONTEXT_BOUND or name.startswith("ReEncrypt") else None,
                count=n,
                last_used=last,
            )
        )
    return sorted(calls, key=lambda c: (c.resource_arn, c.action, c.encryption_context or ()))


def _principal_fact(snapshot: Snapshot, arn: str, account_id: str) -> PrincipalFact:
    found = snapshot.principals_by_arn.get(arn)
    if found is None or found.account_id != account_id:
        raise NotFound(f"No principal {arn} in account {account_id}.")
    return found


def check_days(value: Any) -> int:
    """The look-back window in days (1 to 366), or ``ValidationError``."""
    try:
        days = int(value)
    except (TypeError, ValueError):
        raise ValidationError("Days must be a whole number of days.") from None
    if not 1 <= days <= MAX_DAYS:
        raise ValidationError(f"Days must be between 1 and {MAX_DAYS}.")
    return days


def access_review_for(*, caller: Caller, principal_arn: str, days: int = DEFAULT_DAYS) -> analysis.AccessReview:
    """A principal's access review: allowed against used in ``days``, and a generated policy.

    The generated policy is confirmed by the engine against every observed call
    (``GenerationError`` if not: a bug, answered as an internal error).
    """
    with _read(caller, "GetAccessReview", {"PrincipalArn": principal_arn, "Days": days}):
        authorize(caller=caller, action=READ_ACTION)
        now = clock.now()
        snapshot = snapshot_load(now=now)
        principal = _principal_fact(snapshot, principal_arn, caller.account_id)
        calls = observed_calls(principal_arn=principal.arn, now=now, days=days)
        return analysis.access_review(snapshot, principal, calls, days)


def external_access_for(*, caller: Caller) -> list[analysis.ExternalAccess]:
    """Every principal of another account (or everyone) that can use one of the caller's account's keys."""
    with _read(caller, "ListExternalAccess", {}):
        authorize(caller=caller, action=READ_ACTION)
        snapshot = snapshot_load(now=clock.now())
        return analysis.external_access(snapshot, [k for k in snapshot.keys if k.account_id == caller.account_id])


def _identity_document(document: str) -> str:
    try:
        ev.parse_policy(document, kind="identity")
    except ev.PolicyError as exc:
        raise MalformedPolicyDocument(exc.message) from exc
    return document


def _own_key(caller: Caller, key_id: str) -> Key:
    ref = key_id.rsplit("/", 1)[-1].strip()
    key = Key.objects.filter(id=ref, account_id=caller.account_id).first() if _is_uuid(ref) else None
    if key is None or key.deleted_at is not None:
        raise NotFound(f"Key '{key_id[:256]}' does not exist")
    return key


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


CHANGE_TYPES = ("KeyPolicy", "IdentityPolicy", "CreateGrant", "RevokeGrant")


@dataclass(frozen=True)
class Proposal:
    """A change as asked for, not yet validated (``policy_preview`` validates it after authorizing).

    ``KeyPolicy``: ``key_id``, ``policy``. ``IdentityPolicy``: ``policy_name``,
    ``policy`` and ``principal_arn`` (an inline policy) or none (a managed
    policy of the account). ``CreateGrant``: ``key_id``, ``grantee``,
    ``operations``, ``constraints``. ``RevokeGrant``: ``key_id``, ``grant_id``.
    """

    change_type: str
    key_id: str = ""
    policy: str = ""
    policy_name: str = ""
    principal_arn: str = ""
    grantee: str = ""
    operations: tuple[str, ...] = ()
    constraints: dict[str, Any] | None = None
    grant_id: str = ""

    def audit_parameters(self) -> dict[str, Any]:
        return {
            "ChangeType": self.change_type,
            "KeyId": self.key_id,
            "PolicyName": self.policy_name,
            "PrincipalArn": self.principal_arn,
            "GranteePrincipal": self.grantee,
            "GrantId": self.grant_id,
        }


def _key_policy_change(caller: Caller, proposal: Proposal) -> preview.KeyPolicyChange:
    key = _own_key(caller, proposal.key_id)
    if key.manager != KeyManager.CUSTOMER:
        raise ValidationError("Only a customer managed key's policy can change.")
    check_policy_document(proposal.policy)
    return preview.KeyPolicyChange(str(key.id), proposal.policy)


def _identity_policy_change(caller: Caller, proposal: Proposal) -> preview.IdentityPolicyChange:
    name = proposal.policy_name
    if not name or len(name) > 128:
        raise ValidationError("PolicyName must be 1 to 128 characters long.")
    _identity_document(proposal.policy)
    return preview.IdentityPolicyChange(
        name, proposal.policy, principal_arn=proposal.principal_arn, account_id=caller.account_id
    )


def _grant_change(caller: Caller, proposal: Proposal) -> preview.GrantChange:
    key = _own_key(caller, proposal.key_id)
    if proposal.change_type == "RevokeGrant":
        if not key.grants.live(clock.now()).filter(grant_id=proposal.grant_id).exists():
            raise NotFound(f"Grant ID {proposal.grant_id[:128]} not found")
        return preview.GrantChange(revoke_grant_id=proposal.grant_id)
    # CreateGrant's own checks: operations valid for the key, constraints, an existing grantee.
    constraints = grant_parameters_check(
        key=key,
        grantee_principal=proposal.grantee,
        operations=list(proposal.operations),
        constraints=proposal.constraints,
    )
    fact = GrantFact(
        grant_id="(proposed)",
        key_id=str(key.id),
        key_account_id=key.account_id or caller.account_id,
        grantee_principal=proposal.grantee,
        operations=tuple(sorted(set(proposal.operations))),
        created_at=clock.now(),
        constraints=constraints or None,
    )
    return preview.GrantChange(grant=fact)


def policy_preview(*, caller: Caller, proposal: Proposal) -> preview.Preview:
    """Who gains and loses which actions on which keys, and the findings created and resolved.

    Authorizes, then validates the proposal (``MalformedPolicyDocumentException``
    for a policy the engine refuses, ``ValidationException``, ``NotFoundException``),
    then runs the engine and the rules over the snapshot with the change applied.
    Nothing is saved; the read is recorded as PreviewPolicyChange.
    """
    with _read(caller, "PreviewPolicyChange", proposal.audit_parameters()):
        authorize(caller=caller, action=READ_ACTION)
        change: preview.Change
        if proposal.change_type == "KeyPolicy":
            change = _key_policy_change(caller, proposal)
        elif proposal.change_type == "IdentityPolicy":
            change = _identity_policy_change(caller, proposal)
        elif proposal.change_type in ("CreateGrant", "RevokeGrant"):
            change = _grant_change(caller, proposal)
        else:
            raise ValidationError(f"ChangeType must be one of {', '.join(CHANGE_TYPES)}.")
        snapshot = snapshot_load(now=clock.now())
        if isinstance(change, preview.IdentityPolicyChange) and change.principal_arn:
            _principal_fact(snapshot, change.principal_arn, caller.account_id)
        return preview.preview(snapshot, change)


def preview_body(result: preview.Preview) -> dict[str, Any]:
    """The JSON form of a preview (the REST API's answer)."""

    def access(rows: list[preview.AccessChange]) -> list[dict[str, Any]]:
        return [
            {"Principal": r.principal, "KeyId": r.key_id, "KeyArn": r.key_arn, "Actions": list(r.actions)} for r in rows
        ]

    def findings(rows: list[preview.FindingChange]) -> list[dict[str, Any]]:
        return [
            {
                "RuleId": f.rule_id,
                "Title": f.title,
                "Severity": f.severity,
                "ResourceId": f.resource_id,
                "Evidence": json.loads(json.dumps(f.evidence, default=str)),
            }
            for f in rows
        ]

    return {
        "Gains": access(result.gains),
        "Losses": access(result.losses),
        "Narrowed": access(result.narrowed),
        "FindingsCreated": findings(result.created),
        "FindingsResolved": findings(result.resolved),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def review_body(review: analysis.AccessReview) -> dict[str, Any]:
    """The JSON form of an access review (the REST API's answer)."""
    return {
        "PrincipalArn": review.principal.arn,
        "Days": review.days,
        "Keys": [
            {
                "KeyId": k.key_id,
                "KeyArn": k.key_arn,
                "External": k.external,
                "Allowed": [{"Action": a, "Path": p} for a, p in k.allowed.items()],
                "Used": [{"Action": a, "LastUsed": _iso(at)} for a, at in k.used.items()],
                "Unused": k.unused,
            }
            for k in review.keys
        ],
        "Grants": [
            {
                "GrantId": g.grant_id,
                "KeyId": g.key_id,
                "Operations": g.operations,
                "Used": sorted(g.used),
                "Unused": g.unused,
            }
            for g in review.grants
        ],
        "OtherActionsUsed": [{"Action": a, "LastUsed": _iso(at)} for a, at in review.other_actions.items()],
        "GeneratedPolicy": review.generated_text or None,
        "GeneratedPolicyNote": review.generated_note or None,
    }
