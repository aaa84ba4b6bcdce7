"""Change preview: who gains and who loses which actions on which keys, and which
findings a change creates or resolves (pure).

A change is applied to a copy of the snapshot (``apply_change``); both
snapshots are asked the same questions of the real policy engine, and the real
compliance rules run over both. Only the principals and keys a change can
reach are asked: a key policy change, every principal of the snapshot and
every principal of another account (or everyone) either version names, on that
key; an identity policy change, its holders on every key; a grant change, its
grantee on its key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from compliance.review.analysis import ALLOWED, CONDITIONAL, Prober
from compliance.rules import RULES, Result
from compliance.rules.access import ALLOW_ALL, ANYONE, external_candidates
from compliance.rules.facts import GrantFact, KeyFact, PolicyFact, PrincipalFact, Snapshot


@dataclass(frozen=True)
class KeyPolicyChange:
    key_id: str
    policy: str


@dataclass(frozen=True)
class IdentityPolicyChange:
    """Put an inline policy on ``principal_arn``, or replace managed policy ``name`` of ``account_id``."""

    name: str
    document: str
    principal_arn: str = ""
    account_id: str = ""


@dataclass(frozen=True)
class GrantChange:
    """Create a grant (``grant`` set) or revoke one (``revoke_grant_id``)."""

    grant: GrantFact | None = None
    revoke_grant_id: str = ""


Change = KeyPolicyChange | IdentityPolicyChange | GrantChange


@dataclass(frozen=True)
class AccessChange:
    principal: str
    key_id: str
    key_arn: str
    actions: tuple[str, ...]
    # Of ``actions``, those allowed (after the change) only under conditions the probe lacks.
    conditional: tuple[str, ...] = ()


@dataclass(frozen=True)
class FindingChange:
    rule_id: str
    title: str
    severity: str
    resource_id: str
    evidence: Mapping[str, Any]


@dataclass
class Preview:
    gains: list[AccessChange] = field(default_factory=list)
    losses: list[AccessChange] = field(default_factory=list)
    # Still allowed, but only under conditions (an encryption context, a source IP, ...).
    narrowed: list[AccessChange] = field(default_factory=list)
    created: list[FindingChange] = field(default_factory=list)
    resolved: list[FindingChange] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.gains or self.losses or self.narrowed or self.created or self.resolved)


def apply_change(snapshot: Snapshot, change: Change) -> Snapshot:
    """The snapshot as it would be after ``change``."""
    if isinstance(change, KeyPolicyChange):
        keys = tuple(replace(k, policy=change.policy) if k.id == change.key_id else k for k in snapshot.keys)
        return replace(snapshot, keys=keys)
    if isinstance(change, IdentityPolicyChange):
        principals = tuple(_with_policy(p, change) for p in snapshot.principals)
        return replace(snapshot, principals=principals)
    grants = tuple(g for g in snapshot.grants if g.grant_id != change.revoke_grant_id)
    if change.grant is not None:
        grants += (change.grant,)
    return replace(snapshot, grants=grants)


def _with_policy(p: PrincipalFact, change: IdentityPolicyChange) -> PrincipalFact:
    fact = PolicyFact(change.name, change.document, "inline" if change.principal_arn else "managed")
    if change.principal_arn:
        if p.arn != change.principal_arn:
            return p
        kept = tuple(q for q in p.policies if not (q.kind == "inline" and q.name == change.name))
        return replace(p, policies=(*kept, fact))
    if p.account_id != change.account_id or not any(q.kind == "managed" and q.name == change.name for q in p.policies):
        return p
    return replace(
        p, policies=tuple(fact if (q.kind == "managed" and q.name == change.name) else q for q in p.policies)
    )


# (principal ARN, its account, its identity policies before, after)
Asked = tuple[str, str, tuple[PolicyFact, ...], tuple[PolicyFact, ...]]


def _affected(before: Snapshot, after: Snapshot, change: Change) -> tuple[list[Asked], list[str]]:
    """The principals to ask (with their policies before and after) and the key ids to ask about.

    A principal kmsweb does not hold (another account's, or everyone) is asked
    as if its own account let it do anything: only the key decides.
    """
    people_before = before.principals_by_arn
    people_after = after.principals_by_arn

    def row(arn: str, account: str) -> Asked:
        b, a = people_before.get(arn), people_after.get(arn)
        return (arn, account, b.policies if b else (ALLOW_ALL,), a.policies if a else (ALLOW_ALL,))

    if isinstance(change, KeyPolicyChange):
        rows = [row(p.arn, p.account_id) for p in after.principals]
        known = {p.arn for p in after.principals}
        for snap in (before, after):
            for key in snap.keys:
                if key.id == change.key_id:
                    for arn, account in sorted(external_candidates(key).items()):
                        if arn not in known:
                            known.add(arn)
                            rows.append(row(arn, account))
        return rows, [change.key_id]
    if isinstance(change, IdentityPolicyChange):
        changed = [
            p
            for p in after.principals
            if p.policies != (people_before[p.arn].policies if p.arn in people_before else ())
        ]
        return [row(p.arn, p.account_id) for p in changed], [k.id for k in after.keys]
    grants = {g.grant_id: g for g in (*before.grants, *after.grants)}
    touched = [g for g in grants.values() if g.grant_id == change.revoke_grant_id or g is change.grant]
    rows = []
    for g in touched:
        person = people_after.get(g.grantee_principal)
        rows.append(row(g.grantee_principal, person.account_id if person else g.key_account_id))
    return rows, sorted({g.key_id for g in touched})


def _levels(prober: Prober, arn: str, account: str, policies: tuple[PolicyFact, ...], key: KeyFact) -> dict[str, str]:
    levels = prober.levels(principal_arn=arn, principal_account=account, policies=policies, key=key)
    return {action: level for action, (level, _) in levels.items()}


def _failing(snapshot: Snapshot) -> dict[tuple[str, str], Result]:
    out: dict[tuple[str, str], Result] = {}
    for rule in RULES.values():
        for result in rule.evaluate(snapshot):
            if not result.compliant:
                out[(rule.id, result.resource_id)] = result
    return out


def _finding(rule_id: str, result: Result) -> FindingChange:
    rule = RULES[rule_id]
    return FindingChange(
        rule_id, rule.title, (result.severity or rule.severity).value, result.resource_id, dict(result.evidence)
    )


def preview(before: Snapshot, change: Change) -> Preview:
    """What ``change`` does: access gained and lost, findings created and resolved."""
    after = apply_change(before, change)
    rows, key_ids = _affected(before, after, change)
    keys_before = {k.id: k for k in before.keys}
    keys_after = {k.id: k for k in after.keys}
    probe_before, probe_after = Prober(before), Prober(after)
    out = Preview()
    for arn, account, policies_before, policies_after in rows:
        for key_id in key_ids:
            kb, ka = keys_before.get(key_id), keys_after.get(key_id)
            if kb is None or ka is None:
                continue
            was = _levels(probe_before, arn, account, policies_before, kb)
            now = _levels(probe_after, arn, account, policies_after, ka)
            who = "*" if arn == ANYONE else arn
            gained = sorted(a for a in now if a not in was or (was[a] == CONDITIONAL and now[a] == ALLOWED))
            lost = sorted(a for a in was if a not in now)
            narrowed = sorted(a for a in now if was.get(a) == ALLOWED and now[a] == CONDITIONAL)
            for bucket, actions in ((out.gains, gained), (out.losses, lost), (out.narrowed, narrowed)):
                if actions:
                    conditional = tuple(a for a in actions if now.get(a) == CONDITIONAL)
                    bucket.append(AccessChange(who, key_id, ka.arn, tuple(actions), conditional))
    b_fail, a_fail = _failing(before), _failing(after)
    out.created = [_finding(rule_id, r) for (rule_id, rid), r in sorted(a_fail.items()) if (rule_id, rid) not in b_fail]
    out.resolved = [
        _finding(rule_id, r) for (rule_id, rid), r in sorted(b_fail.items()) if (rule_id, rid) not in a_fail
    ]
    return out
