"""Bad input through the wire: the AWS error a client expects, and nothing changed.

Every refusal must carry the right error code, a readable message and HTTP
400 (403 only where the SigV4 layer answers so), leave state as it was, and
be on the audit trail exactly once with that error code. Nothing here may
answer 500.

boto3 clients are built with ``validate=False`` so that botocore's own
parameter checks do not stop bad input before it reaches the server. Cases
boto3 cannot produce at all (no signature, an expired one, a body changed
after signing, ...) are signed with botocore's ``SigV4Auth`` by hand and sent
with ``requests``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests
import time_machine
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from audit.models import AuditEvent
from keys.models import Alias, Key
from kmsweb.lib.caller import Caller
from policies.models import AccessKey
from policies.services import access_key_set_status
from tests.conftest import REGION, Persona

pytestmark = pytest.mark.django_db(transaction=True)

CONTENT_TYPE = "application/x-amz-json-1.1"
# The SigV4 layer answers a request without any signature with 403; every
# other refusal, signature problems included, is a 400 as AWS's JSON
# services answer them.
STATUS = {"MissingAuthenticationTokenException": 403, "DryRunOperationException": 412}
# Errors AWS answers with no message member at all.
BARE = {"InvalidCiphertextException", "KMSInvalidSignatureException", "KMSInvalidMacException"}


# --- helpers -----------------------------------------------------------------


def last_event_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def assert_audited_once(since: int, event_name: str, code: str) -> AuditEvent:
    events = list(AuditEvent.objects.filter(id__gt=since))
    assert [(e.event_name, e.error_code) for e in events] == [(event_name, code)]
    assert events[0].error_message
    return events[0]


def refused(call: Callable[..., Any], code: str, /, **params: Any) -> dict[str, Any]:
    """Make one boto3 call that must fail with ``code``; check status, message and audit.

    Returns the error's response for further checks.
    """
    since = last_event_id()
    with pytest.raises(ClientError) as excinfo:
        call(**params)
    response = excinfo.value.response
    assert response["Error"]["Code"] == code, response["Error"]
    if code in BARE:
        assert response["Error"]["Message"] == "", "AWS sends this error without a message"
    else:
        assert response["Error"]["Message"].strip(), "the message must say what is wrong"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == STATUS.get(code, 400)
    assert response["ResponseMetadata"]["RequestId"]
    assert_audited_once(since, excinfo.value.operation_name, code)
    return response


def message(response: dict[str, Any]) -> str:
    return response["Error"]["Message"]


def sign(
    url: str,
    target: str | None,
    body: bytes,
    *,
    access_key_id: str,
    secret: str,
    at: datetime | None = None,
    sign_target: bool = True,
) -> dict[str, str]:
    """The headers botocore would send for this request, signed with SigV4."""
    headers = {"Content-Type": CONTENT_TYPE}
    if target is not None and sign_target:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    signer = SigV4Auth(Credentials(access_key_id, secret), "kms", REGION)
    if at is None:
        signer.add_auth(request)
    else:
        # Only the signing travels in time; the server keeps the real clock.
        with time_machine.travel(at, tick=False):
            signer.add_auth(request)
    signed = dict(request.prepare().headers)
    if target is not None and not sign_target:
        signed["X-Amz-Target"] = target
    return signed


@dataclasses.dataclass
class Wire:
    """Raw HTTP to the live server, for requests boto3 would never send."""

    url: str

    def post(self, headers: dict[str, str], body: bytes) -> requests.Response:
        return requests.post(self.url, data=body, headers=headers, timeout=10)

    def call(
        self,
        persona: Persona,
        target: str | None,
        params: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        **sign_options: Any,
    ) -> requests.Response:
        body = params if isinstance(params, bytes) else json.dumps(params).encode()
        headers = sign(
            self.url,
            target,
            body,
            access_key_id=persona.access_key_id,
            secret=secret or persona.secret,
            **sign_options,
        )
        return self.post(headers, body)


@pytest.fixture
def wire(live_server: Any) -> Wire:
    return Wire(live_server.url + "/")


def assert_wire_error(response: requests.Response, code: str) -> str:
    """Check a raw error response; return its message."""
    assert response.status_code == STATUS.get(code, 400), response.text
    assert response.headers["Content-Type"].startswith(CONTENT_TYPE)
    assert response.headers["x-amzn-RequestId"]
    body = response.json()
    assert body["__type"] == code, body
    assert body["message"].strip()
    return body["message"]


@pytest.fixture
def bad(kms_client: Callable[..., Any], key_admin: Persona) -> Any:
    """key_admin's boto3 client without client-side validation."""
    return kms_client(key_admin, validate=False)


