"""Input validation and output serialization against the KMS model.

Pure tests (no database). Inputs are checked against AWS's message forms;
outputs are fed through botocore's own JSON response parser, which is what
boto3 clients run, so a pass means boto3 reads our replies as intended.
"""

from __future__ import annotations

import base64
import enum
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from hypothesis import given, settings
from hypothesis import strategies as st

from kmsweb.api.shapes import (
    KMSWEB_REQUIRED,
    ShapeError,
    encode_output,
    error_shape_names,
    operation_names,
    parse_input,
    serialize_output,
    service_model,
)
from kmsweb.lib.errors import SerializationError
from kmsweb.lib.jsonbody import parse_body

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:us-east-1:111122223333:key/{KEY_ID}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def enum_set(shape_name: str) -> str:
    values = service_model().shape_for(shape_name).enum
    return "[" + ", ".join(values) + "]"


def validation_error(operation: str, body: Any) -> str:
    with pytest.raises(ShapeError) as excinfo:
        parse_input(operation, body)
    assert (excinfo.value.code, excinfo.value.status) == ("ValidationException", 400)
    return excinfo.value.message


def serialization_error(operation: str, body: Any) -> str:
    with pytest.raises(ShapeError) as excinfo:
        parse_input(operation, body)
    assert (excinfo.value.code, excinfo.value.status) == ("SerializationException", 400)
    return excinfo.value.message


def parse_with_botocore(operation: str, body: dict[str, Any]) -> dict[str, Any]:
    """Parse a reply exactly as a boto3 client would."""
    op = service_model().operation_model(operation)
    response = {
        "status_code": 200,
        "headers": {"content-type": "application/x-amz-json-1.1"},
        "body": json.dumps(body).encode("utf-8"),
    }
    parsed = create_parser("json").parse(response, op.output_shape)
    parsed.pop("ResponseMetadata", None)
    return parsed


# --- the model ---------------------------------------------------------------


def test_it_lists_kms_operations() -> None:
    names = operation_names()
    assert {"Encrypt", "Decrypt", "CreateKey", "DescribeKey", "GenerateRandom"} <= names
    assert "PutItem" not in names


def test_it_lists_kms_error_codes() -> None:
    assert {"NotFoundException", "DisabledException", "KMSInvalidStateException"} <= (error_shape_names())


def test_it_rejects_an_unknown_operation() -> None:
    with pytest.raises(ShapeError) as excinfo:
        parse_input("PutItem", {})
    assert excinfo.value.code == "UnknownOperationException"


# --- ValidationException -----------------------------------------------------

