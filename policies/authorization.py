"""The one authorization hook every service calls before it acts.

``authorize`` gathers what AWS's evaluation needs — the key policy, the
caller's identity policies (inline, attached, and for dashboard users their
roles' policies), the caller's live grants on the key, and the condition
keys of the request — and asks the pure engine in ``policies.evaluation``.
A refusal raises ``AccessDenied`` carrying the decision, which the audit
record keeps. Loading is lazy where it can be: grants are read only when the
policies alone do not allow, resource tags and aliases only when a policy
mentions them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from keys.models import Key, KeyManager
from kmsweb import generations
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied
from kmsweb.ttlcache import TTLCache
from policies import evaluation as ev
from policies.evaluation import Decision
from policies.roles import role_policy_document

if TYPE_CHECKING:
    from policies.models import Grant

__all__ = ["Decision", "authorize", "authorize_retire", "decision_record", "identity_policies_for"]

_SYSTEM = Decision(allowed=True, reason="platform", statement=None, explanation="kmsweb's own job")
_OWNED = Decision(
    allowed=False,
    reason="implicit-deny",
    statement=None,
    explanation="Platform owned keys are never usable by principals.",
    denial_clause="because platform owned keys are not accessible",
)


def _cache_seconds() -> float:
    return float(settings.KMSWEB_AUTH_CACHE_SECONDS)


# (principal pk, roles) -> loaded policies; the identity-policy services bump its generation.
IDENTITY_POLICY_CACHE: TTLCache[list[tuple[str, ev.Policy, str]]] = TTLCache(_cache_seconds, generations.IDENTITY)


def identity_policies_for(caller: Caller) -> list[tuple[str, ev.Policy, str]]:
    """The caller's identity policies, cached briefly per process (see kmsweb.ttlcache)."""
    return IDENTITY_POLICY_CACHE.get_or_load(
        (caller.principal_pk, caller.roles), lambda: _load_identity_policies(caller)
    )


def _load_identity_policies(caller: Caller) -> list[tuple[str, ev.Policy, str]]:
    """The caller's identity policies: (name, parsed policy, JSON text).

    Parsing is cached by text, so a policy is compiled once per process.
    """
    from policies.models import IdentityPolicy

    policies: list[tuple[str, ev.Policy, str]] = []
    if caller.principal_pk is not None:
        rows = (
            IdentityPolicy.objects.filter(
                Q(principal_id=caller.principal_pk) | Q(attachments__principal_id=caller.principal_pk)
            )
            .values_list("name", "document")
            .distinct()
        )
        for name, document in rows:
            try:
                policies.append((name, ev.parse_policy(document, kind="identity"), document))
            except ev.PolicyError:
                continue  # stored policies were validated; a corrupt one grants nothing
    for role in caller.roles:
        document = role_policy_document(role)
        policies.append((f"kmsweb-role/{role}", ev.parse_policy(document, kind="identity"), document))
    return policies


def _condition_keys(caller: Caller, key: Key | None, context: Mapping[str, Any] | None, texts: str) -> dict[str, Any]:
    now = timezone.now()
    keys: dict[str, Any] = {
        "aws:PrincipalArn": caller.principal_arn,
        "aws:PrincipalAccount": caller.account_id,
        "aws:PrincipalType": caller.principal_type,
        "aws:userid": caller.principal_name,
        "aws:MultiFactorAuthPresent": caller.mfa_present,
        "aws:SecureTransport": caller.secure_transport,
        "aws:CurrentTime": now,
        "aws:EpochTime": int(now.timestamp()),
        "kms:CallerAccount": caller.account_id,
        "aws:RequestedRegion": caller.region,
    }
    if caller.principal_type == "user":
        keys["aws:username"] = caller.principal_name
    if caller.mfa_authenticated_at is not None:
        # AWS sets the age only for temporary credentials obtained with MFA.
        keys["aws:MultiFactorAuthAge"] = max(0, int((now - caller.mfa_authenticated_at).total_seconds()))
    if caller.source_ip:
        keys["aws:SourceIp"] = caller.source_ip
    if caller.via_service:
        keys["kms:ViaService"] = caller.via_service
    for tag_key, tag_value in caller.principal_tags:
        keys[f"aws:PrincipalTag/{tag_key}"] = tag_value
    if key is not None:
        keys["kms:KeySpec"] = key.key_spec
        keys["kms:KeyUsage"] = key.key_usage
        keys["kms:KeyOrigin"] = key.origin
        keys["kms:MultiRegion"] = key.multi_region_id is not None
        if key.multi_region_type:
            keys["kms:MultiRegionKeyType"] = key.multi_region_type
        requested_as = getattr(key, "requested_as", None)
        if requested_as and requested_as.startswith("alias/"):
            keys["kms:RequestAlias"] = requested_as
        lowered = texts.lower()
        if "resourcetag" in lowered:
            for tag_key, tag_value in key.tags.values_list("tag_key", "tag_value"):
                keys[f"aws:ResourceTag/{tag_key}"] = tag_value
        if "resourcealiases" in lowered:
            keys["kms:ResourceAliases"] = list(key.aliases.values_list("name", flat=True))
    for name, value in (context or {}).items():
        if name == "EncryptionContext":
            pairs = dict(value or {})
            for k, v in pairs.items():
                keys[f"kms:EncryptionContext:{k}"] = v
            keys["kms:EncryptionContextKeys"] = list(pairs)
        else:
            keys[name] = value
    return keys


