"""Condition operators, qualifiers, wildcards and policy variables.

Property tests compare the engine with small reference implementations
written from the IAM documentation (a dynamic-programming wildcard matcher,
segment-wise ARN matching, and the missing-key / set-operator rules), on
generated inputs. Pure: run with
``.venv/bin/pytest -q -p no:django --noconftest tests/policies/test_evaluation_conditions.py``.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.evaluation import RequestContext, evaluate, parse_policy

ACCT = "111122223333"
ALICE = f"arn:aws:iam::{ACCT}:user/alice"
KEY = f"arn:aws:kms:us-east-1:{ACCT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
MISSING: Any = object()


def ctx(keys: dict[str, Any] | None = None, *, action: str = "kms:Encrypt", resource: str = KEY) -> RequestContext:
    return RequestContext(action, ALICE, ACCT, resource, ACCT, NOW, keys or {})


def holds(operator: str, key: str, values: Any, keys: dict[str, Any], *, version: str = "2012-10-17") -> bool:
    """Whether a key-policy statement with this single condition allows the request."""
    policy = parse_policy(
        {
            "Version": version,
            "Statement": {
                "Effect": "Allow",
                "Principal": {"AWS": ALICE},
                "Action": "kms:*",
                "Resource": "*",
                "Condition": {operator: {key: values}},
            },
        }
    )
    return evaluate(ctx(keys), policy, []).allowed


# --- reference implementations (from the documentation, independent of the engine) ---


def ref_like(pattern: str, text: str) -> bool:
    """``*`` any run, ``?`` one character: classic dynamic programming."""
    m, n = len(pattern), len(text)
    dp = [[False] * (n + 1) for _ in range(m + 1)]
    dp[0][0] = True
    for i in range(1, m + 1):
        if pattern[i - 1] == "*":
            dp[i][0] = dp[i - 1][0]
        for j in range(1, n + 1):
            p = pattern[i - 1]
            if p == "*":
                dp[i][j] = dp[i - 1][j] or dp[i][j - 1]
            else:
                dp[i][j] = dp[i - 1][j - 1] and (p == "?" or p == text[j - 1])
    return dp[m][n]


def ref_arn_like(pattern: str, arn: str) -> bool:
    """Segment by segment (six colon-separated parts); the pattern's last part takes the rest."""
    parts = pattern.split(":", 5)
    subject = arn.split(":", len(parts) - 1)
    return len(subject) == len(parts) and all(ref_like(p, s) for p, s in zip(parts, subject, strict=True))


def ref_condition(
    base: Any, negated: bool, qualifier: str, if_exists: bool, policy_values: list[Any], request: Any
) -> bool:
    """The IAM rules for missing keys, multiple values and set operators."""
    if request is MISSING or request == []:
        if if_exists or qualifier == "all":
            return True
        if qualifier == "any":
            return False
        return negated
    values = request if isinstance(request, list) else [request]

    def matched(v: Any) -> bool:
        return any(base(v, p) for p in policy_values)

    if qualifier == "all":
        return all(matched(v) != negated for v in values)
    if qualifier == "any":
        return any(matched(v) != negated for v in values)
    return not any(matched(v) for v in values) if negated else any(matched(v) for v in values)


# --- wildcards -----------------------------------------------------------------

PATTERN = st.text(alphabet="ab:*?", max_size=8)
SUBJECT = st.text(alphabet="ab:", max_size=8)


@settings(max_examples=300, deadline=None)
@given(pattern=st.text(alphabet="ab*?", max_size=7), text=st.text(alphabet="abAB", max_size=7))
def test_it_matches_action_wildcards_case_insensitively(pattern: str, text: str) -> None:
    policy = parse_policy(
        {"Statement": {"Effect": "Allow", "Principal": "*", "Action": f"kms:{pattern or 'a'}", "Resource": "*"}}
    )
    expected = ref_like(f"kms:{pattern or 'a'}".lower(), f"KMS:{text}".lower())
    assert bool(policy.statements_for(f"kms:{text}".lower())) is expected


@settings(max_examples=400, deadline=None)
@given(pattern=PATTERN, text=SUBJECT)
def test_it_matches_resource_arns_segment_by_segment(pattern: str, text: str) -> None:
    arn_pattern, arn = f"arn:{pattern}", f"arn:{text}"
    policy = parse_policy({"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": arn_pattern}})
    assert policy.statements[0].matches_resource(arn, {}) is ref_arn_like(arn_pattern, arn)
    assert holds("ArnLike", "aws:SourceArn", arn_pattern, {"aws:SourceArn": arn}) is ref_arn_like(arn_pattern, arn)