@pytest.fixture
def key(bad: Any) -> dict[str, Any]:
    return bad.create_key(Description="target")["KeyMetadata"]


def state(kms: Any, key_id: str) -> str:
    return kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]


@pytest.fixture
def nothing_created() -> Iterator[None]:
    """Assert that no key and no alias appear during the test."""
    keys, aliases = Key.objects.count(), Alias.objects.count()
    yield
    assert (Key.objects.count(), Alias.objects.count()) == (keys, aliases)


# --- authentication ----------------------------------------------------------


def test_it_refuses_a_request_without_authorization(wire, key_admin, nothing_created) -> None:
    since = last_event_id()
    response = wire.post(
        {"Content-Type": CONTENT_TYPE, "X-Amz-Target": "TrentService.CreateKey"}, b'{"Description": "x"}'
    )
    assert "Authentication Token" in assert_wire_error(response, "MissingAuthenticationTokenException")
    event = assert_audited_once(since, "CreateKey", "MissingAuthenticationTokenException")
    assert event.principal_arn == ""


@pytest.mark.parametrize(
    ("authorization", "code", "words"),
    [
        ("AWS4-HMAC-SHA256 garbage", "IncompleteSignatureException", "key=value"),
        (
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20240101/us-east-1/kms/aws4_request",
            "IncompleteSignatureException",
            "Signature",
        ),
        ("Bearer 0123456789abcdef", "MissingAuthenticationTokenException", "Authentication Token"),
    ],
    ids=["not-key-value", "missing-parts", "not-sigv4"],
)
def test_it_refuses_a_garbled_authorization_header(
    wire, key_admin, nothing_created, authorization: str, code: str, words: str
) -> None:
    since = last_event_id()
    headers = {
        "Content-Type": CONTENT_TYPE,
        "X-Amz-Target": "TrentService.CreateKey",
        "X-Amz-Date": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "Authorization": authorization,
    }
    assert words in assert_wire_error(wire.post(headers, b"{}"), code)
    assert_audited_once(since, "CreateKey", code)


def test_it_refuses_a_signature_made_with_the_wrong_secret(kms_client, key_admin, nothing_created) -> None:
    impostor = kms_client(dataclasses.replace(key_admin, secret="not-the-secret-at-all-0000000000000000"))
    response = refused(impostor.create_key, "InvalidSignatureException", Description="x")
    assert "signature we calculated does not match" in message(response)


def test_it_refuses_an_unknown_access_key(kms_client, key_admin, nothing_created) -> None:
    stranger = kms_client(dataclasses.replace(key_admin, access_key_id="AKIA" + "Z" * 16))
    response = refused(stranger.create_key, "UnrecognizedClientException", Description="x")
    assert "security token" in message(response)


def test_it_refuses_an_inactive_access_key(kms_client, key_admin, nothing_created) -> None:
    kms = kms_client(key_admin)
    kms.list_keys()  # the key works while active (and the live server has cached it)
    access_key_set_status(
        caller=Caller.system("tests", account_id=key_admin.account_id),
        access_key=AccessKey.objects.get(pk=key_admin.access_key_id),
        active=False,
    )
    refused(kms.create_key, "UnrecognizedClientException", Description="x")


def test_it_refuses_a_request_signed_twenty_minutes_ago(wire, key_admin, nothing_created) -> None:
    since = last_event_id()
    response = wire.call(
        key_admin,
        "TrentService.CreateKey",
        {"Description": "late"},
        at=datetime.now(UTC) - timedelta(minutes=20),
    )
    assert "Signature expired" in assert_wire_error(response, "InvalidSignatureException")
    assert_audited_once(since, "CreateKey", "InvalidSignatureException")


def test_it_accepts_the_same_request_signed_now(wire, key_admin) -> None:
    # The control for the raw cases: the signing helper itself is sound.
    response = wire.call(key_admin, "TrentService.ListKeys", {})
    assert response.status_code == 200, response.text
    assert response.json()["Truncated"] is False


