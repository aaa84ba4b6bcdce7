"""The decision: AWS KMS's evaluation logic over key policy, identity policies and grants.

1. An explicit Deny wins: a key policy Deny statement that names the caller
   (exactly, through its account, or ``*``), or a Deny in one of the caller's
   identity-based policies; it also overrides grants.
2. Otherwise the request is allowed when
   a. the key policy names the principal (its ARN, ``*``, or its service) —
      enough on its own in the key's account; or
   b. the key policy names the principal's account (``:root`` or the bare
      account id) and one of the principal's identity-based policies allows
      the action on the key; or
   c. a live grant for the principal lists the operation and its
      encryption-context constraint holds. A grant that lists CreateGrant
      allows only grants as strict as itself (``grant_may_create``).
   For a principal of another account, (a) and (b) both also need an
   identity-based policy of that principal: AWS requires the owning
   account's key policy *and* the external account's IAM policy.
3. Without a key policy (CreateKey, ListKeys, GenerateRandom, …) only the
   identity-based policies decide.
4. Anything else is an implicit deny.

RetireGrant is decided by the grant itself, not by this logic: see
``evaluate_retire``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kmsweb.lib.operations import CONTEXT_BOUND
from policies.evaluation.conditions import Condition
from policies.evaluation.policy import ACCOUNT, DIRECT, Policy, Statement, service_name, service_of

# KMS operations that take an encryption context: grant constraints apply to
# these only (AWS: "Grant constraints are not applied to operations that do
# not support an encryption context, such as … DescribeKey or RetireGrant").
ENCRYPTION_CONTEXT_OPERATIONS = CONTEXT_BOUND
_ROOT = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):root$")
_USER = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:user/(?:.*/)?([^/]+)$")


@dataclass(frozen=True)
class RequestContext:
    """Everything a decision depends on; built by the caller, read-only here.

    ``keys`` holds condition keys under their AWS names; lookups are
    case-insensitive. ``aws:PrincipalArn``, ``aws:PrincipalAccount``,
    ``kms:CallerAccount``, ``aws:CurrentTime`` and ``aws:EpochTime`` are derived
    from the fields above and cannot be overridden through ``keys``;
    ``aws:username`` is derived for ``user/`` principals unless given.
    """

    action: str
    principal_arn: str
    principal_account: str
    resource_arn: str
    resource_account: str
    now: datetime
    keys: Mapping[str, Any] = field(default_factory=dict)
    # Derived once per request, so evaluation does no string work per statement.
    lkeys: Mapping[str, Any] = field(init=False, repr=False, compare=False)
    action_l: str = field(init=False, repr=False, compare=False)
    service: str | None = field(init=False, repr=False, compare=False)
    is_root: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("RequestContext.now must be an aware datetime (UTC)")
        lkeys = {k.lower(): v for k, v in self.keys.items()}
        if "aws:username" not in lkeys and (m := _USER.match(self.principal_arn)) is not None:
            lkeys["aws:username"] = m.group(1)
        lkeys["aws:principalarn"] = self.principal_arn
        lkeys["aws:principalaccount"] = self.principal_account
        lkeys["kms:calleraccount"] = self.principal_account
        lkeys["aws:currenttime"] = self.now
        lkeys["aws:epochtime"] = int(self.now.timestamp())
        root = _ROOT.match(self.principal_arn)
        object.__setattr__(self, "lkeys", lkeys)
        object.__setattr__(self, "action_l", self.action.lower())
        object.__setattr__(self, "service", service_of(self.principal_arn))
        object.__setattr__(self, "is_root", root is not None and root.group(1) == self.principal_account)


@dataclass(frozen=True)
class GrantView:
    """A live grant on the key (the caller has already dropped expired/retired ones)."""

    grant_id: str
    grantee_principal: str
    operations: frozenset[str]  # KMS operation names: "Encrypt", "Decrypt", …
    encryption_context_subset: Mapping[str, str] | None = None
    encryption_context_equals: Mapping[str, str] | None = None
    # Who else may retire it (RetireGrant only; see evaluate_retire).
    retiring_principal: str | None = None
    issuing_account: str | None = None


@dataclass(frozen=True)
class ProposedGrant:
    """The grant a CreateGrant request asks for: checked against grants that list CreateGrant."""

    operations: frozenset[str]
    encryption_context_subset: Mapping[str, str] | None = None
    encryption_context_equals: Mapping[str, str] | None = None


def _lowered(pairs: Mapping[str, str]) -> dict[str, str]:
    # In a grant constraint the context key is case-insensitive, the value case-sensitive.
    return {k.lower(): v for k, v in pairs.items()}


def grant_may_create(parent: GrantView, child: ProposedGrant) -> bool:
    """Whether a grantee may create ``child`` through ``parent`` (a grant listing CreateGrant).

    AWS: a grant made through a grant allows the same operations or fewer,
    and its constraints are the same or stricter, so that every request the
    child allows the parent allows too. Under an EncryptionContextSubset
    parent the child carries a Subset or Equals constraint holding every pair
    of the parent's; under an EncryptionContextEquals parent, an Equals
    constraint with the same pairs.
    """
    if not child.operations <= parent.operations:
        return False
    child_equals, child_subset = child.encryption_context_equals, child.encryption_context_subset
    if parent.encryption_context_equals is not None:
        return child_equals is not None and _lowered(child_equals) == _lowered(parent.encryption_context_equals)
    if parent.encryption_context_subset:
        # An Equals child allows exactly its pairs; a Subset child at least its pairs.
        pairs = child_equals if child_equals is not None else child_subset
        if pairs is None:
            return False
        have = _lowered(pairs)
        # Pair by pair, as _constraint_holds checks them: keys differing only in case are not merged.
        return all(k.lower() in have and have[k.lower()] == v for k, v in parent.encryption_context_subset.items())
    # No constraint, or an empty subset, which constrains nothing.
    return True


@dataclass(frozen=True)
class StatementRef:
    """Which statement (or grant) decided: for the audit record and the "why" view."""

    source: str  # "key-policy" | "identity-policy:<name>" | "grant:<id>"
    sid: str | None
    index: int | None  # 0-based position in the policy's Statement list


@dataclass(frozen=True)
class Decision:
    """The outcome, the statement that decided it and a sentence saying why.

    ``reason`` is "explicit-deny", "key-policy", "identity-policy", "grant" or
    "implicit-deny". ``supporting`` is the second statement an allow needed
    (the key policy's account statement behind an identity-policy allow, or
    the identity policy behind a cross-account key-policy allow).
    ``denial_clause`` ends AWS's AccessDeniedException message ("because no
    resource-based policy allows the kms:Encrypt action", "with an explicit
    deny in an identity-based policy"); see ``access_denied_message``.
    """

    allowed: bool
    reason: str
    statement: StatementRef | None
    explanation: str
    supporting: StatementRef | None = None
    denial_clause: str = ""


def access_denied_message(ctx: RequestContext, decision: Decision) -> str:
    """AWS's AccessDeniedException message for a denied decision."""
    return (
        f"User: {ctx.principal_arn} is not authorized to perform: {ctx.action} "
        f"on resource: {ctx.resource_arn} {decision.denial_clause}"
    )