VALIDATION_CASES = [
    pytest.param(
        "Encrypt",
        {"KeyId": KEY_ID, "Plaintext": b64(b"x" * 4097)},
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length less than or equal to 4096",
        id="encrypt-plaintext-too-long",
    ),
    pytest.param(
        "Encrypt",
        {"KeyId": KEY_ID, "Plaintext": ""},
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1",
        id="encrypt-plaintext-empty",
    ),
    pytest.param(
        "Encrypt",
        {"KeyId": "", "Plaintext": b64(b"x")},
        "1 validation error detected: Value '' at 'keyId' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1",
        id="encrypt-keyid-empty",
    ),
    pytest.param(
        "GenerateRandom",
        {"NumberOfBytes": 0},
        "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy "
        "constraint: Member must have value greater than or equal to 1",
        id="random-zero-bytes",
    ),
    pytest.param(
        "GenerateRandom",
        {"NumberOfBytes": 1025},
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy "
        "constraint: Member must have value less than or equal to 1024",
        id="random-too-many-bytes",
    ),
    pytest.param(
        "ListKeys",
        {"Limit": 0},
        "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1",
        id="listkeys-limit-zero",
    ),
    pytest.param(
        "ListKeys",
        {"Limit": 1001},
        "1 validation error detected: Value '1001' at 'limit' failed to satisfy constraint: "
        "Member must have value less than or equal to 1000",
        id="listkeys-limit-too-high",
    ),
    pytest.param(
        "CreateKey",
        {"KeyUsage": "ENCRYPT_ONLY"},
        "1 validation error detected: Value 'ENCRYPT_ONLY' at 'keyUsage' failed to satisfy "
        f"constraint: Member must satisfy enum value set: {enum_set('KeyUsageType')}",
        id="createkey-bad-key-usage",
    ),
    pytest.param(
        "Encrypt",
        {"Plaintext": b64(b"x")},
        "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null",
        id="encrypt-missing-keyid",
    ),
    pytest.param(
        "Encrypt",
        {"KeyId": None, "Plaintext": None},
        "2 validation errors detected: "
        "Value null at 'keyId' failed to satisfy constraint: Member must not be null; "
        "Value null at 'plaintext' failed to satisfy constraint: Member must not be null",
        id="encrypt-nulls-count-as-missing",
    ),
    pytest.param(
        "CreateKey",
        {"Tags": [{"TagKey": "", "TagValue": "v"}, {"TagKey": "team"}]},
        "2 validation errors detected: "
        "Value '' at 'tags.1.member.tagKey' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1; "
        "Value null at 'tags.2.member.tagValue' failed to satisfy constraint: "
        "Member must not be null",
        id="createkey-nested-tags",
    ),
    pytest.param(
        "CreateKey",
        {"Tags": [{"TagKey": "k" * 129, "TagValue": "v" * 257}]},
        "2 validation errors detected: "
        f"Value '{'k' * 129}' at 'tags.1.member.tagKey' failed to satisfy constraint: "
        "Member must have length less than or equal to 128; "
        f"Value '{'v' * 257}' at 'tags.1.member.tagValue' failed to satisfy constraint: "
        "Member must have length less than or equal to 256",
        id="createkey-tag-lengths",
    ),
    pytest.param(
        "CreateAlias",
        {"AliasName": "alias/not allowed!", "TargetKeyId": KEY_ID},
        "1 validation error detected: Value 'alias/not allowed!' at 'aliasName' failed to "
        "satisfy constraint: Member must satisfy regular expression pattern: "
        "^[a-zA-Z0-9:/_-]+$",
        id="createalias-pattern",
    ),
    pytest.param(
        "ListGrants",
        {"KeyId": KEY_ID, "Limit": 0, "Marker": ""},
        "2 validation errors detected: "
        "Value '0' at 'limit' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1; "
        "Value '' at 'marker' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1",
        id="several-members",
    ),
]


@pytest.mark.parametrize(("operation", "body", "message"), VALIDATION_CASES)
def test_it_reports_constraint_violations_as_aws_does(operation: str, body: dict[str, Any], message: str) -> None:
    assert validation_error(operation, body) == message


def test_it_hides_sensitive_string_values() -> None:
    body = {
        "CustomKeyStoreName": "store",
        "KeyStorePassword": "short",
        "CloudHsmClusterId": "cluster-234abcdefgh",
    }
    message = validation_error("CreateCustomKeyStore", body)
    assert "short" not in message
    assert "Value at 'keyStorePassword' failed to satisfy constraint" in message


# --- SerializationException --------------------------------------------------