@settings(max_examples=400, deadline=None)
@given(pattern=PATTERN, text=st.text(alphabet="abAB:*", max_size=8))
def test_it_matches_string_like_against_the_reference(pattern: str, text: str) -> None:
    assert holds("StringLike", "aws:username", pattern, {"aws:username": text}) is ref_like(pattern, text)


@pytest.mark.parametrize(
    ("pattern", "arn", "expected"),
    [
        ("*", KEY, True),
        ("arn:aws:kms:*", KEY, True),
        ("arn:aws:kms:*:111122223333:key/*", KEY, True),
        ("arn:aws:kms:*:444455556666:key/*", KEY, False),
        ("arn:aws:kms:us-east-?:111122223333:key/*", KEY, True),
        ("arn:aws:kms:*:key/*", KEY, False),  # "*" does not cross a colon before the resource part
        ("arn:aws:kms:us-east-1:111122223333:key/1234ABCD*", KEY, False),  # ARNs are case-sensitive
        ("arn:aws:kms:us-east-1:111122223333:alias/*", KEY, False),
    ],
)
def test_it_matches_documented_resource_patterns(pattern: str, arn: str, expected: bool) -> None:
    policy = parse_policy({"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": pattern}})
    assert policy.statements[0].matches_resource(arn, {}) is expected


# --- operators on generated inputs -----------------------------------------------

QUALIFIERS = st.sampled_from(["", "any", "all"])
PREFIX = {"": "", "any": "ForAnyValue:", "all": "ForAllValues:"}
WORD = st.text(alphabet="aAb", max_size=3)