def _ref(source: str, st: Statement) -> StatementRef:
    return StatementRef(source, st.sid, st.index)


def _names(principal: str, ctx: RequestContext) -> bool:
    """Whether a grant's grantee or retiring principal is the caller."""
    if principal == ctx.principal_arn:
        return True
    # A grant to a service principal name ("logs.amazonaws.com") reaches the
    # kmsweb service principal of that name.
    return ctx.service is not None and not principal.startswith("arn:") and (service_name(principal) == ctx.service)


def _grant_applies(grant: GrantView, ctx: RequestContext) -> bool:
    return _names(grant.grantee_principal, ctx)


def _constraint_holds(grant: GrantView, operation: str, ctx: RequestContext, ec: Mapping[str, str] | None) -> bool:
    subset, equals = grant.encryption_context_subset, grant.encryption_context_equals
    if subset is None and equals is None:
        return True
    spec = ctx.lkeys.get("kms:keyspec")
    if operation not in ENCRYPTION_CONTEXT_OPERATIONS or (spec is not None and spec != "SYMMETRIC_DEFAULT"):
        return True
    # AWS: in a grant constraint the context *key* is case-insensitive, the
    # value case-sensitive.
    request = {k.lower(): v for k, v in (ec or {}).items()}
    if subset is not None and any(request.get(k.lower()) != v for k, v in subset.items()):
        return False
    return equals is None or {k.lower(): v for k, v in equals.items()} == request


