"""The built-in rules, table-driven: compliant and non-compliant cases over hand-built facts (no database)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from compliance.rules import (
    RULES,
    AccessKeyFact,
    GrantFact,
    KeyFact,
    PolicyFact,
    PrincipalFact,
    Settings,
    Severity,
    Snapshot,
)
from keys.services.common import MFA_PROTECTED_ACTIONS as TEMPLATE_MFA_ACTIONS
from keys.services.common import mfa_key_policy

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ACCT = "111122223333"
OTHER = "444455556666"
ALICE = f"arn:aws:iam::{ACCT}:user/alice"
BOB = f"arn:aws:iam::{ACCT}:user/bob"
OUTSIDER = f"arn:aws:iam::{OTHER}:user/eve"
CRYPTO = frozenset({"Encrypt", "Decrypt", "GenerateDataKey", "ReEncrypt", "Sign"})


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


ROOT_POLICY = policy(
    {
        "Sid": "Root",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCT}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }
)


def key(**kw: Any) -> KeyFact:
    base: dict[str, Any] = {
        "id": "1234abcd-12ab-34cd-56ef-1234567890ab",
        "account_id": ACCT,
        "region": "us-east-1",
        "state": "Enabled",
        "key_spec": "SYMMETRIC_DEFAULT",
        "key_usage": "ENCRYPT_DECRYPT",
        "origin": "AWS_KMS",
        "policy": ROOT_POLICY,
        "created_at": NOW - timedelta(days=400),
        "rotation_enabled": True,
        "rotation_period_days": 365,
        "last_rotated_at": NOW - timedelta(days=100),
    }
    base.update(kw)
    return KeyFact(**base)


def principal(arn: str = ALICE, *docs: str, roles: tuple[str, ...] = (), mfa: bool = False, **kw: Any) -> PrincipalFact:
    name = arn.rsplit("/", 1)[-1]
    policies = tuple(PolicyFact(f"p{i}", d, "inline") for i, d in enumerate(docs))
    return PrincipalFact(
        arn=arn,
        account_id=arn.split(":")[4],
        type=kw.pop("type", "user"),
        name=name,
        policies=policies,
        roles=roles,
        has_user=bool(roles) or mfa,
        has_mfa_device=mfa,
        **kw,
    )


def grant(grantee: str = BOB, ops: tuple[str, ...] = ("Decrypt",), age_days: int = 200) -> GrantFact:
    return GrantFact(
        grant_id="g" * 64,
        key_id=key().id,
        key_account_id=ACCT,
        grantee_principal=grantee,
        operations=ops,
        created_at=NOW - timedelta(days=age_days),
    )


def _without_statement(document: str, sid: str) -> str:
    doc = json.loads(document)
    doc["Statement"] = [st for st in doc["Statement"] if st.get("Sid") != sid]
    return json.dumps(doc)


def snap(**kw: Any) -> Snapshot:
    kw.setdefault("crypto_operations", CRYPTO)
    return Snapshot(now=NOW, **kw)


def verdicts(rule_id: str, snapshot: Snapshot) -> list[bool]:
    return [r.compliant for r in RULES[rule_id].evaluate(snapshot)]


def used(k: KeyFact, who: str, days_ago: int, op: str = "Decrypt") -> dict[tuple[str, str, str], datetime]:
    return {(k.id, who, op): NOW - timedelta(days=days_ago)}


ALLOW_ALL_KMS = policy({"Effect": "Allow", "Action": "kms:*", "Resource": "*"})

CASES: list[tuple[str, str, Snapshot, list[bool]]] = [
    # rotation enabled
    ("kms-rotation-enabled", "rotation on", snap(keys=(key(),)), [True]),
    ("kms-rotation-enabled", "rotation off", snap(keys=(key(rotation_enabled=False),)), [False]),
    (
        "kms-rotation-enabled",
        "disabled key out of scope",
        snap(keys=(key(state="Disabled", rotation_enabled=False),)),
        [],
    ),
    (
        "kms-rotation-enabled",
        "asymmetric out of scope",
        snap(keys=(key(key_spec="RSA_2048", key_usage="SIGN_VERIFY", rotation_enabled=False),)),
        [],
    ),
    ("kms-rotation-enabled", "imported out of scope", snap(keys=(key(origin="EXTERNAL", rotation_enabled=False),)), []),
    # cryptoperiod
    ("kms-rotation-cryptoperiod", "yearly rotation", snap(keys=(key(),)), [True]),
    ("kms-rotation-cryptoperiod", "period beyond 2 years", snap(keys=(key(rotation_period_days=1000),)), [False]),
    (
        "kms-rotation-cryptoperiod",
        "never rotated for 3 years",
        snap(keys=(key(rotation_enabled=False, last_rotated_at=None, created_at=NOW - timedelta(days=1100)),)),
        [False],
    ),
    (
        "kms-rotation-cryptoperiod",
        "signing key 2.5 years old",
        snap(
            keys=(
                key(
                    key_spec="ECC_NIST_P256",
                    key_usage="SIGN_VERIFY",
                    rotation_enabled=False,
                    last_rotated_at=None,
                    created_at=NOW - timedelta(days=900),
                ),
            )
        ),
        [True],
    ),
    (
        "kms-rotation-cryptoperiod",
        "signing key 4 years old",
        snap(
            keys=(
                key(
                    key_spec="ECC_NIST_P256",
                    key_usage="SIGN_VERIFY",
                    rotation_enabled=False,
                    last_rotated_at=None,
                    created_at=NOW - timedelta(days=1500),
                ),
            )
        ),
        [False],
    ),
    # pending deletion
    ("kms-key-not-pending-deletion", "enabled", snap(keys=(key(),)), [True]),
    (
        "kms-key-not-pending-deletion",
        "pending",
        snap(keys=(key(state="PendingDeletion", deletion_date=NOW + timedelta(days=7)),)),
        [False],
    ),
    # public access
    ("kms-key-policy-no-public-access", "own account root", snap(keys=(key(),)), [True]),
    (
        "kms-key-policy-no-public-access",
        "Principal *",
        snap(
            keys=(key(policy=policy({"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"})),)
        ),
        [False],
    ),
    (
        "kms-key-policy-no-public-access",
        "Principal * with a condition",
        snap(
            keys=(
                key(
                    policy=policy(
                        {
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": "kms:Decrypt",
                            "Resource": "*",
                            "Condition": {"StringEquals": {"kms:CallerAccount": ACCT}},
                        }
                    )
                ),
            )
        ),
        [True],
    ),
    (
        "kms-key-policy-no-public-access",
        "other account root",
        snap(
            keys=(
                key(
                    policy=policy(
                        {
                            "Effect": "Allow",
                            "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
                            "Action": ["kms:Encrypt", "kms:Decrypt"],
                            "Resource": "*",
                        }
                    )
                ),
            )
        ),
        [False],
    ),
    (
        "kms-key-policy-no-public-access",
        "other account user",
        snap(
            keys=(
                key(
                    policy=policy(
                        {"Effect": "Allow", "Principal": {"AWS": OUTSIDER}, "Action": "kms:Decrypt", "Resource": "*"}
                    )
                ),
            )
        ),
        [False],
    ),
    (
        "kms-key-policy-no-public-access",
        "public but explicitly denied",
        snap(
            keys=(
                key(
                    policy=policy(
                        {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
                        {
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "kms:*",
                            "Resource": "*",
                            "Condition": {"StringNotEquals": {"aws:PrincipalAccount": ACCT}},
                        },
                    )
                ),
            )
        ),
        [True],
    ),
    # grants outside the account
    ("kms-grant-external-principal", "own account", snap(grants=(grant(),)), [True]),
    ("kms-grant-external-principal", "service principal", snap(grants=(grant("logs.amazonaws.com"),)), [True]),
    ("kms-grant-external-principal", "other account", snap(grants=(grant(OUTSIDER),)), [False]),
    # identity policies on all keys
    (
        "iam-policy-blocked-kms-actions",
        "specific key",
        snap(
            principals=(principal(ALICE, policy({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key().arn})),)
        ),
        [True],
    ),
    (
        "iam-policy-blocked-kms-actions",
        "Decrypt on *",
        snap(principals=(principal(ALICE, policy({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"})),)),
        [False],
    ),
    (
        "iam-policy-blocked-kms-actions",
        "kms:* on key/*",
        snap(
            principals=(
                principal(
                    ALICE, policy({"Effect": "Allow", "Action": "kms:*", "Resource": f"arn:aws:kms:*:{ACCT}:key/*"})
                ),
            )
        ),
        [False],
    ),
    (
        "iam-policy-blocked-kms-actions",
        "Encrypt only on *",
        snap(principals=(principal(ALICE, policy({"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"})),)),
        [True],
    ),
    (
        "iam-policy-blocked-kms-actions",
        "roles are not customer policies",
        snap(
            principals=(
                PrincipalFact(
                    ALICE, ACCT, "user", "alice", (PolicyFact("kmsweb-role/administrator", ALLOW_ALL_KMS, "role"),)
                ),
            )
        ),
        [True],
    ),
    # non-administrator with PutKeyPolicy
    ("kms-key-policy-admin-only", "root only", snap(keys=(key(),)), [True]),
    (
        "kms-key-policy-admin-only",
        "user with kms:*",
        snap(
            keys=(
                key(
                    policy=policy({"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": "kms:*", "Resource": "*"})
                ),
            ),
            principals=(principal(ALICE),),
        ),
        [False],
    ),
    (
        "kms-key-policy-admin-only",
        "key administrator with kms:*",
        snap(
            keys=(
                key(
                    policy=policy({"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": "kms:*", "Resource": "*"})
                ),
            ),
            principals=(principal(ALICE, roles=("key-admin",)),),
        ),
        [True],
    ),
    (
        "kms-key-policy-admin-only",
        "user with Decrypt only",
        snap(
            keys=(
                key(
                    policy=policy(
                        {"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": "kms:Decrypt", "Resource": "*"}
                    )
                ),
            ),
            principals=(principal(ALICE),),
        ),
        [True],
    ),
    # separation of duties
    (
        "kms-separation-of-duties",
        "user may only use",
        snap(
            keys=(key(),),
            principals=(principal(BOB, policy({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"})),),
            usage=used(key(), BOB, 3),
        ),
        [True],
    ),
    (
        "kms-separation-of-duties",
        "user administers and uses",
        snap(keys=(key(),), principals=(principal(BOB, ALLOW_ALL_KMS),), usage=used(key(), BOB, 3)),
        [False],
    ),
    (
        "kms-separation-of-duties",
        "administrator who never used it",
        snap(keys=(key(),), principals=(principal(BOB, ALLOW_ALL_KMS),)),
        [True],
    ),
    # unused keys
    ("kms-key-unused", "used last week", snap(keys=(key(),), usage=used(key(), BOB, 7)), [True]),
    ("kms-key-unused", "not used for 90 days", snap(keys=(key(),), usage=used(key(), BOB, 120)), [False]),
    ("kms-key-unused", "new key out of scope", snap(keys=(key(created_at=NOW - timedelta(days=10)),)), []),
    ("kms-key-unused", "only non-crypto calls", snap(keys=(key(),), usage=used(key(), BOB, 1, "DescribeKey")), [False]),
    # unused grants
    ("kms-grant-unused", "grantee used it", snap(grants=(grant(),), usage=used(key(), BOB, 5)), [True]),
    ("kms-grant-unused", "grantee never used it", snap(grants=(grant(),)), [False]),
    (
        "kms-grant-unused",
        "used an operation the grant lacks",
        snap(grants=(grant(),), usage=used(key(), BOB, 5, "Encrypt")),
        [False],
    ),
    ("kms-grant-unused", "new grant out of scope", snap(grants=(grant(age_days=3),)), []),
    (
        "kms-grant-unused",
        "service grantee used it",
        snap(grants=(grant("logs.amazonaws.com"),), usage=used(key(), f"arn:aws:iam::{ACCT}:service/logs", 5)),
        [True],
    ),
    # access keys
    (
        "iam-access-key-rotated",
        "young and used",
        snap(
            access_keys=(
                AccessKeyFact("AKIAYOUNG0000000", ALICE, ACCT, NOW - timedelta(days=10), NOW - timedelta(days=1)),
            )
        ),
        [True],
    ),
    (
        "iam-access-key-rotated",
        "older than 90 days",
        snap(
            access_keys=(
                AccessKeyFact("AKIAOLD000000000", ALICE, ACCT, NOW - timedelta(days=200), NOW - timedelta(days=1)),
            )
        ),
        [False],
    ),
    (
        "iam-access-key-rotated",
        "never used for 100 days",
        snap(access_keys=(AccessKeyFact("AKIAIDLE00000000", ALICE, ACCT, NOW - timedelta(days=100), None),)),
        [False],
    ),
    # MFA for key managers
    (
        "iam-key-managers-have-mfa",
        "manager with MFA",
        snap(principals=(principal(ALICE, ALLOW_ALL_KMS, mfa=True),)),
        [True],
    ),
    ("iam-key-managers-have-mfa", "manager without MFA", snap(principals=(principal(ALICE, ALLOW_ALL_KMS),)), [False]),
    (
        "iam-key-managers-have-mfa",
        "user who may only decrypt",
        snap(principals=(principal(ALICE, policy({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"})),)),
        [True],
    ),
    (
        "iam-key-managers-have-mfa",
        "roles are out of scope",
        snap(principals=(principal(f"arn:aws:iam::{ACCT}:role/app", ALLOW_ALL_KMS, type="role"),)),
        [],
    ),
    (
        "iam-key-managers-have-mfa",
        "key-admin role without MFA",
        snap(
            principals=(
                PrincipalFact(
                    ALICE,
                    ACCT,
                    "user",
                    "alice",
                    (
                        PolicyFact(
                            "kmsweb-role/key-admin",
                            policy({"Effect": "Allow", "Action": ["kms:PutKeyPolicy"], "Resource": "*"}),
                            "role",
                        ),
                    ),
                    ("key-admin",),
                    True,
                    False,
                ),
            )
        ),
        [False],
    ),
    # imported material
    (
        "kms-imported-material-expiry",
        "expires in a year",
        snap(keys=(key(origin="EXTERNAL", valid_to=NOW + timedelta(days=365)),)),
        [True],
    ),
    (
        "kms-imported-material-expiry",
        "expires in 10 days",
        snap(keys=(key(origin="EXTERNAL", valid_to=NOW + timedelta(days=10)),)),
        [False],
    ),
    ("kms-imported-material-expiry", "does not expire", snap(keys=(key(origin="EXTERNAL", valid_to=None),)), []),
    # required tags
    ("kms-key-required-tags", "no tags required", snap(keys=(key(),)), []),
    (
        "kms-key-required-tags",
        "tagged",
        snap(keys=(key(tags={"owner": "team-a", "env": "prod"}),), settings=Settings(required_tags=("owner", "env"))),
        [True],
    ),
    (
        "kms-key-required-tags",
        "missing one",
        snap(keys=(key(tags={"owner": "team-a"}),), settings=Settings(required_tags=("owner", "env"))),
        [False],
    ),
    # destructive actions need a recent second factor (docs/STS.md's template)
    ("kms-destructive-actions-require-mfa", "default policy", snap(keys=(key(),)), [False]),
    (
        "kms-destructive-actions-require-mfa",
        "the MFA template",
        snap(keys=(key(policy=mfa_key_policy(ACCT)),)),
        [True],
    ),
    (
        "kms-destructive-actions-require-mfa",
        "MFA required but of any age",
        snap(keys=(key(policy=_without_statement(mfa_key_policy(ACCT), "RequireRecentMfaForDestructiveActions")),)),
        [False],
    ),
    (
        "kms-destructive-actions-require-mfa",
        "only a named user, only Encrypt",
        snap(
            keys=(
                key(
                    policy=policy(
                        {"Effect": "Allow", "Principal": {"AWS": BOB}, "Action": "kms:Encrypt", "Resource": "*"}
                    )
                ),
            )
        ),
        [True],
    ),
    (
        "kms-destructive-actions-require-mfa",
        "a named user may disable without MFA",
        snap(
            keys=(
                key(
                    policy=policy(
                        {"Effect": "Allow", "Principal": {"AWS": BOB}, "Action": "kms:DisableKey", "Resource": "*"}
                    )
                ),
            )
        ),
        [False],
    ),
]


@pytest.mark.parametrize(("rule_id", "case", "snapshot", "expected"), CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_it_judges_each_case(rule_id: str, case: str, snapshot: Snapshot, expected: list[bool]) -> None:
    assert verdicts(rule_id, snapshot) == expected


def test_it_has_a_case_table_for_every_rule() -> None:
    covered = {c[0] for c in CASES}
    assert covered == set(RULES)
    for rule_id in RULES:
        outcomes = {v for c in CASES if c[0] == rule_id for v in c[3]}
        assert outcomes == {True, False}, f"{rule_id} needs a compliant and a non-compliant case"


def test_it_names_the_statement_that_makes_a_key_public() -> None:
    doc = policy(
        {
            "Sid": "Root",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCT}:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
        {"Sid": "Open", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*"},
    )
    (result,) = RULES["kms-key-policy-no-public-access"].evaluate(snap(keys=(key(policy=doc),)))
    assert result.evidence["principal"] == "*"
    assert result.evidence["statement"] == {"source": "key-policy", "sid": "Open", "index": 1}
    assert result.evidence["statementText"]["Sid"] == "Open"


def test_it_marks_a_pending_deletion_key_in_use_critical() -> None:
    k = key(state="PendingDeletion", deletion_date=NOW + timedelta(days=7))
    (recent,) = RULES["kms-key-not-pending-deletion"].evaluate(snap(keys=(k,), usage=used(k, BOB, 2)))
    (idle,) = RULES["kms-key-not-pending-deletion"].evaluate(snap(keys=(k,), usage=used(k, BOB, 60)))
    assert recent.severity == Severity.CRITICAL and recent.evidence["usedInLast30Days"] is True
    assert idle.severity is None and idle.evidence["usedInLast30Days"] is False


def test_it_names_the_user_who_administers_and_uses_a_key() -> None:
    k = key()
    (result,) = RULES["kms-separation-of-duties"].evaluate(
        snap(keys=(k,), principals=(principal(BOB, ALLOW_ALL_KMS),), usage=used(k, BOB, 3))
    )
    assert result.principal_arn == BOB
    assert result.evidence["mayAlso"] == "kms:PutKeyPolicy"
    assert result.evidence["statement"]["source"] == "identity-policy:p0"


def test_it_reads_a_changed_key_through_the_engine_not_by_text() -> None:
    # The same statement with a Deny for the outsider is compliant: string matching would miss this.
    open_doc = {"Effect": "Allow", "Principal": {"AWS": OUTSIDER}, "Action": "kms:*", "Resource": "*"}
    deny = {"Effect": "Deny", "Principal": {"AWS": OUTSIDER}, "Action": "kms:*", "Resource": "*"}
    k = key(policy=policy(open_doc))
    assert verdicts("kms-key-policy-no-public-access", snap(keys=(k,))) == [False]
    assert verdicts("kms-key-policy-no-public-access", snap(keys=(replace(k, policy=policy(open_doc, deny)),))) == [
        True
    ]


def test_it_checks_the_actions_the_mfa_template_protects() -> None:
    from compliance.rules.builtin import MFA_PROTECTED_ACTIONS

    assert tuple(MFA_PROTECTED_ACTIONS) == tuple(TEMPLATE_MFA_ACTIONS)
