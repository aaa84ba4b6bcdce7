"""Asking the real policy engine "may this principal do X on this key?" over snapshot facts.

The rules never match policy text themselves: they build a request context
and call ``policies.evaluation.evaluate``, the same engine every request goes
through. A probe is a request signed with MFA over TLS and carries the key's
spec, usage, origin and tags; a statement whose conditions need anything
else (an encryption context, a source IP, a ViaService) does not hold, so
the rules report what a principal may do without such conditions.

Decisions are memoized per run: most keys share a handful of policy texts,
and a principal's answer does not depend on which of those keys is asked
about unless a statement names specific resources.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from compliance.rules.facts import KeyFact, PolicyFact
from policies import evaluation as ev

_ACCOUNT_OF = re.compile(r"^arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):")
# A principal no policy names: stands for "anyone" in the public-access probe.
PROBE_ACCOUNT = "000000000000"
ALLOW_ALL = PolicyFact(
    "probe-allow-all", '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}', "inline"
)


def account_of(arn: str) -> str | None:
    """The 12-digit account of a principal ARN, or None (service names, malformed)."""
    m = _ACCOUNT_OF.match(arn)
    return m.group(1) if m else None


@lru_cache(maxsize=8192)
def parsed_identity(policies: tuple[PolicyFact, ...]) -> tuple[tuple[str, ev.Policy], ...]:
    """The policies compiled by the engine; a document that no longer parses grants nothing."""
    out = []
    for p in policies:
        try:
            out.append((p.name, ev.parse_policy(p.document, kind="identity")))
        except ev.PolicyError:
            continue
    return tuple(out)


def parsed_key_policy(key: KeyFact) -> ev.Policy | None:
    """The key's policy compiled; a corrupt stored policy allows nothing (None is "no key policy")."""
    if not key.policy:
        return None
    try:
        return ev.parse_policy(key.policy, kind="key")
    except ev.PolicyError:
        return ev.parse_policy({"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}]})


# Anyone at all (a "*" principal), probed as a user of an account no key belongs to.
ANYONE = f"arn:aws:iam::{PROBE_ACCOUNT}:user/anyone"


def external_candidates(key: KeyFact) -> dict[str, str]:
    """Principals of other accounts (and everyone) the key policy's Allow statements name."""
    policy = parsed_key_policy(key)
    out: dict[str, str] = {}
    for st in policy.statements if policy is not None else ():
        spec = st.principal
        if st.deny or spec is None:
            continue
        if spec.everyone or st.not_principal:
            out[ANYONE] = PROBE_ACCOUNT
        for account in spec.accounts:
            if account != key.account_id:
                out[f"arn:aws:iam::{account}:root"] = account
        for arn in spec.arns:
            owner = account_of(arn)
            if owner is not None and owner != key.account_id:
                out[arn] = owner
    return out


def _resource_free(policies: Sequence[ev.Policy | None]) -> bool:
    return all(p is None or all(st.resource_all and not st.not_resource for st in p.statements) for p in policies)


class Access:
    """One run's memo of engine decisions."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._memo: dict[tuple[object, ...], ev.Decision] = {}

    def decide(
        self,
        *,
        principal_arn: str,
        principal_account: str,
        identity: Sequence[tuple[str, ev.Policy]],
        action: str,
        key: KeyFact | None,
        resource_arn: str | None = None,
        use_key_policy: bool = True,
    ) -> ev.Decision:
        """The engine's decision for ``principal_arn`` doing ``action`` on ``key``.

        ``key`` None with ``resource_arn`` asks the identity policies alone
        about that resource (no key policy), as for CreateKey or "all keys".
        """
        key_policy = parsed_key_policy(key) if key is not None and use_key_policy else None
        resource = key.arn if key is not None else (resource_arn or "*")
        resource_account = key.account_id if key is not None else (account_of(resource) or principal_account)
        policies = [key_policy, *(p for _, p in identity)]
        where: object = (resource_account, key.region) if key is not None and _resource_free(policies) else resource
        memo_key = (
            principal_arn,
            action,
            key_policy.text if key_policy is not None else None,
            tuple(name for name, _ in identity),
            tuple(id(p) for _, p in identity),
            where,
            (key.key_spec, key.key_usage, key.origin, tuple(sorted(key.tags.items()))) if key is not None else None,
        )
        hit = self._memo.get(memo_key)
        if hit is not None:
            return hit
        keys: dict[str, object] = {"aws:MultiFactorAuthPresent": True, "aws:SecureTransport": True}
        if key is not None:
            keys.update({"kms:KeySpec": key.key_spec, "kms:KeyUsage": key.key_usage, "kms:KeyOrigin": key.origin})
            for tag_key, tag_value in key.tags.items():
                keys[f"aws:ResourceTag/{tag_key}"] = tag_value
        ctx = ev.RequestContext(
            action=action,
            principal_arn=principal_arn,
            principal_account=principal_account,
            resource_arn=resource,
            resource_account=resource_account,
            now=self.now,
            keys=keys,
        )
        decision = ev.evaluate(ctx, key_policy, identity)
        self._memo[memo_key] = decision
        return decision


def statement_evidence(decision: ev.Decision, key: KeyFact | None = None) -> dict[str, object]:
    """The statement that decided, as findings keep it (and its text from the key policy)."""
    out: dict[str, object] = {"reason": decision.reason, "explanation": decision.explanation}
    ref = decision.statement
    if ref is not None:
        out["statement"] = {"source": ref.source, "sid": ref.sid, "index": ref.index}
        if key is not None and ref.source == "key-policy" and ref.index is not None:
            out["statementText"] = statement_text(key.policy, ref.index)
    return out


def statement_text(document: str, index: int) -> object:
    """Statement ``index`` of a policy document, as JSON data (None if it cannot be read)."""
    import json

    try:
        statements = json.loads(document).get("Statement")
    except (ValueError, AttributeError):
        return None
    if isinstance(statements, dict):
        statements = [statements]
    if isinstance(statements, list) and 0 <= index < len(statements):
        return statements[index]
    return None