def test_it_refuses_a_body_changed_after_signing(wire, bad, key_admin, key) -> None:
    other = bad.create_key()["KeyMetadata"]
    signed_body = json.dumps({"KeyId": key["KeyId"], "PendingWindowInDays": 30}).encode()
    sent_body = json.dumps({"KeyId": other["KeyId"], "PendingWindowInDays": 7}).encode()
    headers = sign(
        wire.url,
        "TrentService.ScheduleKeyDeletion",
        signed_body,
        access_key_id=key_admin.access_key_id,
        secret=key_admin.secret,
    )
    since = last_event_id()
    response = wire.post(headers, sent_body)
    assert "signature" in assert_wire_error(response, "InvalidSignatureException")
    assert_audited_once(since, "ScheduleKeyDeletion", "InvalidSignatureException")
    assert state(bad, key["KeyId"]) == state(bad, other["KeyId"]) == "Enabled"


def test_it_refuses_an_x_amz_target_that_is_not_signed(wire, bad, key_admin, key) -> None:
    since = last_event_id()
    response = wire.call(key_admin, "TrentService.DisableKey", {"KeyId": key["KeyId"]}, sign_target=False)
    assert "X-Amz-Target" in assert_wire_error(response, "InvalidSignatureException")
    assert_audited_once(since, "DisableKey", "InvalidSignatureException")
    assert state(bad, key["KeyId"]) == "Enabled"


# --- protocol ----------------------------------------------------------------


def test_it_refuses_an_unknown_operation(wire, key_admin) -> None:
    for target in ("TrentService.MakeCoffee", "DynamoDB_20120810.ListTables", "ListKeys"):
        since = last_event_id()
        response = wire.call(key_admin, target, {})
        assert target in assert_wire_error(response, "UnknownOperationException")
        assert_audited_once(since, "UnknownOperation", "UnknownOperationException")


def test_it_refuses_a_body_that_is_not_a_json_object(wire, key_admin, nothing_created) -> None:
    for body in (b'{"Description": ', b"not json", b"\xff\xfe", b"[]", b'"text"'):
        since = last_event_id()
        response = wire.call(key_admin, "TrentService.CreateKey", body)
        assert_wire_error(response, "SerializationException")
        assert_audited_once(since, "CreateKey", "SerializationException")


def test_it_refuses_a_missing_required_member(bad, key, nothing_created) -> None:
    response = refused(bad.encrypt, "ValidationException", KeyId=key["KeyId"])
    assert "'plaintext'" in message(response)
    assert "must not be null" in message(response)
    response = refused(bad.create_alias, "ValidationException", AliasName="alias/no-target")
    assert "'targetKeyId'" in message(response)


def test_it_refuses_a_member_of_the_wrong_type(bad, nothing_created) -> None:
    response = refused(bad.list_keys, "SerializationException", Limit="ten")
    assert "can not be converted to an Integer" in message(response)
    refused(bad.create_key, "SerializationException", Description=42)


def test_it_refuses_wrong_json_types_boto3_cannot_send(wire, key_admin, nothing_created) -> None:
    for target, params in (
        ("Encrypt", {"KeyId": "alias/x", "Plaintext": "eA==", "EncryptionContext": ["a"]}),  # list for map
        ("Encrypt", {"KeyId": "alias/x", "Plaintext": "not base64!"}),
        ("CreateKey", {"Tags": {"TagKey": "a", "TagValue": "b"}}),  # map for list
        ("ListKeys", {"Limit": True}),
        ("GenerateRandom", {"NumberOfBytes": 2**40}),  # no Java int holds it
    ):
        since = last_event_id()
        assert_wire_error(wire.call(key_admin, f"TrentService.{target}", params), "SerializationException")
        assert_audited_once(since, target, "SerializationException")


def test_it_refuses_a_lone_surrogate_in_a_string(bad, key, nothing_created) -> None:
    # JSON can spell half a UTF-16 pair ("\\ud800"); no UTF-8 text holds it.
    response = refused(
        bad.encrypt, "SerializationException", KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"k\ud800": "v"}
    )
    assert "surrogate" in message(response)
    refused(bad.create_key, "SerializationException", Description="half a pair: \udc00")
    # A whole pair is fine.
    context = {"emoji \U0001f511": "\u00e9t\u00e9"}
    blob = bad.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext=context)["CiphertextBlob"]
    assert bad.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"x"


