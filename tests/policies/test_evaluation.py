"""The policy engine's decisions: AWS KMS's evaluation logic, table- and property-tested.

Pure (no database, no Django). Run with
``.venv/bin/pytest -q -p no:django --noconftest tests/policies/test_evaluation*.py``
(``--noconftest`` because ``tests/conftest.py`` imports Django).

Micro-benchmark (a 20-statement key policy with conditions)::

    .venv/bin/python -m tests.policies.test_evaluation
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.evaluation import (
    Decision,
    GrantView,
    Policy,
    ProposedGrant,
    RequestContext,
    StatementRef,
    access_denied_message,
    evaluate,
    parse_policy,
)

ACCT = "111122223333"
OTHER = "444455556666"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY = f"arn:aws:kms:us-west-2:{ACCT}:key/{KEY_ID}"
ALICE = f"arn:aws:iam::{ACCT}:user/alice"
BOB = f"arn:aws:iam::{ACCT}:user/bob"
ADMIN_ROLE = f"arn:aws:iam::{ACCT}:role/ExampleAdminRole"
USER_ROLE = f"arn:aws:iam::{ACCT}:role/ExampleUserRole"
CAROL = f"arn:aws:iam::{OTHER}:user/carol"  # another account
BACKUP = f"arn:aws:iam::{ACCT}:service/backup"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def ctx(
    action: str = "kms:Encrypt",
    principal: str = ALICE,
    keys: dict[str, Any] | None = None,
    *,
    resource: str = KEY,
    resource_account: str = ACCT,
) -> RequestContext:
    account = principal.split(":")[4]
    return RequestContext(action, principal, account, resource, resource_account, NOW, keys or {})


def key_policy(*statements: dict[str, Any]) -> Policy:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)}, kind="key")


def identity(name: str, *statements: dict[str, Any]) -> tuple[str, Policy]:
    return name, parse_policy({"Version": "2012-10-17", "Statement": list(statements)}, kind="identity")


def allow(principal: Any, action: Any = "kms:*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": principal, "Action": action, "Resource": "*", **extra}


def deny(principal: Any, action: Any = "kms:*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Principal": principal, "Action": action, "Resource": "*", **extra}


ROOT_STATEMENT = {
    "Sid": "Enable IAM User Permissions",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{ACCT}:root"},
    "Action": "kms:*",
    "Resource": "*",
}
DEFAULT_KEY_POLICY = key_policy(ROOT_STATEMENT)
ALICE_ENCRYPT = identity("AliceEncrypt", {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": KEY})


# --- the AWS KMS documentation's examples ------------------------------------------

ADMIN_STATEMENT = {
    "Sid": "Allow access for Key Administrators",
    "Effect": "Allow",
    "Principal": {"AWS": ADMIN_ROLE},
    "Action": [
        "kms:Create*",
        "kms:Describe*",
        "kms:Enable*",
        "kms:List*",
        "kms:Put*",
        "kms:Update*",
        "kms:Revoke*",
        "kms:Disable*",
        "kms:Get*",
        "kms:Delete*",
        "kms:TagResource",
        "kms:UntagResource",
        "kms:ScheduleKeyDeletion",
        "kms:CancelKeyDeletion",
        "kms:RotateKeyOnDemand",
    ],
    "Resource": "*",
}
USERS_STATEMENT = {
    "Sid": "Allow use of the key",
    "Effect": "Allow",
    "Principal": {"AWS": [USER_ROLE, f"arn:aws:iam::{OTHER}:root"]},
    "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
    "Resource": "*",
}
GRANTS_STATEMENT = {
    "Sid": "Allow attachment of persistent resources",
    "Effect": "Allow",
    "Principal": {"AWS": USER_ROLE},
    "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
    "Resource": "*",
    "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
}
CONSOLE_POLICY = key_policy(ROOT_STATEMENT, ADMIN_STATEMENT, USERS_STATEMENT, GRANTS_STATEMENT)

# AWS managed key policy (aws/ebs): every principal of the account, through EC2 only.
AWS_MANAGED_POLICY = key_policy(
    {
        "Sid": "Allow access through EBS for all principals in the account that are authorized to use EBS",
        "Effect": "Allow",
        "Principal": {"AWS": "*"},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant"],
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:CallerAccount": ACCT, "kms:ViaService": "ec2.us-west-2.amazonaws.com"}},
    },
    {
        "Sid": "Allow direct access to key metadata to the account",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCT}:root"},
        "Action": ["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"],
        "Resource": "*",
    },
)
MFA_POLICY = key_policy(
    ROOT_STATEMENT,
    {
        "Sid": "MFACriticalKMSEvents",
        "Effect": "Allow",
        "Principal": {"AWS": ADMIN_ROLE},
        "Action": ["kms:DeleteImportedKeyMaterial", "kms:ScheduleKeyDeletion"],
        "Resource": "*",
        "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}},
    },
    {
        "Sid": "DenyDeletionWithoutMFA",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:ScheduleKeyDeletion",
        "Resource": "*",
        "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}},
    },
)
CONTEXT_POLICY = key_policy(
    ROOT_STATEMENT,
    {
        "Sid": "RequireAppContext",
        "Effect": "Allow",
        "Principal": {"AWS": USER_ROLE},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"],
        "Resource": "*",
        "Condition": {
            "StringEquals": {"kms:EncryptionContext:AppName": "ExampleApp"},
            "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["AppName", "FilePath"]},
        },
    },
)
CARO_IAM = identity(
    "CrossAccountUse",
    {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], "Resource": KEY},
)

DOC_EXAMPLES: list[tuple[str, Policy, list[tuple[str, Policy]], RequestContext, bool, str]] = [
    # Default key policy: the account root delegates to identity policies.
    ("default policy, IAM allows", DEFAULT_KEY_POLICY, [ALICE_ENCRYPT], ctx(), True, "identity-policy"),
    ("default policy, no IAM", DEFAULT_KEY_POLICY, [], ctx(), False, "implicit-deny"),
    (
        "default policy, IAM other action",
        DEFAULT_KEY_POLICY,
        [ALICE_ENCRYPT],
        ctx("kms:ScheduleKeyDeletion"),
        False,
        "implicit-deny",
    ),
    (
        "default policy, IAM other key",
        DEFAULT_KEY_POLICY,
        [ALICE_ENCRYPT],
        ctx(resource=KEY.replace(KEY_ID, "other")),
        False,
        "implicit-deny",
    ),
    # Console policy: administrators manage but cannot use; users use but cannot manage.
    ("admin disables", CONSOLE_POLICY, [], ctx("kms:DisableKey", ADMIN_ROLE), True, "key-policy"),
    ("admin puts policy", CONSOLE_POLICY, [], ctx("kms:PutKeyPolicy", ADMIN_ROLE), True, "key-policy"),
    ("admin cannot encrypt", CONSOLE_POLICY, [], ctx("kms:Encrypt", ADMIN_ROLE), False, "implicit-deny"),
    ("user encrypts", CONSOLE_POLICY, [], ctx("kms:Encrypt", USER_ROLE), True, "key-policy"),
    ("user reencrypts", CONSOLE_POLICY, [], ctx("kms:ReEncryptFrom", USER_ROLE), True, "key-policy"),
    (
        "user data key pair",
        CONSOLE_POLICY,
        [],
        ctx("kms:GenerateDataKeyPairWithoutPlaintext", USER_ROLE),
        True,
        "key-policy",
    ),
    (
        "user cannot schedule deletion",
        CONSOLE_POLICY,
        [],
        ctx("kms:ScheduleKeyDeletion", USER_ROLE),
        False,
        "implicit-deny",
    ),
    (
        "user grants for AWS resource",
        CONSOLE_POLICY,
        [],
        ctx("kms:CreateGrant", USER_ROLE, {"kms:GrantIsForAWSResource": True}),
        True,
        "key-policy",
    ),
    ("user grants for itself", CONSOLE_POLICY, [], ctx("kms:CreateGrant", USER_ROLE), False, "implicit-deny"),
    # Cross-account: the key policy names the account; its IAM policy must allow too.
    ("cross-account with IAM", CONSOLE_POLICY, [CARO_IAM], ctx("kms:Decrypt", CAROL), True, "identity-policy"),
    ("cross-account without IAM", CONSOLE_POLICY, [], ctx("kms:Decrypt", CAROL), False, "implicit-deny"),
    (
        "cross-account, action not in key policy",
        CONSOLE_POLICY,
        [identity("All", {"Effect": "Allow", "Action": "kms:*", "Resource": "*"})],
        ctx("kms:DisableKey", CAROL),
        False,
        "implicit-deny",
    ),
    ("cross-account, not named", DEFAULT_KEY_POLICY, [CARO_IAM], ctx("kms:Decrypt", CAROL), False, "implicit-deny"),
    # AWS managed keys: only through the integrated service, only from the account.
    (
        "via EC2",
        AWS_MANAGED_POLICY,
        [],
        ctx(keys={"kms:ViaService": "ec2.us-west-2.amazonaws.com"}),
        True,
        "key-policy",
    ),
    ("direct call", AWS_MANAGED_POLICY, [], ctx(), False, "implicit-deny"),
    (
        "via another service",
        AWS_MANAGED_POLICY,
        [],
        ctx(keys={"kms:ViaService": "rds.us-west-2.amazonaws.com"}),
        False,
        "implicit-deny",
    ),
    (
        "via EC2 from another account",
        AWS_MANAGED_POLICY,
        [CARO_IAM],
        ctx("kms:Decrypt", CAROL, {"kms:ViaService": "ec2.us-west-2.amazonaws.com"}),
        False,
        "implicit-deny",
    ),
    (
        "describe with IAM",
        AWS_MANAGED_POLICY,
        [identity("Read", {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*"})],
        ctx("kms:DescribeKey"),
        True,
        "identity-policy",
    ),
    # MFA for ScheduleKeyDeletion.
    (
        "delete with MFA",
        MFA_POLICY,
        [],
        ctx("kms:ScheduleKeyDeletion", ADMIN_ROLE, {"aws:MultiFactorAuthPresent": True}),
        True,
        "key-policy",
    ),
    (
        "delete without MFA",
        MFA_POLICY,
        [],
        ctx("kms:ScheduleKeyDeletion", ADMIN_ROLE, {"aws:MultiFactorAuthPresent": False}),
        False,
        "explicit-deny",
    ),
    (
        "delete, MFA key absent (BoolIfExists denies)",
        MFA_POLICY,
        [identity("Admin", {"Effect": "Allow", "Action": "kms:*", "Resource": "*"})],
        ctx("kms:ScheduleKeyDeletion", ALICE),
        False,
        "explicit-deny",
    ),
    (
        "delete imported material with MFA",
        MFA_POLICY,
        [],
        ctx("kms:DeleteImportedKeyMaterial", ADMIN_ROLE, {"aws:MultiFactorAuthPresent": "true"}),
        True,
        "key-policy",
    ),
    (
        "delete imported material, MFA key absent",
        MFA_POLICY,
        [],
        ctx("kms:DeleteImportedKeyMaterial", ADMIN_ROLE),
        False,
        "implicit-deny",
    ),
    (
        "delete via IAM without MFA",
        MFA_POLICY,
        [identity("Admin", {"Effect": "Allow", "Action": "kms:*", "Resource": "*"})],
        ctx("kms:ScheduleKeyDeletion", ALICE, {"aws:MultiFactorAuthPresent": "false"}),
        False,
        "explicit-deny",
    ),
    # Encryption context conditions.
    (
        "context matches",
        CONTEXT_POLICY,
        [],
        ctx(
            "kms:Encrypt",
            USER_ROLE,
            {"kms:EncryptionContext:AppName": "ExampleApp", "kms:EncryptionContextKeys": ["AppName"]},
        ),
        True,
        "key-policy",
    ),
    (
        "context value differs",
        CONTEXT_POLICY,
        [],
        ctx(
            "kms:Encrypt",
            USER_ROLE,
            {"kms:EncryptionContext:AppName": "Other", "kms:EncryptionContextKeys": ["AppName"]},
        ),
        False,
        "implicit-deny",
    ),
    (
        "context extra key",
        CONTEXT_POLICY,
        [],
        ctx(
            "kms:Encrypt",
            USER_ROLE,
            {"kms:EncryptionContext:AppName": "ExampleApp", "kms:EncryptionContextKeys": ["AppName", "Secret"]},
        ),
        False,
        "implicit-deny",
    ),
    ("no context", CONTEXT_POLICY, [], ctx("kms:Encrypt", USER_ROLE), False, "implicit-deny"),
]


@pytest.mark.parametrize(
    ("name", "policy", "identities", "request_ctx", "allowed", "reason"),
    DOC_EXAMPLES,
    ids=[example[0] for example in DOC_EXAMPLES],
)
def test_it_decides_the_aws_documentation_examples(
    name: str,
    policy: Policy,
    identities: list[tuple[str, Policy]],
    request_ctx: RequestContext,
    allowed: bool,
    reason: str,
) -> None:
    decision = evaluate(request_ctx, policy, identities)
    assert (decision.allowed, decision.reason) == (allowed, reason), decision.explanation
    assert decision.explanation


# --- which statement decided, and why -------------------------------------------------


def test_it_names_the_deciding_statements() -> None:
    d = evaluate(ctx(), DEFAULT_KEY_POLICY, [ALICE_ENCRYPT])
    assert d.statement == StatementRef("identity-policy:AliceEncrypt", None, 0)
    assert d.supporting == StatementRef("key-policy", "Enable IAM User Permissions", 0)
    assert "Enable IAM User Permissions" in d.explanation

    d = evaluate(ctx("kms:Encrypt", USER_ROLE), CONSOLE_POLICY, [])
    assert d.statement == StatementRef("key-policy", "Allow use of the key", 2)
    assert d.supporting is None

    d = evaluate(ctx("kms:Decrypt", CAROL), CONSOLE_POLICY, [CARO_IAM])
    assert d.statement == StatementRef("identity-policy:CrossAccountUse", None, 0)
    assert d.supporting == StatementRef("key-policy", "Allow use of the key", 2)

    d = evaluate(ctx("kms:ScheduleKeyDeletion", ADMIN_ROLE), MFA_POLICY, [])
    assert d == Decision(
        False,
        "explicit-deny",
        StatementRef("key-policy", "DenyDeletionWithoutMFA", 2),
        d.explanation,
        denial_clause="with an explicit deny in a resource-based policy",
    )


@pytest.mark.parametrize(
    ("policy", "identities", "request_ctx", "clause"),
    [
        (DEFAULT_KEY_POLICY, [], ctx(), "because no identity-based policy allows the kms:Encrypt action"),
        (
            key_policy(allow({"AWS": BOB})),
            [ALICE_ENCRYPT],
            ctx(),
            "because no resource-based policy allows the kms:Encrypt action",
        ),
        (
            DEFAULT_KEY_POLICY,
            [identity("D", {"Effect": "Deny", "Action": "kms:*", "Resource": "*"})],
            ctx(),
            "with an explicit deny in an identity-based policy",
        ),
        (
            None,
            [],
            ctx("kms:CreateKey", resource="*"),
            "because no identity-based policy allows the kms:CreateKey action",
        ),
    ],
)
def test_it_words_denials_as_aws_does(
    policy: Policy | None, identities: list[tuple[str, Policy]], request_ctx: RequestContext, clause: str
) -> None:
    d = evaluate(request_ctx, policy, identities)
    assert not d.allowed and d.denial_clause == clause
    assert access_denied_message(request_ctx, d) == (
        f"User: {request_ctx.principal_arn} is not authorized to perform: {request_ctx.action} "
        f"on resource: {request_ctx.resource_arn} {clause}"
    )


def test_it_explains_a_key_policy_that_does_not_enable_iam() -> None:
    d = evaluate(ctx(), key_policy(allow({"AWS": BOB})), [ALICE_ENCRYPT])
    assert "does not let the account use identity-based policies" in d.explanation


# --- the decision rules ----------------------------------------------------------------


def test_it_lets_account_level_actions_be_decided_by_identity_policies_alone() -> None:
    create = identity("Create", {"Effect": "Allow", "Action": ["kms:CreateKey", "kms:List*"], "Resource": "*"})
    assert evaluate(ctx("kms:CreateKey", resource="*"), None, [create]).reason == "identity-policy"
    assert evaluate(ctx("kms:ListKeys", resource="*"), None, [create]).allowed
    assert not evaluate(ctx("kms:GenerateRandom", resource="*"), None, [create]).allowed
    # A key-scoped Resource does not cover an account-level action.
    scoped = identity(
        "Scoped", {"Effect": "Allow", "Action": "kms:CreateKey", "Resource": f"arn:aws:kms:*:{ACCT}:key/*"}
    )
    assert not evaluate(ctx("kms:CreateKey", resource="*"), None, [scoped]).allowed


def test_it_requires_the_identity_policy_for_other_accounts_even_with_a_star_principal() -> None:
    open_policy = key_policy(allow("*"))
    assert evaluate(ctx(), open_policy, []).reason == "key-policy"  # same account: the key policy suffices
    assert not evaluate(ctx("kms:Encrypt", CAROL), open_policy, []).allowed
    d = evaluate(ctx("kms:Encrypt", CAROL), open_policy, [CARO_IAM])
    assert (d.allowed, d.reason) == (True, "key-policy")
    assert d.supporting == StatementRef("identity-policy:CrossAccountUse", None, 0)
    # Naming the external principal exactly does not waive its account's IAM policy either.
    named = key_policy(allow({"AWS": CAROL}))
    assert not evaluate(ctx("kms:Encrypt", CAROL), named, []).allowed
    assert evaluate(ctx("kms:Encrypt", CAROL), named, [CARO_IAM]).allowed


def test_it_does_not_let_identity_policies_alone_open_a_key() -> None:
    everything = identity("Everything", {"Effect": "Allow", "Action": "*", "Resource": "*"})
    assert not evaluate(ctx(), key_policy(allow({"AWS": BOB})), [everything]).allowed
    assert not evaluate(ctx("kms:Encrypt", CAROL), key_policy(ROOT_STATEMENT), [everything]).allowed


def test_it_treats_the_account_root_user_as_the_account() -> None:
    root = f"arn:aws:iam::{ACCT}:root"
    assert evaluate(ctx("kms:PutKeyPolicy", root), DEFAULT_KEY_POLICY, []).allowed
    assert evaluate(ctx("kms:CreateKey", root, resource="*"), None, []).allowed
    assert not evaluate(ctx("kms:Encrypt", root), key_policy(allow({"AWS": BOB})), []).allowed


def test_it_matches_service_principals_by_convention() -> None:
    policy = key_policy(allow({"Service": "backup.amazonaws.com"}, "kms:Decrypt"))
    assert evaluate(ctx("kms:Decrypt", BACKUP), policy, []).reason == "key-policy"
    assert evaluate(ctx("kms:Decrypt", BACKUP), key_policy(allow({"Service": "backup"}, "kms:Decrypt")), []).allowed
    assert not evaluate(ctx("kms:Decrypt", f"arn:aws:iam::{ACCT}:service/logs"), policy, []).allowed
    assert not evaluate(ctx("kms:Decrypt", f"arn:aws:iam::{ACCT}:user/backup"), policy, []).allowed
    assert evaluate(ctx("kms:Decrypt", BACKUP), key_policy(allow({"AWS": BACKUP}, "kms:Decrypt")), []).allowed


def test_it_applies_key_policy_denies_to_every_principal_of_a_named_account() -> None:
    policy = key_policy(allow("*"), deny({"AWS": ACCT}, "kms:Decrypt"))
    assert evaluate(ctx("kms:Decrypt", BOB), policy, []).reason == "explicit-deny"
    assert evaluate(ctx("kms:Encrypt", BOB), policy, []).allowed
    assert evaluate(ctx("kms:Decrypt", CAROL), policy, [CARO_IAM]).allowed


def test_it_ignores_key_policy_statements_without_a_principal() -> None:
    # Only parse_policy(kind=None) lets such a statement in; it then names nobody.
    lax = parse_policy({"Statement": {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}})
    assert not evaluate(ctx(), lax, []).allowed


@pytest.mark.parametrize(
    ("element", "value", "action", "principal", "resource", "matches"),
    [
        ("NotAction", "kms:Decrypt", "kms:Encrypt", ALICE, KEY, True),
        ("NotAction", "kms:Decrypt", "kms:Decrypt", ALICE, KEY, False),
        ("NotAction", "kms:*crypt", "kms:ENCRYPT", ALICE, KEY, False),
        ("NotPrincipal", {"AWS": BOB}, "kms:Encrypt", ALICE, KEY, True),
        ("NotPrincipal", {"AWS": ALICE}, "kms:Encrypt", ALICE, KEY, False),
        ("NotPrincipal", {"AWS": f"arn:aws:iam::{ACCT}:root"}, "kms:Encrypt", ALICE, KEY, False),
        ("NotPrincipal", {"AWS": OTHER}, "kms:Encrypt", ALICE, KEY, True),
        ("NotResource", f"arn:aws:kms:*:{ACCT}:key/other", "kms:Encrypt", ALICE, KEY, True),
        ("NotResource", f"arn:aws:kms:*:{ACCT}:key/*", "kms:Encrypt", ALICE, KEY, False),
    ],
)
def test_it_inverts_with_not_elements(
    element: str, value: Any, action: str, principal: str, resource: str, matches: bool
) -> None:
    statement: dict[str, Any] = {"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"}
    plain = element[3:]
    del statement[plain]
    statement[element] = value
    policy = key_policy(allow("*"), statement)
    d = evaluate(ctx(action, principal, resource=resource), policy, [])
    assert (d.reason == "explicit-deny") is matches


# --- properties -------------------------------------------------------------------------

ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey", "kms:ScheduleKeyDeletion", "kms:CreateGrant"]
ACTION_PATTERNS = [*ACTIONS, "kms:*", "*", "kms:*crypt", "kms:Describe*", "kms:?ecrypt"]
PRINCIPALS = [ALICE, BOB, CAROL, BACKUP]
PRINCIPAL_ELEMENTS: list[Any] = [
    "*",
    {"AWS": "*"},
    {"AWS": ALICE},
    {"AWS": [BOB, CAROL]},
    {"AWS": ACCT},
    {"AWS": f"arn:aws:iam::{OTHER}:root"},
    {"Service": "backup.amazonaws.com"},
]
RESOURCES = ["*", KEY, f"arn:aws:kms:*:{ACCT}:key/*", f"arn:aws:kms:*:{OTHER}:key/*"]
CONDITIONS: list[dict[str, Any] | None] = [
    None,
    {"Bool": {"aws:MultiFactorAuthPresent": "true"}},
    {"StringEquals": {"kms:EncryptionContext:tenant": "a"}},
    {"StringNotEqualsIfExists": {"kms:ViaService": "ec2.us-west-2.amazonaws.com"}},
]


@st.composite
def statements(draw: st.DrawFn, *, effect: str, with_principal: bool) -> dict[str, Any]:
    s: dict[str, Any] = {"Effect": effect}
    if with_principal:
        s["NotPrincipal" if draw(st.booleans()) and effect == "Deny" else "Principal"] = draw(
            st.sampled_from(PRINCIPAL_ELEMENTS)
        )
    s["NotAction" if draw(st.integers(0, 4)) == 0 else "Action"] = draw(
        st.lists(st.sampled_from(ACTION_PATTERNS), min_size=1, max_size=3)
    )
    s["NotResource" if draw(st.integers(0, 4)) == 0 else "Resource"] = draw(st.sampled_from(RESOURCES))
    condition = draw(st.sampled_from(CONDITIONS))
    if condition:
        s["Condition"] = condition
    return s


REQUEST_KEYS = st.fixed_dictionaries(
    {},
    optional={
        "aws:MultiFactorAuthPresent": st.booleans(),
        "kms:EncryptionContext:tenant": st.sampled_from(["a", "b"]),
        "kms:ViaService": st.just("ec2.us-west-2.amazonaws.com"),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    kp=st.lists(statements(effect="Allow", with_principal=True), max_size=4),
    ip=st.lists(statements(effect="Allow", with_principal=False), max_size=3),
    extra_denies=st.lists(statements(effect="Deny", with_principal=True), max_size=2),
    action=st.sampled_from(ACTIONS),
    principal=st.sampled_from(PRINCIPALS),
    keys=REQUEST_KEYS,
    deny_in_identity=st.booleans(),
    position=st.integers(0, 10),
)
def test_it_lets_an_applicable_deny_override_everything(
    kp: list[dict[str, Any]],
    ip: list[dict[str, Any]],
    extra_denies: list[dict[str, Any]],
    action: str,
    principal: str,
    keys: dict[str, Any],
    deny_in_identity: bool,
    position: int,
) -> None:
    request = ctx(action, principal, keys)
    # A Deny built to apply to this request: its action, its principal, its key.
    blocker: dict[str, Any] = {"Effect": "Deny", "Sid": "Blocker", "Action": action.upper(), "Resource": KEY}
    grants = [GrantView("g1", principal, frozenset({action[4:]}))]
    kp_statements = kp + extra_denies
    ip_statements = list(ip)
    if deny_in_identity:
        ip_statements.insert(position % (len(ip_statements) + 1), blocker)
    else:
        blocker["Principal"] = {"AWS": principal} if not principal.endswith("backup") else {"Service": "backup"}
        kp_statements.insert(position % (len(kp_statements) + 1), blocker)
    policy = key_policy(*kp_statements) if kp_statements else key_policy(ROOT_STATEMENT)
    identities = [identity("Mine", *ip_statements)] if ip_statements else []
    # For CreateGrant, the grant it would create (the same operation: one the grant may pass on).
    proposed = ProposedGrant(grants[0].operations)
    d = evaluate(request, policy, identities, grants, None, proposed)
    assert not d.allowed and d.reason == "explicit-deny"
    assert d.statement is not None and d.statement.source in ("key-policy", "identity-policy:Mine")
    # Without the blocker (and the random denies) the same grant allows: the deny did it.
    without = [s for s in kp_statements if s["Effect"] == "Allow"] or [ROOT_STATEMENT]
    allowed_ip = [identity("Mine", *ip)] if ip else []
    assert evaluate(request, key_policy(*without), allowed_ip, grants, None, proposed).allowed


@settings(max_examples=300, deadline=None)
@given(
    kp=st.lists(statements(effect="Allow", with_principal=True), min_size=1, max_size=4),
    ip=st.lists(statements(effect="Allow", with_principal=False), max_size=3),
    action=st.sampled_from(ACTIONS),
    principal=st.sampled_from(PRINCIPALS),
    keys=REQUEST_KEYS,
)
def test_it_is_monotonic_in_allows_and_never_allows_without_the_key_policy(
    kp: list[dict[str, Any]], ip: list[dict[str, Any]], action: str, principal: str, keys: dict[str, Any]
) -> None:
    request = ctx(action, principal, keys)
    identities = [identity("Mine", *ip)] if ip else []
    d = evaluate(request, key_policy(*kp), identities)
    # Adding an allow statement never turns an allow into a deny.
    more = evaluate(request, key_policy(*kp, allow({"AWS": BOB}, "kms:Decrypt")), identities)
    assert more.allowed or not d.allowed
    if d.allowed:
        assert d.statement is not None
        # Whatever allowed it, the key policy had a say (directly or as the supporting statement).
        sources = {d.statement.source, d.supporting.source if d.supporting else None}
        assert "key-policy" in sources
        if principal == CAROL:  # cross-account: both halves
            assert any(s and s.startswith("identity-policy:") for s in sources)


@settings(max_examples=200, deadline=None)
@given(
    patterns=st.lists(st.sampled_from(ACTION_PATTERNS), min_size=1, max_size=3),
    action=st.sampled_from(ACTIONS),
    resource=st.sampled_from(RESOURCES),
)
def test_it_makes_not_elements_the_complement(patterns: list[str], action: str, resource: str) -> None:
    def applies(statement: dict[str, Any], principal: str = ALICE) -> bool:
        return bool(evaluate(ctx(action, principal), key_policy(statement), []).allowed)

    base: dict[str, Any] = {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}
    assert applies({**base, "Action": patterns}) is not applies(
        {"Effect": "Allow", "Principal": "*", "NotAction": patterns, "Resource": "*"}
    )
    assert applies({**base, "Resource": resource}) is not applies(
        {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "NotResource": resource}
    )
    for principal in PRINCIPALS[:2]:  # same account: a key policy allow suffices
        named = {**base, "Principal": {"AWS": BOB}}
        inverted = {"Effect": "Allow", "NotPrincipal": {"AWS": BOB}, "Action": "kms:*", "Resource": "*"}
        assert applies(named, principal) is not applies(inverted, principal)


# --- grants ---------------------------------------------------------------------------

TENANT_A = {"tenant": "a"}


@pytest.mark.parametrize(
    ("grant", "action", "context", "allowed"),
    [
        (GrantView("g", ALICE, frozenset({"Encrypt"})), "kms:Encrypt", None, True),
        (GrantView("g", ALICE, frozenset({"Encrypt"})), "kms:Decrypt", None, False),
        (GrantView("g", BOB, frozenset({"Encrypt"})), "kms:Encrypt", None, False),
        (GrantView("g", ALICE, frozenset({"Encrypt"}), TENANT_A), "kms:Encrypt", {"tenant": "a", "x": "y"}, True),
        (GrantView("g", ALICE, frozenset({"Encrypt"}), TENANT_A), "kms:Encrypt", {"tenant": "b"}, False),
        (GrantView("g", ALICE, frozenset({"Encrypt"}), TENANT_A), "kms:Encrypt", None, False),
        (
            GrantView("g", ALICE, frozenset({"Encrypt"}), TENANT_A),
            "kms:Encrypt",
            {"TENANT": "a"},
            True,
        ),  # keys: any case
        (
            GrantView("g", ALICE, frozenset({"Encrypt"}), TENANT_A),
            "kms:Encrypt",
            {"tenant": "A"},
            False,
        ),  # values: exact
        (GrantView("g", ALICE, frozenset({"Decrypt"}), None, TENANT_A), "kms:Decrypt", {"tenant": "a"}, True),
        (
            GrantView("g", ALICE, frozenset({"Decrypt"}), None, TENANT_A),
            "kms:Decrypt",
            {"tenant": "a", "x": "y"},
            False,
        ),
        (GrantView("g", ALICE, frozenset({"Decrypt"}), None, {}), "kms:Decrypt", None, True),
        (GrantView("g", ALICE, frozenset({"Decrypt"}), None, {}), "kms:Decrypt", {"x": "y"}, False),
        # Constraints do not apply to operations without an encryption context.
        (GrantView("g", ALICE, frozenset({"DescribeKey"}), TENANT_A), "kms:DescribeKey", None, True),
        (GrantView("g", ALICE, frozenset({"RetireGrant"}), None, TENANT_A), "kms:RetireGrant", None, True),
        (GrantView("g", "backup.amazonaws.com", frozenset({"Decrypt"})), "kms:Decrypt", None, False),
        (GrantView("g", ALICE, frozenset({"Encrypt"})), "kms:encrypt", None, False),  # operation names are exact
    ],
)
def test_it_allows_by_grant_within_its_constraints(
    grant: GrantView, action: str, context: dict[str, str] | None, allowed: bool
) -> None:
    d = evaluate(ctx(action), key_policy(allow({"AWS": BOB})), [], [grant], context)
    assert d.allowed is allowed
    if allowed:
        assert d.reason == "grant" and d.statement == StatementRef("grant:g", None, None)
    elif grant.encryption_context_subset or grant.encryption_context_equals:
        assert "constraint" in d.explanation or action[4:] not in grant.operations


def test_it_skips_constraints_for_asymmetric_keys_and_reaches_service_grantees() -> None:
    grant = GrantView("g", ALICE, frozenset({"Encrypt"}), TENANT_A)
    request = ctx("kms:Encrypt", keys={"kms:KeySpec": "RSA_2048"})
    assert evaluate(request, DEFAULT_KEY_POLICY, [], [grant]).reason == "grant"
    service_grant = GrantView("s", "backup.amazonaws.com", frozenset({"Decrypt"}))
    assert evaluate(ctx("kms:Decrypt", BACKUP), DEFAULT_KEY_POLICY, [], [service_grant]).reason == "grant"


def test_it_lets_a_grant_serve_another_account_and_a_deny_override_it() -> None:
    grant = GrantView("g", CAROL, frozenset({"Decrypt"}))
    assert evaluate(ctx("kms:Decrypt", CAROL), DEFAULT_KEY_POLICY, [], [grant]).reason == "grant"
    blocked = key_policy(ROOT_STATEMENT, deny({"AWS": OTHER}, "kms:Decrypt"))
    assert evaluate(ctx("kms:Decrypt", CAROL), blocked, [], [grant]).reason == "explicit-deny"
    own_deny = identity("NoDecrypt", {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"})
    assert evaluate(ctx("kms:Decrypt", CAROL), DEFAULT_KEY_POLICY, [own_deny], [grant]).reason == "explicit-deny"


def test_it_prefers_the_key_policy_over_a_grant_when_both_allow() -> None:
    grant = GrantView("g", USER_ROLE, frozenset({"Encrypt"}))
    assert evaluate(ctx("kms:Encrypt", USER_ROLE), CONSOLE_POLICY, [], [grant]).reason == "key-policy"


# --- micro-benchmark ----------------------------------------------------------------------


def benchmark_policy(*, worst: bool = False) -> tuple[Policy, list[tuple[str, Policy]], RequestContext]:
    """A 20-statement key policy with conditions, the caller allowed by an identity policy.

    ``worst``: every statement names the caller (``*``), so every condition
    block is evaluated (each fails on its last operator), and the IP
    conditions differ per statement, so the per-request memo cannot share them.
    """
    statements: list[dict[str, Any]] = [ROOT_STATEMENT]
    for i in range(19):
        statements.append(
            {
                "Sid": f"S{i}",
                "Effect": "Deny" if i % 5 == 0 else "Allow",
                "Principal": "*"
                if worst
                else {"AWS": [f"arn:aws:iam::{ACCT}:role/app-{i}", f"arn:aws:iam::{ACCT}:user/u{i}"]},
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"] if i % 2 else "kms:*",
                "Resource": "*",
                "Condition": {
                    # Distinct per statement in the worst case, so no result is shared.
                    "IpAddress": {"aws:SourceIp": [f"10.{i}.0.0/16" if worst else "10.0.0.0/8", "10.0.0.0/8"]},
                    "BoolIfExists": {"aws:SecureTransport": "true"},
                    "StringEquals": {f"kms:EncryptionContext:tenant{i}": [f"t{i}", "shared"]},
                },
            }
        )
    policy = parse_policy(json.dumps({"Version": "2012-10-17", "Statement": statements}), kind="key")
    identities = [ALICE_ENCRYPT]
    request = ctx(
        "kms:Encrypt",
        ALICE,
        {
            "aws:SourceIp": "10.1.2.3",
            "aws:SecureTransport": True,
            # In the worst case no statement's context condition holds.
            "kms:EncryptionContext:tenant7": "t99" if worst else "t7",
            "kms:EncryptionContextKeys": ["tenant7"],
        },
    )
    return policy, identities, request


def test_it_decides_the_benchmark_requests() -> None:
    policy, identities, request = benchmark_policy()
    assert evaluate(request, policy, identities).reason == "identity-policy"
    policy, identities, request = benchmark_policy(worst=True)
    assert evaluate(request, policy, identities).reason == "identity-policy"


if __name__ == "__main__":
    import timeit

    from policies.evaluation.policy import _parse_text

    policy, identities, request = benchmark_policy()
    worst_policy, _, worst_request = benchmark_policy(worst=True)
    text = policy.text
    for label, fn in [
        ("evaluate (20-statement key policy, identity-policy allow)", lambda: evaluate(request, policy, identities)),
        (
            "evaluate (same, every statement names the caller: all conditions run)",
            lambda: evaluate(worst_request, worst_policy, identities),
        ),
        (
            "evaluate (grant allow, same policy)",
            lambda: evaluate(
                request,
                policy,
                [],
                [GrantView("g", ALICE, frozenset({"Encrypt"}), {"tenant7": "t7"})],
                {"tenant7": "t7"},
            ),
        ),
        ("RequestContext(...) construction", lambda: ctx("kms:Encrypt", ALICE, {"aws:SourceIp": "10.1.2.3"})),
        ("parse_policy (cached text)", lambda: parse_policy(text, kind="key")),
        ("parse_policy (uncached, 20 statements)", lambda: _parse_text.__wrapped__(text, "key")),
    ]:
        runs, total = timeit.Timer(fn).autorange()
        best = min(timeit.repeat(fn, number=runs, repeat=5)) / runs
        print(f"{label}: {best * 1e6:.1f} µs")
