"""Policy documents: validation messages, the 32 KiB limit, caching, immutability.

Pure tests (no database): run with
``.venv/bin/pytest -q -p no:django --noconftest tests/policies/test_evaluation_parsing.py``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.evaluation import MAX_POLICY_BYTES, Policy, PolicyError, parse_policy

ALLOW_ALL_ROOT: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
}


# Element and operator names the fuzzer draws from, valid and invalid alike.
ELEMENT_NAMES = (
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
    "AWS",
    "Service",
    "StringLike",
    "ForAllValues:StringEquals",
    "NumericLessThan",
    "DateGreaterThan",
    "Bool",
    "IpAddress",
    "Null",
    "ArnLike",
    "kms:EncryptionContext:a",
    "aws:SourceIp",
    "Bogus",
)


def _doc(**statement: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"Effect": "Allow", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*"}
    base.update(statement)
    return {"Version": "2012-10-17", "Statement": [{k: v for k, v in base.items() if v is not None}]}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "The policy document is not valid JSON: Expecting property name enclosed in double quotes"),
        ("[]", "The policy document must be a JSON object."),
        ('{"Version": "2012-10-17", "Statement": [], "Statement": []}', "contains the element Statement more than"),
        ('{"Version": "2012-10-17", "Statement": [{"Effect": NaN}]}', "contains NaN, which is not valid JSON"),
        ({"Version": "2012-10-17", "Statment": []}, "unknown element: Statment."),
        ({"Version": "2020-01-01", "Statement": []}, "invalid Version: 2020-01-01"),
        ({"Version": "2012-10-17"}, "has no Statement element."),
        ({"Version": "2012-10-17", "Statement": []}, "contains no statements."),
        ({"Version": "2012-10-17", "Statement": "x"}, "Statement element must be an object or a list"),
        ({"Version": "2012-10-17", "Statement": ["x"]}, "statement (#1) that is not a JSON object"),
        (_doc(Effect="allow"), "Effect is not Allow or Deny: allow."),
        (_doc(Effect=None), "Effect is not Allow or Deny: None."),
        (_doc(Sid=7), "whose Sid is not a string."),
        (_doc(Foo=1), "with an unknown element: Foo."),
        (_doc(NotAction="kms:Decrypt"), "exactly one of Action or NotAction."),
        (_doc(Action=None), "exactly one of Action or NotAction."),
        (_doc(Action="Encrypt"), "invalid action: Encrypt (use service:action)."),
        (_doc(Action=[]), "whose Action is not a string or a list of strings."),
        (_doc(NotResource="*"), "exactly one of Resource or NotResource."),
        (_doc(Resource="key/1"), "invalid resource: key/1"),
        (_doc(Principal={"AWS": "arn:aws:iam::111122223333:user/*"}), "invalid principals: arn:aws:iam::"),
        (_doc(Principal={"AWS": "alice"}), "one or more invalid principals: alice."),
        (_doc(Principal={"AWS": "arn:aws:iam::111122223333:group/admins"}), "invalid principals"),
        (_doc(Principal={"Federated": "cognito-identity.amazonaws.com"}), "principal type Federated"),
        (_doc(Principal={"Service": "*.amazonaws.com"}), "service principals take no wildcards"),
        (_doc(Principal={}), "one or more invalid principals"),
        (_doc(Principal="everyone"), "one or more invalid principals"),
        (_doc(NotPrincipal={"AWS": "111122223333"}), "with both Principal and NotPrincipal."),
        (_doc(Condition={"StringEqualz": {"aws:username": "a"}}), None),
        (_doc(Condition={"NullIfExists": {"aws:username": "true"}}), None),
        (_doc(Condition={"ForSomeValues:StringLike": {"aws:TagKeys": "a"}}), None),
        (_doc(Condition=[]), "whose Condition is not a JSON object."),
        (_doc(Condition={"StringEquals": "x"}), "does not map condition keys to values."),
        (_doc(Condition={"StringEquals": {"aws:username": []}}), "no values for condition key aws:username."),
        (_doc(Condition={"StringEquals": {"aws:username": None}}), "invalid value for condition key aws:username"),
        (_doc(Condition={"StringEquals": {"aws:username": {"a": 1}}}), "invalid value for condition key"),
        (_doc(Condition={"NumericLessThan": {"kms:RotationPeriodInDays": "ten"}}), "invalid number"),
        (_doc(Condition={"DateLessThan": {"aws:CurrentTime": "tomorrow"}}), "invalid date"),
        (_doc(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}}), "invalid IP address or CIDR block"),
        (_doc(Condition={"Bool": {"aws:SecureTransport": "yes"}}), "invalid boolean"),
        (_doc(Condition={"Null": {"aws:username": "maybe"}}), "invalid value (use true or false)"),
    ],
)
def test_it_refuses_malformed_documents_with_precise_messages(document: Any, message: str | None) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    if message is None:  # unknown operators: the exact AWS-style sentence
        operator = next(iter(json.loads(text)["Statement"][0]["Condition"]))
        assert info.value.message == f"Policy contains a statement with an unknown condition operator: {operator}"
    else:
        assert message in info.value.message
    assert str(info.value) == info.value.message


def test_it_reports_the_exact_unknown_operator_sentence() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(_doc(Condition={"StringEqualz": {"kms:EncryptionContext:tenant": "a"}}))
    assert info.value.message == "Policy contains a statement with an unknown condition operator: StringEqualz"


def test_it_refuses_duplicate_sids() -> None:
    doc = _doc(Sid="A")
    doc["Statement"].append(dict(doc["Statement"][0]))
    with pytest.raises(PolicyError, match="Sid.*must be unique.*A is repeated"):
        parse_policy(doc)


def test_it_enforces_the_principal_rules_of_each_kind() -> None:
    with pytest.raises(PolicyError, match=r"statement \(#1\) with no Principal"):
        parse_policy(_doc(Principal=None), kind="key")
    with pytest.raises(PolicyError, match="identity-based policy must not specify a principal"):
        parse_policy(_doc(), kind="identity")
    parse_policy(_doc(Principal=None), kind="identity")
    parse_policy(_doc(), kind="key")
    parse_policy(_doc(Principal=None))  # kind=None accepts both shapes


def test_it_enforces_the_32_kib_limit_in_utf8_bytes() -> None:
    def sized(n: int) -> str:
        doc = _doc(Sid="")
        text = json.dumps(doc)
        pad = n - len(text.encode())
        doc["Statement"][0]["Sid"] = "x" * pad
        return json.dumps(doc)

    exact = sized(MAX_POLICY_BYTES)
    assert len(exact.encode()) == MAX_POLICY_BYTES
    parse_policy(exact)
    with pytest.raises(PolicyError, match="32769 bytes; the limit is 32768 bytes"):
        parse_policy(sized(MAX_POLICY_BYTES + 1))
    # Multi-byte characters count as bytes, not characters.
    wide = json.dumps(_doc(Sid="é" * 16400), ensure_ascii=False)
    assert len(wide) < MAX_POLICY_BYTES < len(wide.encode())
    with pytest.raises(PolicyError, match="the limit is 32768 bytes"):
        parse_policy(wide)


def test_it_accepts_a_single_statement_object_and_both_versions() -> None:
    one = parse_policy({"Version": "2008-10-17", "Statement": _doc()["Statement"][0]})
    assert one.version == "2008-10-17" and len(one.statements) == 1
    assert parse_policy({"Statement": _doc()["Statement"]}).version == "2008-10-17"  # the AWS default


def test_it_caches_by_text_and_is_immutable() -> None:
    text = json.dumps(ALLOW_ALL_ROOT)
    first = parse_policy(text)
    assert parse_policy(text) is first
    assert parse_policy(ALLOW_ALL_ROOT) is parse_policy(ALLOW_ALL_ROOT)  # mappings are serialized, then cached
    assert parse_policy(text, kind="key") is not first  # the kind is part of the cache key
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.version = "2008-10-17"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.statements[0].deny = True  # type: ignore[misc]
    assert isinstance(hash(first), int)
    assert first != parse_policy(text + " ")  # equality is by text (and kind), not by identity
    assert first.text == text and isinstance(first, Policy)


def test_it_accepts_the_aws_documentation_policies() -> None:
    parse_policy(ALLOW_ALL_ROOT, kind="key")
    parse_policy(
        {
            "Version": "2012-10-17",
            "Id": "key-consolepolicy-3",
            "Statement": [
                {
                    "Sid": "Allow attachment of persistent resources",
                    "Effect": "Allow",
                    "Principal": {"AWS": ["arn:aws:iam::111122223333:role/ExampleUserRole", "444455556666"]},
                    "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
                    "Resource": "*",
                    "Condition": {"Bool": {"kms:GrantIsForAWSResource": True}},
                },
                {
                    "Effect": "Deny",
                    "NotPrincipal": {"Service": ["logs.amazonaws.com", "backup"]},
                    "NotAction": "kms:Describe*",
                    "NotResource": "arn:aws:kms:*:111122223333:key/*",
                    "Condition": {
                        "ForAnyValue:StringLikeIfExists": {"kms:EncryptionContextKeys": ["app*", 1]},
                        "NumericLessThanEquals": {"kms:ScheduleKeyDeletionPendingWindowInDays": 30},
                        "DateGreaterThan": {"aws:CurrentTime": ["2024-01-01T00:00:00Z", "1700000000"]},
                        "NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24", "2001:db8::/32", "203.0.113.7"]},
                        "Null": {"aws:MultiFactorAuthPresent": False},
                    },
                },
            ],
        },
        kind="key",
    )


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.sampled_from(["*", "kms:*", "arn:aws:kms:*", "Allow", "Deny", "111122223333", "", "${aws:username}", "x"]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(list(ELEMENT_NAMES)), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    statement=st.dictionaries(st.sampled_from(list(ELEMENT_NAMES)), JSON_VALUES, max_size=6),
    version=st.sampled_from(["2012-10-17", "2008-10-17", 1, None]),
)
def test_it_answers_any_document_with_a_policy_or_a_policy_error(statement: dict[str, Any], version: Any) -> None:
    # Whatever arrives over the wire: a Policy or a PolicyError, never a crash (a 500).
    doc: dict[str, Any] = {"Statement": statement}
    if version is not None:
        doc["Version"] = version
    try:
        parse_policy(json.dumps(doc))
    except PolicyError as exc:
        assert exc.message
