"""Trust policies (``kind="trust"``) and the MFA condition keys, in the pure engine."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from keys.services.common import MFA_PROTECTED_ACTIONS, mfa_key_policy
from policies.evaluation import PolicyError, RequestContext, evaluate, parse_policy

ACCOUNT = "111122223333"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/deployer"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def trust(principal: Any = None, condition: dict[str, Any] | None = None, **extra: Any) -> str:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": "sts:AssumeRole", **extra}
    if principal is not None:
        statement["Principal"] = principal
    if condition:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def ctx(action: str, resource: str, principal: str = ALICE, **keys: Any) -> RequestContext:
    return RequestContext(
        action=action,
        principal_arn=principal,
        principal_account=ACCOUNT,
        resource_arn=resource,
        resource_account=ACCOUNT,
        now=NOW,
        keys=keys,
    )


def test_it_requires_a_principal_and_forbids_a_resource_in_a_trust_policy() -> None:
    with pytest.raises(PolicyError, match="no Principal"):
        parse_policy(trust(), kind="trust")
    with pytest.raises(PolicyError, match="must not specify a Resource"):
        parse_policy(trust({"AWS": ALICE}, Resource="*"), kind="trust")
    parse_policy(trust({"AWS": ALICE}), kind="trust")


@pytest.mark.parametrize(
    ("principal", "keys", "allowed"),
    [
        (ALICE, {"aws:MultiFactorAuthPresent": True}, True),
        (ALICE, {"aws:MultiFactorAuthPresent": False}, False),
        (ALICE, {}, False),
        (f"arn:aws:iam::{ACCOUNT}:user/bob", {"aws:MultiFactorAuthPresent": True}, False),
    ],
)
def test_it_lets_in_only_the_named_principal_with_mfa(principal: str, keys: dict[str, Any], allowed: bool) -> None:
    policy = parse_policy(trust({"AWS": ALICE}, {"Bool": {"aws:MultiFactorAuthPresent": "true"}}), kind="trust")
    decision = evaluate(ctx("sts:AssumeRole", ROLE, principal, **keys), policy, [])
    assert decision.allowed is allowed


def test_it_delegates_to_identity_policies_when_the_trust_policy_names_the_account() -> None:
    policy = parse_policy(trust({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}), kind="trust")
    assert not evaluate(ctx("sts:AssumeRole", ROLE), policy, []).allowed
    identity = parse_policy(
        json.dumps({"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ROLE}]}),
        kind="identity",
    )
    assert evaluate(ctx("sts:AssumeRole", ROLE), policy, [("assume", identity)]).allowed


@pytest.mark.parametrize(
    ("keys", "allowed"),
    [
        ({"aws:MultiFactorAuthPresent": False}, False),  # long-term key, or a session without MFA
        ({}, False),  # no MFA key at all: BoolIfExists denies
        ({"aws:MultiFactorAuthPresent": True, "aws:MultiFactorAuthAge": 120}, True),
        ({"aws:MultiFactorAuthPresent": True, "aws:MultiFactorAuthAge": 3600}, True),
        ({"aws:MultiFactorAuthPresent": True, "aws:MultiFactorAuthAge": 3601}, False),
        ({"aws:MultiFactorAuthPresent": True}, True),  # the dashboard: TOTP at sign-in, no age
    ],
)
def test_it_guards_destructive_operations_by_mfa_in_the_template(keys: dict[str, Any], allowed: bool) -> None:
    policy = parse_policy(mfa_key_policy(ACCOUNT), kind="key")
    identity = parse_policy(
        json.dumps({"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}), kind="identity"
    )
    for action in MFA_PROTECTED_ACTIONS:
        assert evaluate(ctx(action, KEY, **keys), policy, [("kms", identity)]).allowed is allowed, action
    # Everyday use is not guarded.
    assert evaluate(ctx("kms:Encrypt", KEY, **keys), policy, [("kms", identity)]).allowed