def test_it_never_answers_500_for_a_nul_character(bad, key) -> None:
    for call, params in (
        (bad.create_key, {"Description": "a\x00b"}),
        (bad.update_key_description, {"KeyId": key["KeyId"], "Description": "\x00"}),
        (bad.tag_resource, {"KeyId": key["KeyId"], "Tags": [{"TagKey": "k", "TagValue": "\x00"}]}),
        (bad.encrypt, {"KeyId": key["KeyId"], "Plaintext": b"x", "EncryptionContext": {"a": "\x00"}}),
    ):
        since = last_event_id()
        try:
            call(**params)
        except ClientError as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400, exc.response["Error"]
        # Accepted or refused, the call is on the audit trail once.
        assert AuditEvent.objects.filter(id__gt=since).count() == 1


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"Description": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    ],
    ids=["deep-list", "deep-object", "deep-member"],
)
def test_it_refuses_deeply_nested_json(wire, key_admin, nothing_created, body: bytes) -> None:
    since = last_event_id()
    message = assert_wire_error(wire.call(key_admin, "TrentService.CreateKey", body), "SerializationException")
    assert "nested too deeply" in message
    assert_audited_once(since, "CreateKey", "SerializationException")


def test_it_refuses_a_policy_nested_too_deeply(bad, key) -> None:
    deep = '{"Version": "2012-10-17", "Statement": ' + "[" * 5_000 + "]" * 5_000 + "}"
    response = refused(bad.put_key_policy, "MalformedPolicyDocumentException", KeyId=key["KeyId"], Policy=deep)
    assert "nested too deeply" in message(response)
    refused(bad.create_key, "MalformedPolicyDocumentException", Policy=deep)


@pytest.mark.parametrize(
    ("call", "params", "code", "expected"),
    [
        (
            "list_retirable_grants",
            {},
            "ValidationException",
            "You must specify either RetiringPrincipal or RetiringServicePrincipal, but not both.",
        ),
        (
            "list_retirable_grants",
            {"RetiringServicePrincipal": "ec2.amazonaws.com"},
            "AccessDeniedException",
            "the RetiringServicePrincipal filter is only for callers in that service principal",
        ),
        (
            "create_grant",
            {"Operations": ["Decrypt"]},
            "ValidationException",
            "You must specify either GranteePrincipal or GranteeServicePrincipal, but not both.",
        ),
    ],
    ids=["list-retirable-grants", "service-principal-only", "create-grant"],
)
def test_it_refuses_a_missing_principal_the_model_leaves_optional(
    bad, key, call: str, params: dict[str, Any], code: str, expected: str
) -> None:
    # botocore's model lets a service principal stand in for the principal ARN: one of them is needed,
    # and only that service itself may list the grants it may retire.
    if call == "create_grant":
        params = {**params, "KeyId": key["KeyId"]}
    response = refused(getattr(bad, call), code, **params)
    assert expected in message(response)


@pytest.mark.parametrize(
    ("call", "params", "member"),
    [
        ("untag_resource", {"TagKeys": ["a\x00b"]}, "tagKeys.1.member"),
        ("list_grants", {"GrantId": "\x00"}, "grantId"),
        ("revoke_grant", {"GrantId": "g\x00"}, "grantId"),
        ("describe_key", {}, "keyId"),
        (
            "create_grant",
            {
                "GranteePrincipal": "arn:aws:iam::111122223333:role/x",
                "Operations": ["Decrypt"],
                "Constraints": {"EncryptionContextSubset": {"a": "\x00"}},
            },
            "constraints.encryptionContextSubset",
        ),
    ],
    ids=["untag-resource", "list-grants", "revoke-grant", "key-id", "grant-constraint"],
)
def test_it_refuses_a_nul_character_in_a_stored_or_looked_up_string(
    bad, key, call: str, params: dict[str, Any], member: str
) -> None:
    params = {"KeyId": key["KeyId"] if call != "describe_key" else "key\x00", **params}
    response = refused(getattr(bad, call), "ValidationException", **params)
    assert f"at '{member}' failed to satisfy constraint" in message(response)
    assert "NUL character" in message(response)