SERIALIZATION_CASES = [
    pytest.param(
        "GenerateRandom",
        {"NumberOfBytes": "32"},
        "STRING_VALUE can not be converted to an Integer",
        id="string-for-integer",
    ),
    pytest.param(
        "GenerateRandom",
        {"NumberOfBytes": True},
        "TRUE_VALUE can not be converted to an Integer",
        id="bool-for-integer",
    ),
    pytest.param(
        "GenerateRandom",
        {"NumberOfBytes": 1.5},
        "NUMBER_VALUE can not be converted to an Integer",
        id="fraction-for-integer",
    ),
    pytest.param(
        "GenerateRandom",
        {"NumberOfBytes": 2**31},
        "NUMBER_VALUE 2147483648 can not be converted to an Integer",
        id="integer-overflow",
    ),
    pytest.param(
        "Encrypt",
        {"KeyId": 42, "Plaintext": b64(b"x")},
        "NUMBER_VALUE can not be converted to a String",
        id="number-for-string",
    ),
    pytest.param(
        "CreateKey",
        {"BypassPolicyLockoutSafetyCheck": "true"},
        "STRING_VALUE can not be converted to a Boolean",
        id="string-for-boolean",
    ),
    pytest.param(
        "Encrypt",
        {"KeyId": KEY_ID, "Plaintext": "not base64!"},
        "Base64 value could not be decoded",
        id="invalid-base64",
    ),
    pytest.param(
        "Encrypt",
        {"KeyId": KEY_ID, "Plaintext": "QQ"},
        "Base64 value could not be decoded",
        id="base64-without-padding",
    ),
    pytest.param(
        "Encrypt",
        {"KeyId": KEY_ID, "Plaintext": "QQ==QQ=="},
        "Base64 value could not be decoded",
        id="base64-data-after-padding",
    ),
    pytest.param(
        "Encrypt",
        {"KeyId": KEY_ID, "Plaintext": " QQ=="},
        "Base64 value could not be decoded",
        id="base64-with-whitespace",
    ),
    pytest.param(
        "Encrypt",
        {"KeyId": KEY_ID, "Plaintext": "QQ\u00e9="},
        "Base64 value could not be decoded",
        id="base64-non-ascii",
    ),
    pytest.param(
        "CreateKey",
        {"Tags": {"TagKey": "k", "TagValue": "v"}},
        "Start of structure or map found where not expected.",
        id="object-for-list",
    ),
    pytest.param(
        "CreateKey",
        {"Tags": ["team"]},
        "STRING_VALUE can not be converted to a structure",
        id="string-for-structure",
    ),
    pytest.param(
        "Encrypt",
        {"KeyId": KEY_ID, "Plaintext": b64(b"x"), "EncryptionContext": {"k": 1}},
        "NUMBER_VALUE can not be converted to a String",
        id="number-in-map",
    ),
    pytest.param(
        "Encrypt",
        {"KeyId": [KEY_ID], "Plaintext": b64(b"x")},
        "Start of list found where not expected",
        id="list-for-string",
    ),
    pytest.param("ListKeys", [], "Start of list found where not expected", id="body-is-a-list"),
    pytest.param(
        "ListKeys",
        "{}",
        "STRING_VALUE can not be converted to a structure",
        id="body-is-a-string",
    ),
]


@pytest.mark.parametrize(("operation", "body", "message"), SERIALIZATION_CASES)
def test_it_reports_wrong_json_types_as_serialization_errors(operation: str, body: Any, message: str) -> None:
    assert serialization_error(operation, body) == message


def test_it_reports_serialization_before_validation() -> None:
    # AWS deserializes before it validates: the type error wins.
    body = {"KeyId": "", "Plaintext": b64(b"x"), "GrantTokens": "not-a-list"}
    assert serialization_error("Encrypt", body) == "STRING_VALUE can not be converted to a List"


# --- what kmsweb refuses beyond the model ----------------------------------------