# (key id, grantee ARN) -> [(expires_at, grant)] of live grants; the grant
# services bump its generation, so a grant made, retired or revoked applies
# to the next request of every process.
GRANT_CACHE: TTLCache[list[tuple[Any, ev.GrantView]]] = TTLCache(_cache_seconds, generations.GRANTS)


def _load_grants(key: Key, grantee: str) -> list[tuple[Any, ev.GrantView]]:
    from policies.models import Grant

    rows = Grant.objects.live(timezone.now()).filter(key=key, grantee_principal=grantee)
    return [
        (
            g.expires_at,
            ev.GrantView(
                grant_id=g.grant_id,
                grantee_principal=g.grantee_principal,
                operations=frozenset(g.operations),
                encryption_context_subset=(g.constraints or {}).get("EncryptionContextSubset"),
                encryption_context_equals=(g.constraints or {}).get("EncryptionContextEquals"),
            ),
        )
        for g in rows
    ]


def _grants(caller: Caller, key: Key) -> list[ev.GrantView]:
    """The caller's live grants on ``key`` (expiry checked at use, not at caching)."""
    entries = GRANT_CACHE.get_or_load((key.id, caller.principal_arn), lambda: _load_grants(key, caller.principal_arn))
    now = timezone.now()
    return [grant for expires_at, grant in entries if expires_at is None or expires_at > now]


def authorize(
    *,
    caller: Caller,
    action: str,
    key: Key | None = None,
    context: Mapping[str, Any] | None = None,
    key_policy_override: str | None = None,
    use_grants: bool = True,
    proposed_grant: ev.ProposedGrant | None = None,
) -> Decision:
    """Allow or refuse ``action`` (e.g. ``kms:Encrypt``) on ``key`` for ``caller``.

    ``context`` carries the request's condition keys (``EncryptionContext``
    is expanded into ``kms:EncryptionContext:*``). ``key_policy_override``
    evaluates a proposed policy instead of the stored one (the lockout
    safety check). ``use_grants=False`` decides on the policies alone.
    ``proposed_grant`` is the grant a CreateGrant asks for: a grant that
    lists CreateGrant allows only grants as strict as itself. Raises
    ``AccessDenied`` with AWS's message shape.
    """
    if caller.is_system:
        return _SYSTEM
    resource = key.arn if key is not None else f"arn:aws:kms:{caller.region}:{caller.account_id}:*"
    if key is not None and key.manager == KeyManager.OWNED:
        raise _denied(caller.principal_arn, action, resource, _OWNED)
    loaded = identity_policies_for(caller)
    identity = [(name, policy) for name, policy, _ in loaded]
    policy_text = key_policy_override if key_policy_override is not None else (key.policy if key else "")
    key_policy = ev.parse_policy(policy_text, kind="key") if key is not None and policy_text else None
    texts = policy_text + "".join(text for _, _, text in loaded)
    ctx = ev.RequestContext(
        action=action,
        principal_arn=caller.principal_arn,
        principal_account=caller.account_id,
        resource_arn=resource,
        resource_account=key.account_id if key is not None and key.account_id else caller.account_id,
        now=timezone.now(),
        keys=_condition_keys(caller, key, context, texts),
    )
    decision = ev.evaluate(ctx, key_policy, identity, ())
    if use_grants and not decision.allowed and decision.reason != "explicit-deny" and key is not None:
        grants = _grants(caller, key)
        if grants:
            encryption_context = dict((context or {}).get("EncryptionContext") or {})
            decision = ev.evaluate(ctx, key_policy, identity, grants, encryption_context, proposed_grant)
    if not decision.allowed:
        raise _denied(caller.principal_arn, action, resource, decision)
    return decision


def authorize_retire(*, caller: Caller, grant: Grant) -> Decision:
    """Allow or refuse RetireGrant on ``grant``: the grant decides (see ``evaluate_retire``).

    Neither the key policy nor an identity policy's ``kms:RetireGrant``
    alone lets a principal retire another principal's grant; RevokeGrant is
    the policy-controlled way to end one. Raises ``AccessDenied``.
    """
    if caller.is_system:
        return _SYSTEM
    key = grant.key
    loaded = identity_policies_for(caller)
    ctx = ev.RequestContext(
        action="kms:RetireGrant",
        principal_arn=caller.principal_arn,
        principal_account=caller.account_id,
        resource_arn=key.arn,
        resource_account=key.account_id or caller.account_id,
        now=timezone.now(),
        keys=_condition_keys(caller, key, None, "".join(text for _, _, text in loaded)),
    )
    view = ev.GrantView(
        grant_id=grant.grant_id,
        grantee_principal=grant.grantee_principal,
        operations=frozenset(grant.operations),
        retiring_principal=grant.retiring_principal or None,
        issuing_account=grant.issuing_account,
    )
    decision = ev.evaluate_retire(ctx, [(name, policy) for name, policy, _ in loaded], view)
    if not decision.allowed:
        raise _denied(caller.principal_arn, ctx.action, key.arn, decision)
    return decision


def _denied(principal_arn: str, action: str, resource: str, decision: Decision) -> AccessDenied:
    error = AccessDenied(
        f"User: {principal_arn} is not authorized to perform: {action} on resource: {resource} {decision.denial_clause}"
    )
    error.decision = decision_record(decision)
    return error


def decision_record(decision: Decision) -> dict[str, Any]:
    """The decision as the audit record and the dashboard's "why" view keep it."""
    statement = decision.statement
    return {
        "allowed": decision.allowed,
        "reason": decision.reason,
        "explanation": decision.explanation,
        "statement": None
        if statement is None
        else {"source": statement.source, "sid": statement.sid, "index": statement.index},
    }