def test_it_accepts_a_nul_character_in_an_encryption_context(bad, key) -> None:
    # AWS accepts any text there; the context is bound, never stored.
    context = {"a\x00": "b\x00c"}
    blob = bad.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext=context)["CiphertextBlob"]
    assert bad.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"x"
    refused(bad.decrypt, "InvalidCiphertextException", CiphertextBlob=blob, EncryptionContext={"a": "b\x00c"})


def test_it_refuses_a_value_outside_its_enum(bad, key, nothing_created) -> None:
    response = refused(bad.create_key, "ValidationException", KeySpec="AES_512")
    assert "enum value set" in message(response)
    assert "AES_512" in message(response)
    refused(bad.generate_data_key, "ValidationException", KeyId=key["KeyId"], KeySpec="AES_64")
    refused(bad.encrypt, "ValidationException", KeyId=key["KeyId"], Plaintext=b"x", EncryptionAlgorithm="ROT13")


@pytest.mark.parametrize("limit", [0, 1001])
def test_it_refuses_a_limit_out_of_range(bad, key, limit: int) -> None:
    for call in (bad.list_keys, bad.list_aliases):
        response = refused(call, "ValidationException", Limit=limit)
        assert "'limit'" in message(response)
    refused(bad.list_resource_tags, "ValidationException", KeyId=key["KeyId"], Limit=limit)