@pytest.mark.parametrize(
    ("operation", "body", "message"),
    [
        pytest.param(
            "UntagResource",
            {"KeyId": KEY_ID, "TagKeys": ["ok", "a\x00b"]},
            "1 validation error detected: Value 'a\x00b' at 'tagKeys.2.member' failed to satisfy constraint: "
            "Member must not contain the NUL character (U+0000)",
            id="list-item",
        ),
        pytest.param(
            "ListGrants",
            {"KeyId": KEY_ID, "GrantId": "\x00"},
            "1 validation error detected: Value '\x00' at 'grantId' failed to satisfy constraint: "
            "Member must not contain the NUL character (U+0000)",
            id="member",
        ),
        pytest.param(
            "CreateKey",
            {"Tags": [{"TagKey": "k\x00", "TagValue": "v"}]},
            "1 validation error detected: Value 'k\x00' at 'tags.1.member.tagKey' failed to satisfy constraint: "
            "Member must not contain the NUL character (U+0000)",
            id="nested-member",
        ),
        pytest.param(
            "CreateGrant",
            {
                "KeyId": KEY_ID,
                "GranteePrincipal": "arn:aws:iam::111122223333:role/r",
                "Operations": ["Decrypt"],
                "Constraints": {"EncryptionContextEquals": {"a": "\x00"}},
            },
            "1 validation error detected: Value '{a=\x00}' at 'constraints.encryptionContextEquals' failed to "
            "satisfy constraint: Map value must satisfy constraint: "
            "[Member must not contain the NUL character (U+0000)]",
            id="stored-context",
        ),
        pytest.param(
            "Decrypt",
            {"KeyId": KEY_ID},
            "1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy constraint: "
            "Member must not be null",
            id="kmsweb-required",
        ),
    ],
)
def test_it_refuses_what_kmsweb_cannot_store_or_serve(operation: str, body: dict[str, Any], message: str) -> None:
    assert validation_error(operation, body) == message


def test_it_accepts_nul_in_a_request_encryption_context() -> None:
    # Bound into the ciphertext, never stored; AWS accepts any text there.
    context = {"a\x00": "\x00"}
    params = parse_input("Encrypt", {"KeyId": KEY_ID, "Plaintext": b64(b"x"), "EncryptionContext": context})
    assert params["EncryptionContext"] == context


def test_its_kmsweb_required_members_are_optional_members_of_the_model() -> None:
    for operation, members in KMSWEB_REQUIRED.items():
        shape = service_model().operation_model(operation).input_shape
        assert members <= set(shape.members) - set(shape.required_members), operation


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
        (b'{"KeyId": "\\ud800"}', "surrogate"),
        (b'{"KeyId": "x", "X": [[{"\\udfff": 1}]]}', "surrogate"),
        (b"{'KeyId': 1}", "not expected"),
        (b'{"KeyId": "\xff"}', "not expected"),
    ],
    ids=["deep-list", "deep-object", "lone-surrogate", "surrogate-in-a-key", "not-json", "not-utf8"],
)
def test_it_refuses_a_body_it_cannot_decode(raw: bytes, words: str) -> None:
    with pytest.raises(SerializationError) as excinfo:
        parse_body(raw)
    assert excinfo.value.code == "SerializationException"
    assert words in excinfo.value.message


def test_it_decodes_a_body_with_whole_surrogate_pairs() -> None:
    assert parse_body(b'{"Description": "\\ud83d\\udd11"}') == {"Description": "\U0001f511"}
    assert parse_body(b"") == {}


# --- accepted input ------------------------------------------------------------


def test_it_decodes_blobs_and_keeps_the_rest() -> None:
    params = parse_input(
        "Encrypt",
        {
            "KeyId": KEY_ID,
            "Plaintext": b64(b"\x00secret\xff"),
            "EncryptionContext": {"purpose": "test"},
            "GrantTokens": ["t1"],
            "DryRun": False,
        },
    )
    assert params == {
        "KeyId": KEY_ID,
        "Plaintext": b"\x00secret\xff",
        "EncryptionContext": {"purpose": "test"},
        "GrantTokens": ["t1"],
        "DryRun": False,
    }


def test_it_ignores_unknown_members_at_any_depth() -> None:
    params = parse_input(
        "CreateKey",
        {"Bogus": 1, "Tags": [{"TagKey": "k", "TagValue": "v", "Extra": {"x": 1}}]},
    )
    assert params == {"Tags": [{"TagKey": "k", "TagValue": "v"}]}