def request_of(element: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A missing key, one value, or a (possibly empty) list of values."""
    return st.one_of(st.just(MISSING), element, st.lists(element, max_size=3))


def run(operator: str, qualifier: str, if_exists: bool, policy_values: list[Any], request: Any) -> bool:
    name = PREFIX[qualifier] + operator + ("IfExists" if if_exists else "")
    keys = {} if request is MISSING else {"kms:EncryptionContext:tenant": request}
    return holds(name, "kms:EncryptionContext:tenant", policy_values, keys)


STRING_OPERATORS = {
    "StringEquals": (lambda v, p: v == p, False),
    "StringNotEquals": (lambda v, p: v == p, True),
    "StringEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), True),
    "StringLike": (lambda v, p: ref_like(p, v), False),
    "StringNotLike": (lambda v, p: ref_like(p, v), True),
}


@settings(max_examples=500, deadline=None)
@given(
    operator=st.sampled_from(sorted(STRING_OPERATORS)),
    qualifier=QUALIFIERS,
    if_exists=st.booleans(),
    policy_values=st.lists(st.text(alphabet="aAb*?", max_size=3), min_size=1, max_size=3),
    request=request_of(WORD),
)
def test_it_evaluates_string_operators_like_the_reference(
    operator: str, qualifier: str, if_exists: bool, policy_values: list[str], request: Any
) -> None:
    base, negated = STRING_OPERATORS[operator]
    expected = ref_condition(base, negated, qualifier, if_exists, policy_values, request)
    assert run(operator, qualifier, if_exists, policy_values, request) is expected


NUMERIC_OPERATORS = {
    "Equals": (lambda a, b: a == b, False),
    "NotEquals": (lambda a, b: a == b, True),
    "LessThan": (lambda a, b: a < b, False),
    "LessThanEquals": (lambda a, b: a <= b, False),
    "GreaterThan": (lambda a, b: a > b, False),
    "GreaterThanEquals": (lambda a, b: a >= b, False),
}


@settings(max_examples=400, deadline=None)
@given(
    suffix=st.sampled_from(sorted(NUMERIC_OPERATORS)),
    qualifier=QUALIFIERS,
    if_exists=st.booleans(),
    policy_values=st.lists(st.integers(-3, 3), min_size=1, max_size=3),
    request=request_of(st.integers(-3, 3)),
    as_text=st.booleans(),
)
def test_it_evaluates_numeric_operators_like_the_reference(
    suffix: str, qualifier: str, if_exists: bool, policy_values: list[int], request: Any, as_text: bool
) -> None:
    base, negated = NUMERIC_OPERATORS[suffix]
    expected = ref_condition(base, negated, qualifier, if_exists, policy_values, request)
    # Policies may write numbers as JSON numbers or strings; both mean the same.
    written: list[Any] = [str(v) for v in policy_values] if as_text else policy_values
    assert run("Numeric" + suffix, qualifier, if_exists, written, request) is expected


@settings(max_examples=400, deadline=None)
@given(
    suffix=st.sampled_from(sorted(NUMERIC_OPERATORS)),
    qualifier=QUALIFIERS,
    if_exists=st.booleans(),
    policy_days=st.lists(st.integers(-2, 2), min_size=1, max_size=2),
    request_days=request_of(st.integers(-2, 2)),
    epoch=st.booleans(),
)
def test_it_evaluates_date_operators_like_the_reference(
    suffix: str, qualifier: str, if_exists: bool, policy_days: list[int], request_days: Any, epoch: bool
) -> None:
    base, negated = NUMERIC_OPERATORS[suffix]

    def day(n: int) -> datetime:
        return NOW + timedelta(days=n)

    policy_values = [
        str(int(day(n).timestamp())) if epoch else day(n).strftime("%Y-%m-%dT%H:%M:%SZ") for n in policy_days
    ]
    request: Any = request_days
    if request_days is not MISSING:
        request = [day(n) for n in request_days] if isinstance(request_days, list) else day(request_days)
    expected = ref_condition(
        lambda v, p: base(v, p), negated, qualifier, if_exists, [day(n) for n in policy_days], request
    )
    assert run("Date" + suffix, qualifier, if_exists, policy_values, request) is expected


@settings(max_examples=300, deadline=None)
@given(
    qualifier=QUALIFIERS,
    if_exists=st.booleans(),
    policy_values=st.lists(st.booleans(), min_size=1, max_size=2),
    request=request_of(st.booleans()),
    as_text=st.booleans(),
)
def test_it_evaluates_bool_like_the_reference(
    qualifier: str, if_exists: bool, policy_values: list[bool], request: Any, as_text: bool
) -> None:
    expected = ref_condition(lambda v, p: v == p, False, qualifier, if_exists, policy_values, request)
    written: list[Any] = [str(v).lower() for v in policy_values] if as_text else policy_values
    assert run("Bool", qualifier, if_exists, written, request) is expected


NETWORKS = ["10.0.0.0/8", "10.1.2.3", "192.0.2.0/24", "2001:db8::/32", "::1/128", "0.0.0.0/0"]
ADDRESSES = ["10.0.0.1", "10.1.2.3", "192.0.2.255", "192.0.3.1", "2001:db8::1", "2001:db9::1", "::1", "8.8.8.8"]


@settings(max_examples=300, deadline=None)
@given(
    negated=st.booleans(),
    qualifier=QUALIFIERS,
    if_exists=st.booleans(),
    policy_values=st.lists(st.sampled_from(NETWORKS), min_size=1, max_size=3),
    request=request_of(st.sampled_from(ADDRESSES)),
)
def test_it_evaluates_ip_operators_like_the_reference(
    negated: bool, qualifier: str, if_exists: bool, policy_values: list[str], request: Any
) -> None:
    def inside(v: str, p: str) -> bool:
        a, n = ipaddress.ip_address(v), ipaddress.ip_network(p, strict=False)
        return a.version == n.version and a in n

    expected = ref_condition(inside, negated, qualifier, if_exists, policy_values, request)
    assert run("NotIpAddress" if negated else "IpAddress", qualifier, if_exists, policy_values, request) is expected


@pytest.mark.parametrize(
    ("source_ip", "cidr", "expected"),
    [
        ("203.0.113.9", "203.0.113.0/24", True),
        ("203.0.114.9", "203.0.113.0/24", False),
        ("2001:db8:85a3::8a2e:370:7334", "2001:db8:85a3::/48", True),
        ("2001:db8:85a4::1", "2001:db8:85a3::/48", False),
        ("203.0.113.9", "::/0", False),  # IPv4 never matches an IPv6 range
        ("::ffff:203.0.113.9", "203.0.113.0/24", False),  # nor IPv6 an IPv4 range
        ("not an ip", "0.0.0.0/0", False),
    ],
)
def test_it_matches_ipv4_and_ipv6_cidrs(source_ip: str, cidr: str, expected: bool) -> None:
    assert holds("IpAddress", "aws:SourceIp", cidr, {"aws:SourceIp": source_ip}) is expected
    assert holds("NotIpAddress", "aws:SourceIp", cidr, {"aws:SourceIp": source_ip}) is not expected


@pytest.mark.parametrize(
    ("operator", "values", "present", "expected"),
    [
        ("Null", "true", False, True),
        ("Null", "true", True, False),
        ("Null", "false", True, True),
        ("Null", "false", False, False),
        ("Null", True, False, True),
        ("Null", ["true", "false"], True, True),
        ("ForAllValues:Null", "false", True, True),  # qualifiers do not change a presence test
    ],
)
def test_it_tests_presence_with_null(operator: str, values: Any, present: bool, expected: bool) -> None:
    keys = {"aws:TokenIssueTime": "2025-01-01T00:00:00Z"} if present else {}
    assert holds(operator, "aws:TokenIssueTime", values, keys) is expected


@pytest.mark.parametrize(
    ("operator", "keys", "expected"),
    [
        # IAM docs, ForAllValues:StringNotLike on aws:TagKeys with "key1*".
        ("ForAllValues:StringNotLike", {"aws:TagKeys": ["key1:legal"]}, False),
        ("ForAllValues:StringNotLike", {"aws:TagKeys": ["key1:hr", "key1:personnel"]}, False),
        ("ForAllValues:StringNotLike", {"aws:TagKeys": ["key2:audit"]}, True),
        ("ForAllValues:StringNotLike", {}, True),
        ("ForAnyValue:StringLike", {}, False),
        ("ForAnyValue:StringLike", {"aws:TagKeys": ["x", "key1a"]}, True),
        ("ForAllValues:StringLike", {"aws:TagKeys": ["x", "key1a"]}, False),
        ("ForAllValues:StringLike", {"aws:TagKeys": []}, True),  # an empty set counts as missing
        ("StringNotLike", {}, True),  # negated operators are true on a missing key
        ("StringLike", {}, False),
        ("StringLikeIfExists", {}, True),
    ],
)
def test_it_follows_the_documented_multivalue_examples(operator: str, keys: dict[str, Any], expected: bool) -> None:
    assert holds(operator, "aws:TagKeys", "key1*", keys) is expected


def test_it_ands_operators_and_keys_and_ors_values() -> None:
    policy = parse_policy(
        {
            "Version": "2012-10-17",
            "Statement": {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "kms:Encrypt",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"kms:EncryptionContext:tenant": ["a", "b"], "kms:KeySpec": "SYMMETRIC_DEFAULT"},
                    "Bool": {"aws:SecureTransport": "true"},
                },
            },
        }
    )
    good = {"kms:EncryptionContext:tenant": "b", "kms:KeySpec": "SYMMETRIC_DEFAULT", "aws:SecureTransport": True}
    assert evaluate(ctx(good), policy, []).allowed
    assert not evaluate(ctx({**good, "kms:EncryptionContext:tenant": "c"}), policy, []).allowed
    assert not evaluate(ctx({**good, "kms:KeySpec": "RSA_2048"}), policy, []).allowed
    assert not evaluate(ctx({**good, "aws:SecureTransport": False}), policy, []).allowed


def test_it_looks_condition_keys_up_case_insensitively() -> None:
    assert holds("StringEquals", "KMS:ENCRYPTIONCONTEXT:Tenant", "a", {"kms:encryptioncontext:tenant": "a"})
    assert holds(
        "StringEquals",
        "kms:ViaService",
        "ec2.us-east-1.amazonaws.com",
        {"KMS:VIASERVICE": "ec2.us-east-1.amazonaws.com"},
    )
    # Values stay case-sensitive.
    assert not holds("StringEquals", "kms:EncryptionContext:tenant", "A", {"kms:EncryptionContext:tenant": "a"})


def test_it_treats_wrongly_typed_request_values_as_non_matching() -> None:
    assert not holds("NumericLessThan", "kms:EncryptionContext:n", "10", {"kms:EncryptionContext:n": "abc"})
    assert holds("NumericNotEquals", "kms:EncryptionContext:n", "10", {"kms:EncryptionContext:n": "abc"})
    assert holds("NumericLessThan", "kms:EncryptionContext:n", "10", {"kms:EncryptionContext:n": "9.5"})
    assert not holds("Bool", "aws:SecureTransport", "true", {"aws:SecureTransport": "yes"})
    assert not holds("NumericEquals", "aws:MultiFactorAuthPresent", "1", {"aws:MultiFactorAuthPresent": True})


def test_it_derives_current_time_and_principal_keys_from_the_context() -> None:
    assert holds("DateGreaterThan", "aws:CurrentTime", "2025-01-01T00:00:00Z", {})
    assert not holds("DateGreaterThan", "aws:CurrentTime", "2026-01-01", {})
    assert holds("NumericGreaterThan", "aws:EpochTime", int(NOW.timestamp()) - 1, {})
    assert holds("StringEquals", "kms:CallerAccount", ACCT, {})
    assert holds("ArnEquals", "aws:PrincipalArn", ALICE, {})
    assert holds("StringEquals", "aws:PrincipalAccount", ACCT, {})
    # The clock is the caller's: a forged aws:CurrentTime key cannot override it.
    assert not holds("DateGreaterThan", "aws:CurrentTime", "2026-01-01", {"aws:CurrentTime": "2030-01-01T00:00:00Z"})
    assert not holds("StringEquals", "aws:PrincipalArn", "arn:aws:iam::1:user/x", {"aws:PrincipalArn": "x"})


def test_it_rejects_a_naive_clock() -> None:
    with pytest.raises(ValueError, match="aware"):
        RequestContext("kms:Encrypt", ALICE, ACCT, KEY, ACCT, datetime(2025, 1, 1), {})


# --- policy variables ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "keys", "expected"),
    [
        ("${aws:username}", {}, True),  # derived from the user ARN
        ("${aws:PrincipalTag/team}", {"aws:PrincipalTag/team": "alice"}, True),
        ("${aws:PrincipalTag/team}", {}, False),  # no value: the variable is null and matches nothing
        ("${aws:PrincipalTag/team, 'alice'}", {}, True),  # AWS's default-value syntax
        ("al${?}ce", {}, False),  # ${?} is a literal question mark
        ("al?ce", {}, True),
    ],
)
def test_it_substitutes_policy_variables_in_condition_values(value: str, keys: dict[str, Any], expected: bool) -> None:
    assert (
        holds("StringLike", "kms:EncryptionContext:owner", value, {"kms:EncryptionContext:owner": "alice", **keys})
        is expected
    )


def test_it_keeps_special_characters_literal_and_variables_2012_only() -> None:
    assert holds("StringLike", "kms:EncryptionContext:x", "a${*}", {"kms:EncryptionContext:x": "a*"})
    assert not holds("StringLike", "kms:EncryptionContext:x", "a${*}", {"kms:EncryptionContext:x": "ab"})
    assert holds("StringEquals", "kms:EncryptionContext:x", "${$}{x}", {"kms:EncryptionContext:x": "${x}"})
    # A substituted value is literal text, never a wildcard pattern.
    assert not holds(
        "StringLike",
        "kms:EncryptionContext:x",
        "${aws:PrincipalTag/p}",
        {"kms:EncryptionContext:x": "abc", "aws:PrincipalTag/p": "*"},
    )
    # In 2008-10-17 policies "${aws:username}" is just text.
    assert not holds(
        "StringEquals",
        "kms:EncryptionContext:x",
        "${aws:username}",
        {"kms:EncryptionContext:x": "alice"},
        version="2008-10-17",
    )
    assert holds(
        "StringEquals",
        "kms:EncryptionContext:x",
        "${aws:username}",
        {"kms:EncryptionContext:x": "${aws:username}"},
        version="2008-10-17",
    )
    # Multivalued keys cannot be variables.
    assert not holds(
        "StringEquals",
        "kms:EncryptionContext:x",
        "${aws:TagKeys}",
        {"kms:EncryptionContext:x": "a", "aws:TagKeys": ["a"]},
    )


def test_it_substitutes_variables_in_resources() -> None:
    policy = parse_policy(
        {
            "Version": "2012-10-17",
            "Statement": {
                "Effect": "Allow",
                "Action": "kms:*",
                "Resource": "arn:aws:kms:*:111122223333:key/${aws:PrincipalTag/key-id}",
            },
        },
        kind="identity",
    )
    st0 = policy.statements[0]
    assert st0.matches_resource(KEY, ctx({"aws:PrincipalTag/key-id": KEY.rsplit("/", 1)[1]}).lkeys)
    assert not st0.matches_resource(KEY, ctx({"aws:PrincipalTag/key-id": "other"}).lkeys)
    assert not st0.matches_resource(KEY, ctx({}).lkeys)  # unresolved: matches nothing
    # A tag value with wildcards is literal: it cannot widen the resource.
    assert not st0.matches_resource(KEY, ctx({"aws:PrincipalTag/key-id": "*"}).lkeys)