def forged(values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


FORGED_MARKERS = [
    "garbage!",
    forged({"not": "a list"}),
    forged(["x", "y"]),  # not a date
    forged(["2024-01-01T00:00:00+00:00", "not-a-uuid"]),
    forged(["2024-01-01T00:00:00", str(uuid.uuid4())]),  # naive date
    forged([1, 2]),
    forged([["nested"]]),
    forged([None]),
    forged(["abc"]),  # not a version
    forged([2**70]),  # no column holds it
]


def test_it_refuses_a_forged_paging_marker(bad, key) -> None:
    for marker in FORGED_MARKERS:
        for call, params in (
            (bad.list_keys, {}),
            (bad.list_aliases, {}),
            (bad.list_resource_tags, {"KeyId": key["KeyId"]}),
            (bad.list_key_rotations, {"KeyId": key["KeyId"]}),
        ):
            since = last_event_id()
            try:
                call(Marker=marker, **params)
            except ClientError as exc:
                # Never a 500: a marker that cannot be one of ours is InvalidMarker.
                error = exc.response["Error"]
                assert error["Code"] == "InvalidMarkerException", (exc.operation_name, marker, error)
                assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400
                assert_audited_once(since, exc.operation_name, "InvalidMarkerException")


def test_it_refuses_a_plaintext_over_4096_bytes(bad, key) -> None:
    response = refused(bad.encrypt, "ValidationException", KeyId=key["KeyId"], Plaintext=b"x" * 4097)
    assert "'plaintext'" in message(response)
    assert "x" * 20 not in message(response), "a plaintext is never echoed"
    # The bound itself is fine.
    assert bad.encrypt(KeyId=key["KeyId"], Plaintext=b"x" * 4096)["CiphertextBlob"]


@pytest.mark.parametrize("size", [0, 1025])
def test_it_refuses_a_number_of_bytes_out_of_range(bad, key, size: int) -> None:
    response = refused(bad.generate_random, "ValidationException", NumberOfBytes=size)
    assert "'numberOfBytes'" in message(response)
    refused(bad.generate_data_key, "ValidationException", KeyId=key["KeyId"], NumberOfBytes=size)
    refused(bad.generate_data_key_without_plaintext, "ValidationException", KeyId=key["KeyId"], NumberOfBytes=size)


def test_it_refuses_a_data_key_request_with_both_or_neither_size(bad, key) -> None:
    refused(bad.generate_data_key, "ValidationException", KeyId=key["KeyId"])
    refused(bad.generate_data_key, "ValidationException", KeyId=key["KeyId"], KeySpec="AES_256", NumberOfBytes=32)


# --- ciphertexts -------------------------------------------------------------

# kmsweb's blob: format (1) | key id (16) | version (4) | IV (12) | body | tag (16).
FLIPS = {
    "format": 0,
    "key-id": 5,
    "version": 20,
    "iv": 21 + 4,
    "body": 33 + 3,
    "tag": -1,
}


def flip(blob: bytes, position: int, bit: int = 0x01) -> bytes:
    data = bytearray(blob)
    data[position] ^= bit
    return bytes(data)


def test_it_refuses_a_truncated_or_altered_ciphertext(bad, key) -> None:
    context = {"purpose": "test"}
    blob = bad.encrypt(KeyId=key["KeyId"], Plaintext=b"sixteen byte msg", EncryptionContext=context)["CiphertextBlob"]
    assert len(blob) == 21 + 12 + 16 + 16

    for cut in (1, 16, len(blob) - 10):
        refused(bad.decrypt, "InvalidCiphertextException", CiphertextBlob=blob[:-cut], EncryptionContext=context)
    for position in FLIPS.values():
        # AWS answers without a message; the audit record says why.
        refused(
            bad.decrypt, "InvalidCiphertextException", CiphertextBlob=flip(blob, position), EncryptionContext=context
        )
    refused(bad.decrypt, "InvalidCiphertextException", CiphertextBlob=b"\x00" * 100)
    # The original is intact and still opens.
    assert bad.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"sixteen byte msg"


def test_it_refuses_an_empty_ciphertext(bad) -> None:
    refused(bad.decrypt, "ValidationException", CiphertextBlob=b"")


def test_it_refuses_a_ciphertext_of_another_key_when_a_key_id_is_given(bad, key) -> None:
    other = bad.create_key()["KeyMetadata"]
    blob = bad.encrypt(KeyId=other["KeyId"], Plaintext=b"p")["CiphertextBlob"]
    response = refused(bad.decrypt, "IncorrectKeyException", CiphertextBlob=blob, KeyId=key["KeyId"])
    assert "key" in message(response).lower()
    refused(
        bad.re_encrypt,
        "IncorrectKeyException",
        CiphertextBlob=blob,
        SourceKeyId=key["Arn"],
        DestinationKeyId=key["KeyId"],
    )


def test_it_refuses_a_wrong_or_missing_encryption_context(bad, key) -> None:
    blob = bad.encrypt(KeyId=key["KeyId"], Plaintext=b"p", EncryptionContext={"tenant": "a"})["CiphertextBlob"]
    for context in ({"tenant": "b"}, {}, {"tenant": "a", "extra": "x"}, {"Tenant": "a"}, {"tenant": "a "}):
        refused(bad.decrypt, "InvalidCiphertextException", CiphertextBlob=blob, EncryptionContext=context)
    refused(bad.decrypt, "InvalidCiphertextException", CiphertextBlob=blob)
    assert bad.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "a"})["Plaintext"] == b"p"


# --- keys and aliases --------------------------------------------------------


def test_it_refuses_an_unknown_key_or_alias(bad, key_admin) -> None:
    missing = str(uuid.uuid4())
    arn = f"arn:aws:kms:{REGION}:{key_admin.account_id}:key/{missing}"
    for ref in (missing, arn):
        response = refused(bad.describe_key, "NotFoundException", KeyId=ref)
        assert missing in message(response)
        refused(bad.encrypt, "NotFoundException", KeyId=ref, Plaintext=b"p")
    response = refused(bad.encrypt, "NotFoundException", KeyId="alias/nobody", Plaintext=b"p")
    assert "alias/nobody" in message(response)
    refused(bad.describe_key, "NotFoundException", KeyId="not-a-key")
    refused(bad.delete_alias, "NotFoundException", AliasName="alias/nobody")
    refused(bad.update_alias, "NotFoundException", AliasName="alias/nobody", TargetKeyId=str(uuid.uuid4()))


