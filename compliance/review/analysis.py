"""Allowed against used, generated least-privilege policies and external access (pure).

Every "may" here is a decision of the real policy engine (``policies.evaluation``)
over the facts of a compliance ``Snapshot``, probed the way the rules probe
(``compliance.rules.access``): a request signed with MFA over TLS, carrying the
key's spec, usage, origin and tags, plus the principal's live grants (without an
encryption context, so a constrained grant does not count). What a principal
*used* are the successful calls the audit trail recorded for it.

A generated policy is checked by the same engine: every observed call, with the
encryption context it carried, must be allowed by the generated policy alone. A
call it does not allow is a bug in the generator, and ``generate_policy`` raises
``GenerationError`` rather than propose a policy that would break its holder.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

from compliance.rules.access import (
    ALLOW_ALL,
    ANYONE,
    account_of,
    external_candidates,
    parsed_identity,
    parsed_key_policy,
)
from compliance.rules.facts import GrantFact, KeyFact, PolicyFact, PrincipalFact, Snapshot
from kmsweb.lib.operations import CONTEXT_BOUND, OPERATIONS, SYMMETRIC, grant_operations
from policies import evaluation as ev

# The kms actions a key is the resource of. Not here: actions on no key
# (CreateKey, ListKeys, GenerateRandom, custom key stores), ReEncrypt (authorized
# as ReEncryptFrom and ReEncryptTo) and RetireGrant (decided by the grant itself).
_NOT_ON_A_KEY = {
    "CreateKey",
    "ListKeys",
    "ListAliases",
    "GenerateRandom",
    "ListRetirableGrants",
    "DescribeCustomKeyStores",
    "CreateCustomKeyStore",
    "ConnectCustomKeyStore",
    "DeleteCustomKeyStore",
    "DisconnectCustomKeyStore",
    "UpdateCustomKeyStore",
    "ReEncrypt",
    "RetireGrant",
}
KEY_ACTIONS: tuple[str, ...] = tuple(f"kms:{name}" for name in OPERATIONS if name not in _NOT_ON_A_KEY)


@lru_cache(maxsize=16)
def actions_for(kind: str) -> tuple[str, ...]:
    """The key actions that mean something on a key of ``kind`` (``kmsweb.lib.operations.KEY_KINDS``).

    A policy may allow kms:Sign on a symmetric key, but no call can use it:
    operations tied to kinds of key (the operations table's grant kinds) are
    left out for other kinds; administrative actions apply to every key.
    """
    out = []
    for action in KEY_ACTIONS:
        kinds = OPERATIONS[action[4:]].grant_for
        if not kinds or kind in kinds:
            out.append(action)
    return tuple(out)


def key_kind(key: KeyFact) -> str:
    return SYMMETRIC if key.key_spec == SYMMETRIC else key.key_usage


class GenerationError(RuntimeError):
    """The engine refuses an observed call under the policy generated from it: a generator bug."""


@dataclass(frozen=True)
class ObservedCall:
    """Successful calls of one kind by one principal: the action, where, with which context.

    ``resource_arn`` is the key's ARN, or ``arn:aws:kms:<region>:<account>:*``
    for an action on no key; ``encryption_context`` is the context the calls
    carried (sorted pairs), None for actions that take none.
    """

    action: str
    resource_arn: str
    resource_account: str
    key_id: str = ""
    encryption_context: tuple[tuple[str, str], ...] | None = None
    count: int = 1
    last_used: datetime | None = None


def _probe_keys(key: KeyFact | None) -> dict[str, Any]:
    keys: dict[str, Any] = {"aws:MultiFactorAuthPresent": True, "aws:SecureTransport": True}
    if key is not None:
        keys.update({"kms:KeySpec": key.key_spec, "kms:KeyUsage": key.key_usage, "kms:KeyOrigin": key.origin})
        for tag_key, tag_value in key.tags.items():
            keys[f"aws:ResourceTag/{tag_key}"] = tag_value
    return keys


def grant_views(grants: Iterable[GrantFact]) -> tuple[ev.GrantView, ...]:
    """Grants as the engine takes them."""
    return tuple(
        ev.GrantView(
            grant_id=g.grant_id,
            grantee_principal=g.grantee_principal,
            operations=frozenset(g.operations),
            encryption_context_subset=(g.constraints or {}).get("EncryptionContextSubset"),  # type: ignore[arg-type]
            encryption_context_equals=(g.constraints or {}).get("EncryptionContextEquals"),  # type: ignore[arg-type]
        )
        for g in grants
    )


@lru_cache(maxsize=4096)
def without_conditions(document: str) -> str:
    """``document`` with its Allow statements' conditions removed and its conditional Denies dropped.

    What a policy allows under *some* request: an action the engine allows
    under this version but not under the probe is allowed "under conditions".
    """
    try:
        data = json.loads(document)
    except ValueError:
        return document
    if not isinstance(data, dict):
        return document
    statements = data.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return document
    out = []
    for st in statements:
        if isinstance(st, dict) and "Condition" in st:
            if st.get("Effect") == "Deny":
                continue
            st = {k: v for k, v in st.items() if k != "Condition"}
        out.append(st)
    return json.dumps({**data, "Statement": out})


# Condition keys and variables whose value differs between principals of one account.
_PERSONAL = ("aws:principalarn", "aws:principaltag", "aws:principaltype", "aws:username", "aws:userid", "${")
ALLOWED = "allowed"
CONDITIONAL = "conditional"


class Prober:
    """Engine decisions over one snapshot, memoized (keys sharing a policy text share answers)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._grants: dict[tuple[str, str], list[GrantFact]] = defaultdict(list)
        for g in snapshot.grants:
            self._grants[(g.key_id, g.grantee_principal)].append(g)
        self._memo: dict[tuple[object, ...], ev.Decision] = {}
        self._narrow_statements: dict[tuple[tuple[PolicyFact, ...], str], tuple[ev.Statement, ...] | None] = {}
        self._levels: dict[tuple[object, ...], dict[str, tuple[str, ev.Decision]]] = {}
        self._texts: dict[tuple[tuple[PolicyFact, ...], str], str] = {}
        self._personal: dict[str, bool] = {}

    def grants_of(self, key_id: str, principal_arn: str) -> list[GrantFact]:
        return self._grants.get((key_id, principal_arn), [])

    def decide(
        self,
        *,
        principal_arn: str,
        principal_account: str,
        policies: tuple[PolicyFact, ...],
        action: str,
        key: KeyFact,
        unconditioned: bool = False,
    ) -> ev.Decision:
        """May ``principal_arn`` do ``action`` on ``key`` (key policy, identity ``policies``, its grants)?

        ``unconditioned`` asks the policies without their conditions and the
        grants without their constraints.
        """
        grants = self.grants_of(key.id, principal_arn)
        if unconditioned:
            key = replace(key, policy=without_conditions(key.policy)) if key.policy else key
            policies = tuple(replace(p, document=without_conditions(p.document)) for p in policies)
            grants = [replace(g, constraints=None) for g in grants]
        key_policy = parsed_key_policy(key)
        identity = parsed_identity(policies)
        views = grant_views(grants)
        memo_key = (
            principal_arn,
            action,
            key_policy.text if key_policy is not None else None,
            tuple(id(p) for _, p in identity),
            key.arn,
            tuple((g.grant_id, g.constraints is None) for g in grants),
        )
        hit = self._memo.get(memo_key)
        if hit is not None:
            return hit
        ctx = ev.RequestContext(
            action=action,
            principal_arn=principal_arn,
            principal_account=principal_account,
            resource_arn=key.arn,
            resource_account=key.account_id,
            now=self.snapshot.now,
            keys=_probe_keys(key),
        )
        decision = ev.evaluate(ctx, key_policy, identity, views)
        self._memo[memo_key] = decision
        return decision

    def level(
        self, *, principal_arn: str, principal_account: str, policies: tuple[PolicyFact, ...], action: str, key: KeyFact
    ) -> tuple[str | None, ev.Decision]:
        """``ALLOWED``, ``CONDITIONAL`` (allowed only under conditions the probe lacks) or None, and why."""
        args = {"principal_arn": principal_arn, "principal_account": principal_account, "policies": policies}
        decision = self.decide(**args, action=action, key=key)  # type: ignore[arg-type]
        if decision.allowed:
            return ALLOWED, decision
        if decision.reason == "explicit-deny":
            return None, decision
        loose = self.decide(**args, action=action, key=key, unconditioned=True)  # type: ignore[arg-type]
        return (CONDITIONAL, loose) if loose.allowed else (None, decision)

    def _narrow(self, policies: tuple[PolicyFact, ...], key: KeyFact) -> tuple[ev.Statement, ...] | None:
        """The statements that name resources (the only ones a key's ARN can change an answer of).

        None when one of them uses a policy variable in its Resource: then
        every key is asked on its own.
        """
        memo_key = (policies, key.policy)
        if memo_key in self._narrow_statements:
            return self._narrow_statements[memo_key]
        parsed = [p for _, p in parsed_identity(policies)]
        key_policy = parsed_key_policy(key)
        if key_policy is not None:
            parsed.append(key_policy)
        found: tuple[ev.Statement, ...] | None = tuple(
            st for policy in parsed for st in policy.statements if not st.resource_all or st.not_resource
        )
        if found and any(st.resource_templates for st in found):
            found = None
        self._narrow_statements[memo_key] = found
        return found

    def _anonymous(self, principal_arn: str, policies: tuple[PolicyFact, ...], key_policy: str) -> bool:
        """Whether no policy can tell ``principal_arn`` from another principal of its account and kind."""
        if principal_arn.endswith(":root") or not principal_arn.startswith("arn:"):
            return False
        text = self._texts.get((policies, key_policy))
        if text is None:
            text = self._texts[(policies, key_policy)] = key_policy + "".join(p.document for p in policies)
        personal = self._personal.get(text)
        if personal is None:
            personal = self._personal[text] = any(marker in text.lower() for marker in _PERSONAL)
        return not personal and principal_arn not in text

    def levels(
        self, *, principal_arn: str, principal_account: str, policies: tuple[PolicyFact, ...], key: KeyFact
    ) -> dict[str, tuple[str, ev.Decision]]:
        """action -> (level, decision) for every key action the principal may do on ``key``.

        Keys alike for the engine (same policy text, account, region, spec,
        usage, origin and tags, matched by the same Resource elements, no
        grant to the principal) share one answer, and so do principals alike (same account,
        kind and policies, named by no policy, no grant): an account's
        thousands of keys under the default policy cost one round of decisions.
        """
        grants = tuple(g.grant_id for g in self.grants_of(key.id, principal_arn))
        narrow = None if grants else self._narrow(policies, key)
        where: object = key.arn
        if narrow is not None:
            # The key's ARN matters only through which Resource elements it matches.
            matched = tuple(st.matches_resource(key.arn, {}) for st in narrow)
            where = (
                key.account_id,
                key.region,
                key.key_spec,
                key.key_usage,
                key.origin,
                tuple(sorted(key.tags.items())),
                matched,
            )
        who: object = principal_arn
        if not grants and self._anonymous(principal_arn, policies, key.policy):
            who = (principal_account, principal_arn.split(":", 5)[-1].split("/", 1)[0])
        memo_key = (who, policies, key.policy, where)
        hit = self._levels.get(memo_key)
        if hit is None:
            hit = {}
            for action in actions_for(key_kind(key)):
                level, decision = self.level(
                    principal_arn=principal_arn,
                    principal_account=principal_account,
                    policies=policies,
                    action=action,
                    key=key,
                )
                if level is not None:
                    hit[action] = (level, decision)
            self._levels[memo_key] = hit
        return hit


def describe_path(decision: ev.Decision) -> str:
    """How an allow came about, in words: the statement or grant that decided it."""
    ref = decision.statement
    if ref is None:
        return decision.reason
    if ref.source.startswith("grant:"):
        return f"grant {ref.source[6:]}"
    where = "key policy" if ref.source == "key-policy" else ref.source.replace("identity-policy:", "identity policy ")
    label = f"statement '{ref.sid}'" if ref.sid else f"statement #{(ref.index or 0) + 1}"
    return f"{where}, {label}"


def allowed_map(prober: Prober, principal: PrincipalFact) -> dict[str, dict[str, str]]:
    """key id -> action -> path, for every key of the snapshot and every key action the principal may do."""
    out: dict[str, dict[str, str]] = {}
    paths: dict[int, dict[str, str]] = {}
    for key in prober.snapshot.keys:
        levels = prober.levels(
            principal_arn=principal.arn, principal_account=principal.account_id, policies=principal.policies, key=key
        )
        if not levels:
            continue
        described = paths.get(id(levels))
        if described is None:
            described = paths[id(levels)] = {
                action: describe_path(decision) if level == ALLOWED else f"under conditions: {describe_path(decision)}"
                for action, (level, decision) in levels.items()
            }
        out[key.id] = described
    return out


@dataclass
class KeyAccess:
    """One key's row of an access review: what the principal may do, what it did."""

    key_id: str
    key_arn: str
    account_id: str
    external: bool
    allowed: dict[str, str] = field(default_factory=dict)  # action -> path
    used: dict[str, datetime] = field(default_factory=dict)  # action -> last use

    @property
    def unused(self) -> list[str]:
        return sorted(set(self.allowed) - set(self.used))

    @property
    def unused_paths(self) -> list[tuple[str, str]]:
        """(action, what allows it) for each unused action."""
        return [(action, self.allowed[action]) for action in self.unused]

    @property
    def used_not_allowed(self) -> list[str]:
        """Used in the window but no longer allowed (policies changed since)."""
        return sorted(set(self.used) - set(self.allowed))


@dataclass
class GrantUse:
    """A live grant to the principal: its operations against those its grantee used on its key."""

    grant_id: str
    key_id: str
    operations: list[str]
    used: dict[str, datetime]  # operation -> last use

    @property
    def unused(self) -> list[str]:
        return sorted(set(self.operations) - set(self.used))


@dataclass
class AccessReview:
    """A principal's allowed and used access in the look-back window, and a generated policy."""

    principal: PrincipalFact
    days: int
    keys: list[KeyAccess]
    grants: list[GrantUse]
    other_actions: dict[str, datetime]  # actions on no key the principal used -> last use
    generated: dict[str, Any]
    calls: list[ObservedCall]
    # Why the generated policy is broader than the calls (the size limit), or "".
    generated_note: str = ""

    @property
    def allowed_count(self) -> int:
        return sum(len(k.allowed) for k in self.keys)

    @property
    def unused_count(self) -> int:
        return sum(len(k.unused) for k in self.keys)

    @property
    def generated_text(self) -> str:
        """The generated policy as the forms and the API hand it out ("" when nothing was used)."""
        return json.dumps(self.generated, indent=2) if self.generated else ""


def access_review(
    snapshot: Snapshot, principal: PrincipalFact, calls: Sequence[ObservedCall], days: int
) -> AccessReview:
    """Allowed against used for ``principal``; ``calls`` are its successful calls in the last ``days``."""
    prober = Prober(snapshot)
    allowed = allowed_map(prober, principal)
    keys_by_id = {k.id: k for k in snapshot.keys}
    used: dict[str, dict[str, datetime]] = defaultdict(dict)
    other: dict[str, datetime] = {}
    for call in calls:
        when = call.last_used or snapshot.now
        if call.key_id:
            seen = used[call.key_id]
            if call.action not in seen or when > seen[call.action]:
                seen[call.action] = when
        elif call.action not in other or when > other[call.action]:
            other[call.action] = when
    rows: list[KeyAccess] = []
    for key_id in sorted(set(allowed) | set(used)):
        key = keys_by_id.get(key_id)
        arn = key.arn if key is not None else next((c.resource_arn for c in calls if c.key_id == key_id), key_id)
        account = key.account_id if key is not None else (account_of_key_arn(arn) or "")
        rows.append(
            KeyAccess(
                key_id=key_id,
                key_arn=arn,
                account_id=account,
                external=bool(account) and account != principal.account_id,
                allowed=dict(sorted(allowed.get(key_id, {}).items())),
                used=dict(sorted(used.get(key_id, {}).items())),
            )
        )
    grants = [
        GrantUse(
            grant_id=g.grant_id,
            key_id=g.key_id,
            operations=sorted(g.operations),
            used={op[4:]: at for op, at in used.get(g.key_id, {}).items() if op[4:] in g.operations},
        )
        for g in snapshot.grants
        if g.grantee_principal == principal.arn
    ]
    # A policy needs a statement: a principal that used nothing gets none (its policies can go).
    generated, note = generate_policy_noted(calls) if calls else ({}, NO_CALLS)
    return AccessReview(
        principal=principal,
        days=days,
        keys=rows,
        grants=grants,
        other_actions=dict(sorted(other.items())),
        generated=generated,
        calls=list(calls),
        generated_note=note,
    )


def account_of_key_arn(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 and parts[2] == "kms" else None


# --- policy generation ----------------------------------------------------------------------------


def _common_pairs(contexts: Sequence[tuple[tuple[str, str], ...] | None]) -> dict[str, str]:
    """The encryption-context pairs every call carried (the "consistent" use), else nothing."""
    common: set[tuple[str, str]] | None = None
    for context in contexts:
        pairs = set(context or ())
        common = pairs if common is None else common & pairs
        if not common:
            return {}
    return dict(sorted(common or ()))


NO_CALLS = (
    "It made no successful KMS call in the window: no policy is generated. It needs none of its KMS "
    "permissions; remove them, or review a longer window."
)
GENERALIZED_KEYS = (
    "Naming every key it used would exceed the policy size limit (32 KiB): keys are generalized to all keys "
    "of their account and region."
)
GENERALIZED_CONTEXTS = (
    "Naming every key it used would exceed the policy size limit (32 KiB): keys are generalized to all keys "
    "of their account and region, and encryption-context conditions are left out."
)


def _all_keys_of(arn: str) -> str:
    return arn.rsplit("/", 1)[0] + "/*"


def _build(calls: Sequence[ObservedCall], *, wide_keys: bool, contexts_too: bool) -> dict[str, Any]:
    plain: dict[str, set[str]] = defaultdict(set)
    bound: dict[str, set[str]] = defaultdict(set)
    contexts: dict[str, list[tuple[tuple[str, str], ...] | None]] = defaultdict(list)
    keyless: set[str] = set()
    for call in calls:
        if not call.key_id:
            keyless.add(call.action)
        elif call.action[4:] in CONTEXT_BOUND:
            bound[call.resource_arn].add(call.action)
            contexts[call.resource_arn].append(call.encryption_context)
        else:
            plain[call.resource_arn].add(call.action)
    groups: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], set[str]] = defaultdict(set)
    for arn, used in plain.items():
        groups[(tuple(sorted(used)), ())].add(_all_keys_of(arn) if wide_keys else arn)
    for arn, used in bound.items():
        pairs = tuple(_common_pairs(contexts[arn]).items()) if contexts_too else ()
        groups[(tuple(sorted(used)), pairs)].add(_all_keys_of(arn) if wide_keys else arn)
    statements: list[dict[str, Any]] = []
    for (actions, pairs), resources in sorted(groups.items(), key=lambda item: (sorted(item[1]), item[0])):
        arns = sorted(resources)
        statement: dict[str, Any] = {
            "Sid": f"UsedKeys{len(statements) + 1}",
            "Effect": "Allow",
            "Action": list(actions) if len(actions) > 1 else actions[0],
            "Resource": arns if len(arns) > 1 else arns[0],
        }
        if pairs:
            statement["Condition"] = {"StringEquals": {f"kms:EncryptionContext:{k}": v for k, v in pairs}}
        statements.append(statement)
    if keyless:
        ordered = sorted(keyless)
        statements.append(
            {
                "Sid": "UsedWithoutAKey",
                "Effect": "Allow",
                "Action": ordered if len(ordered) > 1 else ordered[0],
                "Resource": "*",
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def generate_policy_noted(calls: Sequence[ObservedCall]) -> tuple[dict[str, Any], str]:
    """``generate_policy``, and a note when the policy had to be generalized to fit the size limit."""
    ways = ((False, True, ""), (True, True, GENERALIZED_KEYS), (True, False, GENERALIZED_CONTEXTS))
    policy, note = {}, ""
    for wide_keys, contexts_too, why in ways:
        policy, note = _build(calls, wide_keys=wide_keys, contexts_too=contexts_too), why
        # The dashboard and the API hand it out indented: that text must fit.
        if len(json.dumps(policy, indent=2).encode()) <= ev.MAX_POLICY_BYTES:
            break
    confirm_policy(policy, calls)
    return policy, note


def generate_policy(calls: Sequence[ObservedCall]) -> dict[str, Any]:
    """A least-privilege identity policy allowing exactly the observed calls' actions on their keys.

    Per key: the actions used, as one statement; the context-bound ones in a
    statement of their own carrying ``StringEquals`` on every encryption-context
    pair all their calls had. Keys with the same actions and conditions share a
    statement. Actions on no key get ``Resource: "*"``. A policy that would not
    fit the size limit names all keys of an account and region instead of each
    key (and, if still too large, leaves the conditions out). The result is
    checked by the engine (``confirm_policy``) before it is returned.
    """
    return generate_policy_noted(calls)[0]


def call_context(call: ObservedCall, principal_arn: str, principal_account: str, now: datetime) -> ev.RequestContext:
    """The engine's request context for an observed call (its encryption context included)."""
    keys: dict[str, Any] = {"aws:MultiFactorAuthPresent": True, "aws:SecureTransport": True}
    if call.encryption_context is not None:
        for k, v in call.encryption_context:
            keys[f"kms:EncryptionContext:{k}"] = v
        keys["kms:EncryptionContextKeys"] = [k for k, _ in call.encryption_context]
    return ev.RequestContext(
        action=call.action,
        principal_arn=principal_arn,
        principal_account=principal_account,
        resource_arn=call.resource_arn,
        resource_account=call.resource_account,
        now=now,
        keys=keys,
    )


# The engine needs a principal and a clock; neither changes an identity policy's answer here.
_CONFIRM_PRINCIPAL = "arn:aws:iam::111122223333:user/least-privilege-check"
_CONFIRM_TIME = datetime.fromisoformat("2026-01-01T00:00:00+00:00")


def _decide_generated(parsed: ev.Policy, call: ObservedCall) -> ev.Decision:
    ctx = call_context(call, _CONFIRM_PRINCIPAL, call.resource_account, _CONFIRM_TIME)
    return ev.evaluate(ctx, None, [("generated", parsed)])


def policy_allows(policy: Mapping[str, Any], call: ObservedCall) -> ev.Decision:
    """The engine's decision on ``call`` under ``policy`` alone (no key policy: the identity policy decides)."""
    return _decide_generated(ev.parse_policy(json.dumps(policy), kind="identity"), call)


def confirm_policy(policy: Mapping[str, Any], calls: Sequence[ObservedCall]) -> None:
    """Raise ``GenerationError`` unless the engine allows every observed call under ``policy``."""
    if not calls:
        return
    parsed = ev.parse_policy(json.dumps(policy), kind="identity")
    for call in calls:
        decision = _decide_generated(parsed, call)
        if not decision.allowed:
            raise GenerationError(
                f"The generated policy does not allow an observed call ({call.action} on {call.resource_arn}): "
                f"{decision.explanation}"
            )


# --- external access --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExternalAccess:
    """A principal of another account (or everyone) that may use a key, and the path that allows it."""

    key_id: str
    key_arn: str
    principal: str  # an ARN, an account's root ARN, or "*"
    account_id: str
    actions: tuple[str, ...]
    path: str  # "key-policy" | "grant"
    via: str  # the statement or grant, in words


def external_access(snapshot: Snapshot, keys: Iterable[KeyFact] | None = None) -> list[ExternalAccess]:
    """Every principal of another account that can use a key, through its key policy or a grant.

    A principal the key policy names is probed as if its own account let it do
    anything (AWS needs both accounts to agree; kmsweb cannot see the other
    account's IAM), so only the key policy stands between it and the key; a
    grant is listed with its operations.
    """
    prober = Prober(snapshot)
    out: list[ExternalAccess] = []
    for key in keys if keys is not None else snapshot.keys:
        for arn, account in sorted(external_candidates(key).items()):
            by_path: dict[str, list[str]] = defaultdict(list)
            for action in actions_for(key_kind(key)):
                decision = prober.decide(
                    principal_arn=arn, principal_account=account, policies=(ALLOW_ALL,), action=action, key=key
                )
                if decision.allowed and decision.reason == "key-policy":
                    by_path[describe_path(decision)].append(action)
            for via, actions in sorted(by_path.items()):
                out.append(
                    ExternalAccess(
                        key.id, key.arn, "*" if arn == ANYONE else arn, account, tuple(actions), "key-policy", via
                    )
                )
        for grant in snapshot.grants:
            if grant.key_id != key.id:
                continue
            owner = account_of(grant.grantee_principal)
            if owner is not None and owner != key.account_id:
                kinds = grant_operations(key_kind(key))
                ops = tuple(f"kms:{op}" for op in sorted(grant.operations) if not kinds or op in kinds)
                out.append(
                    ExternalAccess(
                        key.id, key.arn, grant.grantee_principal, owner, ops, "grant", f"grant {grant.grant_id}"
                    )
                )
    return out