def evaluate(
    ctx: RequestContext,
    key_policy: Policy | None,
    identity_policies: Sequence[tuple[str, Policy]],
    grants: Sequence[GrantView] = (),
    request_context_for_grants: Mapping[str, str] | None = None,
    proposed_grant: ProposedGrant | None = None,
) -> Decision:
    """Decide ``ctx`` (see the module docstring for the rules).

    ``identity_policies`` are (name, policy) pairs attached to the principal
    (a Principal element in them is ignored: they apply to their holder);
    ``request_context_for_grants`` is the request's encryption context (None:
    empty), checked against grant constraints; ``proposed_grant`` is the
    grant a CreateGrant request asks for (without it no grant allows
    CreateGrant: the check fails closed).
    """
    action = ctx.action_l
    keys = ctx.lkeys
    resource = ctx.resource_arn
    kp_direct: Statement | None = None
    kp_account: Statement | None = None
    # Condition results for this request: statements often repeat conditions.
    memo: dict[Condition, bool] = {}

    if key_policy is not None:
        for st in key_policy.statements_for(action):
            if st.deny:
                if st.principal_level(ctx) and st.matches_resource(resource, keys) and st.conditions_hold(keys, memo):
                    return Decision(
                        False,
                        "explicit-deny",
                        _ref("key-policy", st),
                        f"Statement {st.label} of the key policy explicitly denies {ctx.action} to "
                        f"{ctx.principal_arn}; an explicit deny overrides every allow and grant.",
                        denial_clause="with an explicit deny in a resource-based policy",
                    )
            elif kp_direct is None:
                level = st.principal_level(ctx)
                if (level == DIRECT or (level == ACCOUNT and kp_account is None)) and (
                    st.matches_resource(resource, keys) and st.conditions_hold(keys, memo)
                ):
                    if level == DIRECT:
                        kp_direct = st
                    else:
                        kp_account = st

    id_deny, id_allow = _identity(ctx, identity_policies, memo)
    if id_deny is not None:
        return id_deny

    # The account root user holds every identity-based permission of its account.
    identity_ok = id_allow is not None or ctx.is_root
    id_ref = _ref(f"identity-policy:{id_allow[0]}", id_allow[1]) if id_allow else None
    same_account = ctx.principal_account == ctx.resource_account

    if key_policy is None:
        if identity_ok:
            return Decision(
                True,
                "identity-policy",
                id_ref,
                f"Allowed by statement {id_allow[1].label} of identity-based policy {id_allow[0]}."
                if id_allow
                else "Allowed: the account root user holds every identity-based permission.",
            )
    else:
        if kp_direct is not None and (same_account or identity_ok):
            kp_ref = _ref("key-policy", kp_direct)
            if same_account:
                text = f"Allowed by statement {kp_direct.label} of the key policy, which names the principal."
                return Decision(True, "key-policy", kp_ref, text)
            text = (
                f"Allowed by statement {kp_direct.label} of the key policy, together with the caller's account "
                f"{ctx.principal_account}'s identity-based permission, as a cross-account request requires."
            )
            return Decision(True, "key-policy", kp_ref, text, supporting=id_ref)
        # (A root caller never lands here: naming its account names it directly.)
        if kp_account is not None and id_allow is not None and id_ref is not None:
            text = (
                f"Allowed by statement {id_allow[1].label} of identity-based policy {id_allow[0]}; statement "
                f"{kp_account.label} of the key policy lets account {ctx.principal_account} grant access "
                "through identity-based policies."
            )
            return Decision(True, "identity-policy", id_ref, text, supporting=_ref("key-policy", kp_account))

    operation = ctx.action[4:] if ctx.action_l.startswith("kms:") else None
    unmet: list[str] = []
    looser: list[str] = []
    if operation is not None:
        for grant in grants:
            if operation in grant.operations and _grant_applies(grant, ctx):
                if operation == "CreateGrant" and (
                    proposed_grant is None or not grant_may_create(grant, proposed_grant)
                ):
                    looser.append(grant.grant_id)
                elif _constraint_holds(grant, operation, ctx, request_context_for_grants):
                    return Decision(
                        True,
                        "grant",
                        StatementRef(f"grant:{grant.grant_id}", None, None),
                        f"Allowed by grant {grant.grant_id}, which gives {grant.grantee_principal} "
                        f"the {operation} operation.",
                    )
                else:
                    unmet.append(grant.grant_id)

    return _implicit_deny(ctx, key_policy, kp_direct, kp_account, id_allow, unmet, looser)