def test_it_refuses_another_accounts_key(bad, kms_client, outsider) -> None:
    theirs = kms_client(outsider)
    their_key = theirs.create_key(Description="theirs")["KeyMetadata"]
    arn = their_key["Arn"]
    assert outsider.account_id in arn

    for call, params in (
        (bad.describe_key, {}),
        (bad.encrypt, {"Plaintext": b"p"}),
        (bad.disable_key, {}),
        (bad.schedule_key_deletion, {"PendingWindowInDays": 7}),
        (bad.update_key_description, {"Description": "mine now"}),
        (bad.tag_resource, {"Tags": [{"TagKey": "k", "TagValue": "v"}]}),
    ):
        response = refused(call, "AccessDeniedException", KeyId=arn, **params)
        assert "is not authorized to perform" in message(response)
    # A bare key id only ever names the caller's own account.
    refused(bad.describe_key, "NotFoundException", KeyId=their_key["KeyId"])

    after = theirs.describe_key(KeyId=arn)["KeyMetadata"]
    assert (after["KeyState"], after["Description"]) == ("Enabled", "theirs")
    assert theirs.list_resource_tags(KeyId=arn)["Tags"] == []


def test_it_refuses_a_disabled_key_for_cryptography(bad, key) -> None:
    blob = bad.encrypt(KeyId=key["KeyId"], Plaintext=b"p")["CiphertextBlob"]
    bad.disable_key(KeyId=key["KeyId"])

    response = refused(bad.encrypt, "DisabledException", KeyId=key["KeyId"], Plaintext=b"p")
    assert key["Arn"] in message(response)
    refused(bad.decrypt, "DisabledException", CiphertextBlob=blob)
    refused(bad.generate_data_key, "DisabledException", KeyId=key["KeyId"], KeySpec="AES_256")
    refused(
        bad.re_encrypt,
        "DisabledException",
        CiphertextBlob=blob,
        DestinationKeyId=bad.create_key()["KeyMetadata"]["KeyId"],
    )
    assert state(bad, key["KeyId"]) == "Disabled"


def test_it_refuses_a_key_pending_deletion(bad, key) -> None:
    blob = bad.encrypt(KeyId=key["KeyId"], Plaintext=b"p")["CiphertextBlob"]
    deletion = bad.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)["DeletionDate"]

    response = refused(bad.encrypt, "KMSInvalidStateException", KeyId=key["KeyId"], Plaintext=b"p")
    assert "pending deletion" in message(response)
    refused(bad.decrypt, "KMSInvalidStateException", CiphertextBlob=blob)
    refused(bad.enable_key, "KMSInvalidStateException", KeyId=key["KeyId"])
    refused(bad.schedule_key_deletion, "KMSInvalidStateException", KeyId=key["KeyId"], PendingWindowInDays=30)
    refused(bad.create_alias, "KMSInvalidStateException", AliasName="alias/doomed", TargetKeyId=key["KeyId"])

    meta = bad.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert (meta["KeyState"], meta["DeletionDate"]) == ("PendingDeletion", deletion)
    assert bad.list_aliases()["Aliases"] == []


def test_it_refuses_cancelling_a_deletion_that_was_not_scheduled(bad, key) -> None:
    refused(bad.cancel_key_deletion, "KMSInvalidStateException", KeyId=key["KeyId"])
    assert state(bad, key["KeyId"]) == "Enabled"


def test_it_refuses_an_alias_that_already_exists(bad, key, key_admin) -> None:
    other = bad.create_key()["KeyMetadata"]
    bad.create_alias(AliasName="alias/taken", TargetKeyId=key["KeyId"])

    response = refused(bad.create_alias, "AlreadyExistsException", AliasName="alias/taken", TargetKeyId=other["KeyId"])
    assert "alias/taken" in message(response)
    (alias,) = bad.list_aliases()["Aliases"]
    assert (alias["AliasName"], alias["TargetKeyId"]) == ("alias/taken", key["KeyId"])


def test_it_refuses_a_reserved_or_malformed_alias_name(bad, key) -> None:
    for name, code in (
        ("alias/aws/s3", "InvalidAliasNameException"),
        ("alias/aws/mine", "InvalidAliasNameException"),
        ("notalias/x", "ValidationException"),
        ("alias/a:b", "ValidationException"),
        ("alias/", "InvalidAliasNameException"),
        # The model's pattern refuses it before the service sees it.
        ("alias/with space", "ValidationException"),
    ):
        refused(bad.create_alias, code, AliasName=name, TargetKeyId=key["KeyId"])
    assert bad.list_aliases()["Aliases"] == []


