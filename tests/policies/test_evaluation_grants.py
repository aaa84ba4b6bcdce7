"""Grants made through grants, and who may retire a grant: the pure engine, table- and property-tested.

Pure (no database, no Django): run with
``.venv/bin/pytest -q -p no:django --noconftest tests/policies/test_evaluation_grants.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from policies.evaluation import (
    ENCRYPTION_CONTEXT_OPERATIONS,
    RETIRE_DENIAL_CLAUSE,
    GrantView,
    ProposedGrant,
    RequestContext,
    evaluate,
    evaluate_retire,
    grant_may_create,
    parse_policy,
)

ACCT = "111122223333"
OTHER = "444455556666"
KEY = f"arn:aws:kms:us-west-2:{ACCT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ALICE = f"arn:aws:iam::{ACCT}:user/alice"
BOB = f"arn:aws:iam::{ACCT}:user/bob"
CAROL = f"arn:aws:iam::{OTHER}:user/carol"
ROOT = f"arn:aws:iam::{ACCT}:root"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
# A key policy that names nobody: only grants can allow.
NOBODY = parse_policy(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:Describe*", "Resource": "*"}],
    },
    kind="key",
)


def ctx(action: str, principal: str = ALICE) -> RequestContext:
    return RequestContext(action, principal, principal.split(":")[4], KEY, ACCT, NOW, {})


def parent(
    *ops: str, subset: Mapping[str, str] | None = None, equals: Mapping[str, str] | None = None, **extra: Any
) -> GrantView:
    return GrantView(
        grant_id="p" * 64,
        grantee_principal=ALICE,
        operations=frozenset(ops or ("CreateGrant", "Decrypt", "Encrypt")),
        encryption_context_subset=subset,
        encryption_context_equals=equals,
        **extra,
    )


def child(*ops: str, subset: Mapping[str, str] | None = None, equals: Mapping[str, str] | None = None) -> ProposedGrant:
    return ProposedGrant(frozenset(ops or ("Decrypt",)), subset, equals)


DEPT = {"dept": "IT"}

# (case, parent, child, allowed)
CREATE_CASES = [
    ("unconstrained parent, any constraint", parent(), child(), True),
    ("fewer operations", parent(), child("Decrypt"), True),
    ("the same operations", parent(), child("CreateGrant", "Decrypt", "Encrypt"), True),
    ("an operation the parent lacks", parent(), child("Decrypt", "ReEncryptFrom"), False),
    ("subset parent, no constraint", parent(subset=DEPT), child(), False),
    ("subset parent, the same subset", parent(subset=DEPT), child(subset=DEPT), True),
    ("subset parent, a larger subset", parent(subset=DEPT), child(subset={**DEPT, "app": "x"}), True),
    ("subset parent, equals holding its pairs", parent(subset=DEPT), child(equals={**DEPT, "app": "x"}), True),
    ("subset parent, a key in another case", parent(subset=DEPT), child(subset={"DEPT": "IT"}), True),
    ("subset parent, another value", parent(subset=DEPT), child(subset={"dept": "HR"}), False),
    ("subset parent, a value in another case", parent(subset=DEPT), child(subset={"dept": "it"}), False),
    ("subset parent, other pairs", parent(subset=DEPT), child(subset={"app": "x"}), False),
    ("subset parent, equals missing its pairs", parent(subset=DEPT), child(equals={"app": "x"}), False),
    ("subset parent, empty subset", parent(subset=DEPT), child(subset={}), False),
    ("empty subset parent constrains nothing", parent(subset={}), child(), True),
    # Such a parent allows no context at all (dept must be both "it" and "IT"): nor may its child.
    ("subset parent, keys differing in case", parent(subset={"dept": "it", "Dept": "IT"}), child(subset=DEPT), False),
    ("equals parent, no constraint", parent(equals=DEPT), child(), False),
    ("equals parent, the same equals", parent(equals=DEPT), child(equals=DEPT), True),
    ("equals parent, equals with a key in another case", parent(equals=DEPT), child(equals={"Dept": "IT"}), True),
    ("equals parent, a larger equals", parent(equals=DEPT), child(equals={**DEPT, "app": "x"}), False),
    ("equals parent, a subset with its pairs", parent(equals=DEPT), child(subset=DEPT), False),
    ("equals parent, another value", parent(equals=DEPT), child(equals={"dept": "HR"}), False),
]


@pytest.mark.parametrize(("case", "grant", "proposed", "allowed"), CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_it_lets_a_grant_create_only_grants_as_strict_as_itself(
    case: str, grant: GrantView, proposed: ProposedGrant, allowed: bool
) -> None:
    assert grant_may_create(grant, proposed) is allowed
    decision = evaluate(ctx("kms:CreateGrant"), NOBODY, [], [grant], None, proposed)
    assert decision.allowed is allowed
    if allowed:
        assert decision.reason == "grant" and decision.statement is not None
        assert decision.statement.source == f"grant:{grant.grant_id}"
    else:
        assert decision.reason == "implicit-deny"
        assert "same or stricter encryption context constraints" in decision.explanation


def test_it_refuses_create_grant_through_a_grant_when_the_proposed_grant_is_unknown() -> None:
    # Fail closed: a caller that does not say what it would create gets nothing from a grant.
    assert not evaluate(ctx("kms:CreateGrant"), NOBODY, [], [parent()]).allowed


def test_it_uses_any_of_the_callers_grants_that_covers_the_proposed_grant() -> None:
    narrow = parent("CreateGrant", "Encrypt")
    wide = GrantView("w" * 64, ALICE, frozenset({"CreateGrant", "Decrypt"}), {"dept": "IT"})
    decision = evaluate(ctx("kms:CreateGrant"), NOBODY, [], [narrow, wide], None, child("Decrypt", subset=DEPT))
    assert decision.allowed and decision.statement is not None
    assert decision.statement.source == f"grant:{'w' * 64}"


def test_it_lets_a_policy_allow_create_grant_whatever_the_grant_asked_for() -> None:
    # The restriction is on grants made *through a grant*; a key policy allow is not narrowed.
    policy = parse_policy(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": "kms:*", "Resource": "*"}],
        },
        kind="key",
    )
    proposed = child("Decrypt", "Encrypt", "ReEncryptFrom")
    assert evaluate(ctx("kms:CreateGrant"), policy, [], [parent(subset=DEPT)], None, proposed).reason == "key-policy"


contexts = st.dictionaries(
    st.sampled_from(["dept", "Dept", "app", "x"]), st.sampled_from(["IT", "it", "HR"]), max_size=3
)
constraints = st.one_of(
    st.tuples(st.none(), st.none()),
    st.tuples(contexts, st.none()),
    st.tuples(st.none(), contexts),
)
operations = st.frozensets(st.sampled_from(sorted(ENCRYPTION_CONTEXT_OPERATIONS | {"CreateGrant"})), min_size=1)


@settings(max_examples=300, deadline=None)
@given(operations, constraints, operations, constraints, contexts, st.data())
def test_it_never_lets_a_child_grant_allow_what_its_parent_refuses(
    parent_ops: frozenset[str],
    parent_constraint: tuple[Any, Any],
    child_ops: frozenset[str],
    child_constraint: tuple[Any, Any],
    request_context: dict[str, str],
    data: st.DataObject,
) -> None:
    """Soundness: whatever a grant made through a grant allows, the grant it was made through allows."""
    up = GrantView("p" * 64, ALICE, parent_ops | {"CreateGrant"}, *parent_constraint)
    proposed = ProposedGrant(child_ops, *child_constraint)
    assume(grant_may_create(up, proposed))
    operation = data.draw(st.sampled_from(sorted(child_ops)))
    down = GrantView("c" * 64, BOB, child_ops, *child_constraint)
    if evaluate(ctx(f"kms:{operation}", BOB), NOBODY, [], [down], request_context, proposed).allowed:
        assert evaluate(ctx(f"kms:{operation}", ALICE), NOBODY, [], [up], request_context, proposed).allowed


# --- RetireGrant -----------------------------------------------------------------

RETIRE_ANYTHING = (
    "RetireAnything",
    parse_policy(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:RetireGrant", "Resource": "*"}]},
        kind="identity",
    ),
)
NO_RETIRING = ("NoRetiring", parse_policy({"Version": "2012-10-17", "Statement": [
    {"Effect": "Deny", "Action": "kms:RetireGrant", "Resource": "*"}]}, kind="identity"))  # fmt: skip


def to_bob(*ops: str, retiring: str | None = None) -> GrantView:
    return GrantView("g" * 64, BOB, frozenset(ops or ("Encrypt",)), retiring_principal=retiring, issuing_account=ACCT)


# (case, caller, identity policies, grant, allowed, reason)
RETIRE_CASES = [
    ("the retiring principal, without any policy", ALICE, [], to_bob(retiring=ALICE), True, "grant"),
    ("the grantee of a grant listing RetireGrant", BOB, [], to_bob("Encrypt", "RetireGrant"), True, "grant"),
    ("the grantee of a grant without RetireGrant", BOB, [], to_bob("Encrypt"), False, "implicit-deny"),
    ("the issuing account's root user", ROOT, [], to_bob(), True, "grant"),
    ("another account's root user", f"arn:aws:iam::{OTHER}:root", [], to_bob(), False, "implicit-deny"),
    ("a policy allowing kms:RetireGrant alone", ALICE, [RETIRE_ANYTHING], to_bob(), False, "implicit-deny"),
    (
        "a policy allowing kms:RetireGrant, for a grant naming another principal",
        ALICE,
        [RETIRE_ANYTHING],
        to_bob(retiring=f"arn:aws:iam::{ACCT}:user/carol"),
        False,
        "implicit-deny",
    ),
    (
        "the retiring account's principal allowed kms:RetireGrant",
        ALICE,
        [RETIRE_ANYTHING],
        to_bob(retiring=ROOT),
        True,
        "identity-policy",
    ),
    ("the retiring account's principal without that policy", ALICE, [], to_bob(retiring=ROOT), False, "implicit-deny"),
    (
        "another account's principal allowed kms:RetireGrant",
        CAROL,
        [RETIRE_ANYTHING],
        to_bob(retiring=ROOT),
        False,
        "implicit-deny",
    ),
    (
        "the retiring principal, denied by its policy",
        ALICE,
        [NO_RETIRING],
        to_bob(retiring=ALICE),
        False,
        "explicit-deny",
    ),
    ("the grantee, denied by its policy", BOB, [NO_RETIRING], to_bob("RetireGrant"), False, "explicit-deny"),
]


@pytest.mark.parametrize(
    ("case", "who", "policies", "grant", "allowed", "reason"), RETIRE_CASES, ids=[c[0] for c in RETIRE_CASES]
)
def test_it_lets_the_grant_decide_who_may_retire_it(
    case: str, who: str, policies: list[Any], grant: GrantView, allowed: bool, reason: str
) -> None:
    decision = evaluate_retire(ctx("kms:RetireGrant", who), policies, grant)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    assert decision.explanation
    if reason == "implicit-deny":
        assert decision.denial_clause == RETIRE_DENIAL_CLAUSE