def test_it_accepts_the_bounds_themselves() -> None:
    assert parse_input("GenerateRandom", {"NumberOfBytes": 1024}) == {"NumberOfBytes": 1024}
    assert parse_input("ListKeys", {"Limit": 1})["Limit"] == 1
    plaintext = b"x" * 4096
    assert parse_input("Encrypt", {"KeyId": KEY_ID, "Plaintext": b64(plaintext)})["Plaintext"] == (plaintext)


def test_it_turns_epoch_seconds_into_aware_datetimes() -> None:
    params = parse_input(
        "ImportKeyMaterial",
        {
            "KeyId": KEY_ID,
            "ImportToken": b64(b"token"),
            "EncryptedKeyMaterial": b64(b"material"),
            "ValidTo": 1714564800.5,
        },
    )
    assert params["ValidTo"] == datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)


def test_it_takes_what_botocore_sends() -> None:
    # Serialize with botocore's own JSON serializer, then parse it back.
    model = service_model().operation_model("CreateKey")
    params = {
        "Description": "round trip",
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "Tags": [{"TagKey": "team", "TagValue": "crypto"}],
        "MultiRegion": False,
    }
    request = create_serializer("json").serialize_to_request(params, model)
    assert parse_input("CreateKey", json.loads(request["body"])) == params

    model = service_model().operation_model("Decrypt")
    params = {"CiphertextBlob": b"\x01\x02\x03", "EncryptionContext": {"a": "b"}}
    request = create_serializer("json").serialize_to_request(params, model)
    assert parse_input("Decrypt", json.loads(request["body"])) == params


# --- output --------------------------------------------------------------------


class KeyState(enum.Enum):
    ENABLED = "Enabled"


def test_it_serializes_describe_key_so_botocore_reads_it_back() -> None:
    created = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    result = {
        "KeyMetadata": {
            "AWSAccountId": "111122223333",
            "KeyId": KEY_ID,
            "Arn": KEY_ARN,
            "CreationDate": created,
            "DeletionDate": None,
            "ValidTo": created + timedelta(days=365),
            "Enabled": True,
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": KeyState.ENABLED,
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
            "MultiRegion": False,
            "MultiRegionConfiguration": {
                "MultiRegionKeyType": "PRIMARY",
                "PrimaryKey": {"Arn": KEY_ARN, "Region": "us-east-1"},
                "ReplicaKeys": [{"Arn": KEY_ARN, "Region": "eu-west-1"}],
            },
            "_internal_pk": 7,
        }
    }
    body = serialize_output("DescribeKey", result)
    json.dumps(body)  # JSON-ready as it stands
    meta = body["KeyMetadata"]
    assert meta["CreationDate"] == created.timestamp()
    assert "DeletionDate" not in meta and "_internal_pk" not in meta
    assert meta["KeyState"] == "Enabled"

    parsed = parse_with_botocore("DescribeKey", body)["KeyMetadata"]
    assert parsed["CreationDate"] == created
    assert parsed["ValidTo"] == created + timedelta(days=365)
    assert parsed["Enabled"] is True and parsed["MultiRegion"] is False
    assert parsed["KeyState"] == "Enabled"
    assert parsed["MultiRegionConfiguration"]["ReplicaKeys"] == [{"Arn": KEY_ARN, "Region": "eu-west-1"}]
    assert "DeletionDate" not in parsed


def test_it_takes_naive_datetimes_as_utc() -> None:
    naive = datetime(2024, 5, 1, 12, 0, 0)
    body = serialize_output("DescribeKey", {"KeyMetadata": {"KeyId": KEY_ID, "CreationDate": naive}})
    parsed = parse_with_botocore("DescribeKey", body)
    assert parsed["KeyMetadata"]["CreationDate"] == naive.replace(tzinfo=UTC)