def test_it_refuses_reserved_or_too_many_tags(bad, key, nothing_created) -> None:
    bad.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "keep", "TagValue": "me"}])
    response = refused(bad.create_key, "TagException", Tags=[{"TagKey": "aws:owner", "TagValue": "v"}])
    assert message(response) == "Tags beginning with aws: are reserved"
    refused(bad.tag_resource, "TagException", KeyId=key["KeyId"], Tags=[{"TagKey": "aws:x", "TagValue": "v"}])
    fifty = [{"TagKey": f"t{i}", "TagValue": "v"} for i in range(50)]
    response = refused(bad.tag_resource, "TagException", KeyId=key["KeyId"], Tags=fifty)
    assert message(response) == "Too many tags"
    twice = [{"TagKey": "dup", "TagValue": "1"}, {"TagKey": "dup", "TagValue": "2"}]
    response = refused(bad.tag_resource, "TagException", KeyId=key["KeyId"], Tags=twice)
    assert message(response) == "Duplicate tag keys"
    assert bad.list_resource_tags(KeyId=key["KeyId"])["Tags"] == [{"TagKey": "keep", "TagValue": "me"}]


def test_it_refuses_an_eleventh_on_demand_rotation(bad, key, live_server, key_admin) -> None:
    for _ in range(10):
        bad.rotate_key_on_demand(KeyId=key["KeyId"])
    current = bad.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"]
    # botocore retries LimitExceededException as throttling (and the shared
    # fixture allows one retry), which would send the request twice.
    once = boto3.client(
        "kms",
        endpoint_url=live_server.url,
        region_name=REGION,
        aws_access_key_id=key_admin.access_key_id,
        aws_secret_access_key=key_admin.secret,
        config=Config(retries={"total_max_attempts": 1}),
    )
    refused(once.rotate_key_on_demand, "LimitExceededException", KeyId=key["KeyId"])
    assert bad.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"] == current
    assert len(bad.list_key_rotations(KeyId=key["KeyId"])["Rotations"]) == 10


@pytest.mark.parametrize("days", [6, 31])
def test_it_refuses_a_deletion_window_outside_seven_to_thirty_days(bad, key, days: int) -> None:
    response = refused(bad.schedule_key_deletion, "ValidationException", KeyId=key["KeyId"], PendingWindowInDays=days)
    assert "'pendingWindowInDays'" in message(response)
    meta = bad.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert meta["KeyState"] == "Enabled"
    assert "DeletionDate" not in meta


@pytest.mark.parametrize("days", [89, 2561])
def test_it_refuses_a_rotation_period_out_of_range(bad, key, days: int) -> None:
    refused(bad.enable_key_rotation, "ValidationException", KeyId=key["KeyId"], RotationPeriodInDays=days)
    assert bad.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is False


@pytest.mark.parametrize("operation", ["decrypt", "re_encrypt"])
def test_it_answers_validation_for_a_missing_ciphertext_blob(
    kms_client: Callable[..., Any], key_admin: Any, make_key: Callable[..., Key], operation: str
) -> None:
    # botocore's model leaves CiphertextBlob optional; kmsweb must not fail with a 500.
    key = make_key()
    client = kms_client(key_admin, validate=False)
    params = {"DestinationKeyId": str(key.id)} if operation == "re_encrypt" else {"KeyId": str(key.id)}
    with pytest.raises(ClientError) as exc:
        getattr(client, operation)(**params)
    assert exc.value.response["Error"]["Code"] == "ValidationException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    event = AuditEvent.objects.filter(error_code="ValidationException").latest("id")
    assert event.event_name == ("Decrypt" if operation == "decrypt" else "ReEncrypt")


def test_it_answers_a_dry_run_with_412_and_the_bare_errors_without_a_message(bad, key, wire, key_admin) -> None:
    response = refused(bad.encrypt, "DryRunOperationException", KeyId=key["KeyId"], Plaintext=b"p", DryRun=True)
    assert message(response) == "The request would have succeeded, but the DryRun option is set."
    # On the wire the body is the bare {"__type": ...}, as AWS sends it.
    blob = base64.b64encode(b"\x01" * 80).decode()
    answer = wire.call(key_admin, "TrentService.Decrypt", {"CiphertextBlob": blob})
    assert (answer.status_code, answer.json()) == (400, {"__type": "InvalidCiphertextException"})