RETIRE_DENIAL_CLAUSE = "because the grant does not let the principal retire it"


def evaluate_retire(ctx: RequestContext, identity_policies: Sequence[tuple[str, Policy]], grant: GrantView) -> Decision:
    """Decide RetireGrant on ``grant`` (``ctx.action`` is ``kms:RetireGrant``).

    AWS: the grant decides who may retire it, and ``kms:RetireGrant`` in a
    policy alone does not allow it (nor does a key policy at all). Allowed
    to the grant's retiring principal, to its grantee when the grant lists
    RetireGrant, and to the root user of the account that issued it. When
    the retiring principal is an account (``…:root``), that account's
    principals whose identity policies allow ``kms:RetireGrant`` may retire
    it (AWS's delegation). An identity-policy Deny of ``kms:RetireGrant``
    overrides every one of these.
    """
    memo: dict[Condition, bool] = {}
    id_deny, id_allow = _identity(ctx, identity_policies, memo)
    if id_deny is not None:
        return id_deny
    ref = StatementRef(f"grant:{grant.grant_id}", None, None)
    who = ctx.principal_arn
    if grant.retiring_principal and _names(grant.retiring_principal, ctx):
        return Decision(True, "grant", ref, f"Allowed: grant {grant.grant_id} names {who} its retiring principal.")
    if "RetireGrant" in grant.operations and _grant_applies(grant, ctx):
        return Decision(
            True, "grant", ref, f"Allowed: {who} is the grantee of grant {grant.grant_id}, which lists RetireGrant."
        )
    if ctx.is_root and grant.issuing_account == ctx.principal_account:
        return Decision(True, "grant", ref, f"Allowed: the root user of account {ctx.principal_account} issued it.")
    account = _ROOT.match(grant.retiring_principal or "")
    if account is not None and account.group(1) == ctx.principal_account and id_allow is not None:
        return Decision(
            True,
            "identity-policy",
            _ref(f"identity-policy:{id_allow[0]}", id_allow[1]),
            f"Allowed by statement {id_allow[1].label} of identity-based policy {id_allow[0]}: grant "
            f"{grant.grant_id} names account {ctx.principal_account} its retiring principal, and the account "
            "delegates retiring to its principals through kms:RetireGrant.",
        )
    text = (
        f"Grant {grant.grant_id} lets its retiring principal, its grantee (when it lists RetireGrant) and the root "
        f"user of account {grant.issuing_account} retire it; {who} is none of them"
    )
    if id_allow is not None:
        text += (
            f". Statement {id_allow[1].label} of identity-based policy {id_allow[0]} allows kms:RetireGrant, but a "
            "policy alone does not let a principal retire someone else's grant (use RevokeGrant)"
        )
    return Decision(False, "implicit-deny", None, text + ".", denial_clause=RETIRE_DENIAL_CLAUSE)