def test_it_serializes_encrypt_so_botocore_reads_it_back() -> None:
    ciphertext = bytes(range(256))
    body = serialize_output(
        "Encrypt",
        {
            "CiphertextBlob": ciphertext,
            "KeyId": KEY_ARN,
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        },
    )
    assert body["CiphertextBlob"] == b64(ciphertext)
    assert parse_with_botocore("Encrypt", body) == {
        "CiphertextBlob": ciphertext,
        "KeyId": KEY_ARN,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }


def test_it_keeps_false_and_empty_lists() -> None:
    body = serialize_output("ListKeys", {"Keys": [], "Truncated": False, "NextMarker": None})
    assert body == {"Keys": [], "Truncated": False}
    assert parse_with_botocore("ListKeys", body) == {"Keys": [], "Truncated": False}


@settings(max_examples=100, deadline=None)
@given(plaintext=st.binary(max_size=1024), ciphertext=st.binary(min_size=1, max_size=2048))
def test_it_round_trips_any_bytes_through_botocore(plaintext: bytes, ciphertext: bytes) -> None:
    body = serialize_output(
        "GenerateDataKey",
        {"CiphertextBlob": ciphertext, "Plaintext": plaintext, "KeyId": KEY_ARN},
    )
    parsed = parse_with_botocore("GenerateDataKey", body)
    assert parsed["CiphertextBlob"] == ciphertext
    # botocore drops an empty blob's value to b"" as well.
    assert parsed["Plaintext"] == plaintext


ENCODE_CASES = [
    (
        "Encrypt",
        {"CiphertextBlob": bytes(range(256)) * 20, "KeyId": KEY_ARN, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"},
    ),
    ("GenerateDataKey", {"CiphertextBlob": b"\x00c", "Plaintext": b"", "KeyId": KEY_ARN, "KeyMaterialId": "m"}),
    (
        "GenerateDataKeyPair",
        {
            "PrivateKeyCiphertextBlob": b"\x01" * 40,
            "PrivateKeyPlaintext": b"\xff" * 33,
            "PublicKey": b"\x30\x59",
            "KeyId": KEY_ARN,
            "KeyPairSpec": "ECC_NIST_P256",
        },
    ),
    ("Decrypt", {"Plaintext": b"only a blob"}),
    ("Sign", {"KeyId": KEY_ARN, "Signature": b"sig", "SigningAlgorithm": "ECDSA_SHA_256"}),
    ("GenerateRandom", {"Plaintext": None, "CiphertextForRecipient": None}),
    ("ListKeys", {"Keys": [{"KeyId": KEY_ID, "KeyArn": KEY_ARN}], "Truncated": False}),
    ("DescribeKey", {"KeyMetadata": {"KeyId": KEY_ID, "CreationDate": datetime(2024, 5, 1, tzinfo=UTC)}}),
    ("EnableKey", {}),
]


@pytest.mark.parametrize(("operation", "result"), ENCODE_CASES, ids=[case[0] for case in ENCODE_CASES])
def test_the_encoded_body_is_the_serialized_one(operation: str, result: dict[str, Any]) -> None:
    """encode_output writes blobs into the JSON text itself: it must say exactly what serialize_output says."""
    encoded = encode_output(operation, result)
    encoded.decode("ascii")  # ASCII throughout
    assert json.loads(encoded) == serialize_output(operation, result)
    if serialize_output(operation, result):
        assert parse_with_botocore(operation, json.loads(encoded)) == parse_with_botocore(
            operation, serialize_output(operation, result)
        )


@settings(max_examples=100, deadline=None)
@given(plaintext=st.binary(max_size=1024), ciphertext=st.binary(min_size=1, max_size=2048))
def test_any_bytes_encode_to_what_botocore_reads_back(plaintext: bytes, ciphertext: bytes) -> None:
    body = json.loads(encode_output("GenerateDataKey", {"CiphertextBlob": ciphertext, "Plaintext": plaintext}))
    parsed = parse_with_botocore("GenerateDataKey", body)
    assert parsed["CiphertextBlob"] == ciphertext
    assert parsed["Plaintext"] == plaintext