def _identity(
    ctx: RequestContext, identity_policies: Sequence[tuple[str, Policy]], memo: dict[Condition, bool]
) -> tuple[Decision | None, tuple[str, Statement] | None]:
    """The identity policies' explicit deny (if any) and their first allow for ``ctx``."""
    action, keys, resource = ctx.action_l, ctx.lkeys, ctx.resource_arn
    id_allow: tuple[str, Statement] | None = None
    for name, policy in identity_policies:
        for st in policy.statements_for(action):
            if st.deny:
                if st.matches_resource(resource, keys) and st.conditions_hold(keys, memo):
                    deny = Decision(
                        False,
                        "explicit-deny",
                        _ref(f"identity-policy:{name}", st),
                        f"Statement {st.label} of identity-based policy {name} explicitly denies {ctx.action} "
                        f"on {resource}; an explicit deny overrides every allow and grant.",
                        denial_clause="with an explicit deny in an identity-based policy",
                    )
                    return deny, None
            elif id_allow is None and st.matches_resource(resource, keys) and st.conditions_hold(keys, memo):
                id_allow = (name, st)
    return None, id_allow


def _implicit_deny(
    ctx: RequestContext,
    key_policy: Policy | None,
    kp_direct: Statement | None,
    kp_account: Statement | None,
    id_allow: tuple[str, Statement] | None,
    unmet_grants: list[str],
    looser_grants: Sequence[str] = (),
) -> Decision:
    """Explain, in the terms the "why" view needs, which half of the allow was missing."""
    action, who = ctx.action, ctx.principal_arn
    no_identity = f"because no identity-based policy allows the {action} action"
    no_resource = f"because no resource-based policy allows the {action} action"
    if key_policy is None:
        text = f"No identity-based policy of {who} allows {action} on {ctx.resource_arn}."
        clause = no_identity
    elif kp_direct is not None:
        text = (
            f"Statement {kp_direct.label} of the key policy names {who}, but the principal belongs to account "
            f"{ctx.principal_account}, not the key's account {ctx.resource_account}, and a cross-account request "
            f"also needs an identity-based policy of the principal that allows {action}; none does."
        )
        clause = no_identity
    elif kp_account is not None:
        text = (
            f"Statement {kp_account.label} of the key policy lets account {ctx.principal_account} grant access "
            f"through identity-based policies, but none of {who}'s identity-based policies allows {action} "
            f"on {ctx.resource_arn}."
        )
        clause = no_identity
    else:
        text = f"The key policy allows neither {who} nor its account {ctx.principal_account} to perform {action}"
        if id_allow is not None:
            text += (
                f" (statement {id_allow[1].label} of identity-based policy {id_allow[0]} allows it, but the key "
                "policy does not let the account use identity-based policies)"
            )
        text += ", and no grant allows it."
        clause = no_resource
    if unmet_grants:
        grants = ", ".join(unmet_grants)
        text += f" Grant(s) {grants} cover this operation, but their encryption context constraints are not met."
    if looser_grants:
        grants = ", ".join(looser_grants)
        text += (
            f" Grant(s) {grants} allow CreateGrant, but only for grants with the same operations or fewer and "
            "the same or stricter encryption context constraints, which the requested grant does not have."
        )
    return Decision(False, "implicit-deny", None, text, denial_clause=clause)
