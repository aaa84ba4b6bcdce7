"""Fuzz: every KMS operation of botocore's model, each input member given edge values.

For every operation the model declares (implemented or not), a valid request
is built from the model and a table of good values (a real key of the kind
the operation needs, a real ciphertext, the caller's own ARN), then one
member at a time is replaced by an edge value of its type: the wrong JSON
type, empty, over the bounds, NUL, a lone surrogate, control characters,
an unknown enum value, bad base64, huge and negative numbers, deep nesting,
left out. Nested members (a tag's key, a grant constraint's context) are
reached through their containers. Bodies that are no JSON object or nest
deeply go to a few operations (they are refused before the operation
matters); odd bodies that do reach the members (empty, a BOM, NaN,
duplicate members, escaped NUL and lone surrogates) go to every operation.

Each request is signed with SigV4 by botocore and sent through kmsweb's WSGI
handler in-process, the path gunicorn takes, against the real database (no
live server: thousands of requests must stay fast). The caller has kms:* so
authorization does not stop a request before its handler. Every answer must
be below 500, be JSON with ``__type`` when it is an error, and leave exactly
one audit event with its request id. Failures are collected and reported
together. A deterministic table, not random draws: a failure names the
operation, member and value, and reruns the same.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import connection

from audit.models import AuditEvent
from keys import services as key_services
from keys.models import Key
from keys.services.common import default_key_policy
from kmsweb.api import shapes
from kmsweb.api.handlers import HANDLERS
from kmsweb.api.wsgi import KmswebWSGIHandler
from tests.conftest import REGION, Persona

pytestmark = pytest.mark.django_db(transaction=True)

CONTENT_TYPE = "application/x-amz-json-1.1"
# Stands for a value that json.dumps cannot write (too deep for its recursion);
# spliced into the encoded body as raw text.
DEEP = "\x00deep\x00"
DEEP_JSON = b"[" * 5000 + b"]" * 5000


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- sending -------------------------------------------------------------------


class Wire:
    """Signed requests through kmsweb's WSGI handler, with the audit trail counted."""

    def __init__(self, persona: Persona) -> None:
        self.persona = persona
        self.handler = KmswebWSGIHandler()
        self.failures: list[str] = []
        self.sent = 0
        self.answers: Counter[tuple[int, str]] = Counter()

    def send(self, operation: str, body: bytes, label: str) -> tuple[int, dict[str, Any]]:
        request = AWSRequest(
            method="POST",
            url="http://testserver/",
            data=body,
            headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": f"TrentService.{operation}"},
        )
        credentials = Credentials(self.persona.access_key_id, self.persona.secret)
        SigV4Auth(credentials, "kms", REGION).add_auth(request)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": "/",
            "QUERY_STRING": "",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "192.0.2.9",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_HOST": "testserver",
        }
        for name, value in request.prepare().headers.items():
            key = name.upper().replace("-", "_")
            environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
        status: list[str] = []
        headers: dict[str, str] = {}

        def start_response(line: str, sent: list[tuple[str, str]]) -> None:
            status.append(line)
            headers.update(sent)

        raw = b"".join(self.handler(environ, start_response))
        code = int(status[0].split()[0])
        # The request's own events: a platform key created on first use is audited as the system's.
        events = AuditEvent.objects.filter(request_id=headers.get("x-amzn-RequestId", "?")).count()
        self.sent += 1
        where = f"{operation} {label}"
        try:
            reply = json.loads(raw)
        except ValueError:
            self.failures.append(f"{where}: {code} not JSON: {raw[:200]!r}")
            return code, {}
        self.answers[(code, reply.get("__type", ""))] += 1
        if code >= 500:
            self.failures.append(f"{where}: {code} {reply}")
        elif code != 200 and not reply.get("__type"):
            self.failures.append(f"{where}: {code} without __type: {reply}")
        elif re.search(r"\bNone\b", str(reply.get("message", ""))):
            # A Python None in a message is a missing member nobody worded.
            self.failures.append(f"{where}: {code} message shows a Python None: {reply}")
        if events != 1:
            self.failures.append(f"{where}: {code} {reply.get('__type')} left {events} audit events")
        return code, reply


def encode(params: dict[str, Any]) -> bytes:
    text = json.dumps(params)
    return text.replace(json.dumps(DEEP), DEEP_JSON.decode()).encode()


# --- good requests -------------------------------------------------------------

# The kind of key an operation's KeyId names (CreateKey's arguments).
KEY_KINDS: dict[str, dict[str, Any]] = {
    "Sign": {"key_spec": "ECC_NIST_P256", "key_usage": "SIGN_VERIFY"},
    "Verify": {"key_spec": "ECC_NIST_P256", "key_usage": "SIGN_VERIFY"},
    "GetPublicKey": {"key_spec": "ECC_NIST_P256", "key_usage": "SIGN_VERIFY"},
    "DeriveSharedSecret": {"key_spec": "ECC_NIST_P256", "key_usage": "KEY_AGREEMENT"},
    "Encapsulate": {"key_spec": "ML_KEM_768", "key_usage": "ENCAPSULATE_DECAPSULATE"},
    "Decapsulate": {"key_spec": "ML_KEM_768", "key_usage": "ENCAPSULATE_DECAPSULATE"},
    "GenerateMac": {"key_spec": "HMAC_256", "key_usage": "GENERATE_VERIFY_MAC"},
    "VerifyMac": {"key_spec": "HMAC_256", "key_usage": "GENERATE_VERIFY_MAC"},
    "GetParametersForImport": {"origin": "EXTERNAL"},
    "ImportKeyMaterial": {"origin": "EXTERNAL"},
    "DeleteImportedKeyMaterial": {"origin": "EXTERNAL"},
}

# Members an operation needs beyond the model's required ones to get past
# kmsweb's own checks (exactly one of KeySpec and NumberOfBytes, ...).
EXTRA: dict[str, dict[str, Any]] = {
    "GenerateDataKey": {"KeySpec": "AES_256"},
    "GenerateDataKeyWithoutPlaintext": {"KeySpec": "AES_256"},
    "CreateGrant": {"GranteePrincipal": None},  # filled with the caller's ARN
    "ListRetirableGrants": {"RetiringPrincipal": None},
    "Decrypt": {"CiphertextBlob": None},
    "ReEncrypt": {"CiphertextBlob": None},
    "GenerateRandom": {"NumberOfBytes": 16},
    "RetireGrant": {"KeyId": None, "GrantId": "0" * 64},
}

# Per-operation good values where the member name alone does not say.
BY_OPERATION: dict[tuple[str, str], Any] = {
    ("Sign", "SigningAlgorithm"): "ECDSA_SHA_256",
    ("Verify", "SigningAlgorithm"): "ECDSA_SHA_256",
    ("DeriveSharedSecret", "KeyAgreementAlgorithm"): "ECDH",
    ("GenerateDataKeyPair", "KeyPairSpec"): "ECC_NIST_P256",
    ("GenerateDataKeyPairWithoutPlaintext", "KeyPairSpec"): "ECC_NIST_P256",
    ("GetParametersForImport", "WrappingAlgorithm"): "RSAES_OAEP_SHA_256",
    ("GetParametersForImport", "WrappingKeySpec"): "RSA_2048",
}


class Goods:
    """Good values by member name, for one operation's key."""

    def __init__(self, persona: Persona, key: Key, ciphertext: str) -> None:
        public = ec.generate_private_key(ec.SECP256R1()).public_key()
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.values: dict[str, Any] = {
            "KeyId": str(key.id),
            "TargetKeyId": str(key.id),
            "DestinationKeyId": str(key.id),
            "SourceKeyId": str(key.id),
            "Plaintext": b64(b"fuzz"),
            "CiphertextBlob": ciphertext,
            "AliasName": "alias/fuzz",
            "GranteePrincipal": persona.principal.arn,
            "RetiringPrincipal": persona.principal.arn,
            "Operations": ["Encrypt"],
            "Tags": [{"TagKey": "k", "TagValue": "v"}],
            "TagKeys": ["k"],
            "Description": "fuzz",
            "Policy": default_key_policy(persona.account_id),
            "PolicyName": "default",
            "Message": b64(b"message"),
            "Signature": b64(b"not a signature"),
            "Mac": b64(b"\x00" * 32),
            "MacAlgorithm": "HMAC_SHA_256",
            "PublicKey": b64(der),
            "NumberOfBytes": 32,
            "ImportToken": b64(b"token"),
            "EncryptedKeyMaterial": b64(b"\x01" * 256),
            "GrantId": "0" * 64,
            "GrantToken": "token",
            "CustomKeyStoreId": "cks-1234567890abcdef0",
            "CustomKeyStoreName": "store",
            "ReplicaRegion": "us-west-2",
            "PrimaryRegion": "us-west-2",
            "EncryptionContext": {"purpose": "fuzz"},
            "Constraints": {"EncryptionContextSubset": {"purpose": "fuzz"}},
            "GrantTokens": [],
            "SharedSecretCiphertextBlob": b64(b"\x02" * 1088),
        }

    def value(self, operation: str, name: str, shape: Any) -> Any:
        if (operation, name) in BY_OPERATION:
            return BY_OPERATION[(operation, name)]
        if name in self.values:
            return self.values[name]
        return sample(shape)


def sample(shape: Any) -> Any:
    """A value that satisfies ``shape`` as far as the model can tell."""
    kind = shape.type_name
    meta = shape.metadata
    if kind == "string":
        if meta.get("enum"):
            return meta["enum"][0]
        return "x" * max(meta.get("min", 1), 1)
    if kind in ("integer", "long"):
        return meta.get("min", 1)
    if kind == "boolean":
        return False
    if kind == "blob":
        return b64(b"x" * max(meta.get("min", 1), 1))
    if kind == "timestamp":
        return 4102444800  # 2100-01-01
    if kind == "list":
        return [sample(shape.member)] if meta.get("min") else []
    if kind == "map":
        return {sample(shape.key): sample(shape.value)}
    return {name: sample(member) for name, member in shape.members.items() if name in shape.required_members}


def good_request(operation: str, goods: Goods) -> dict[str, Any]:
    shape = shapes.service_model().operation_model(operation).input_shape
    params: dict[str, Any] = {}
    for name in [*shape.required_members, *EXTRA.get(operation, {})]:
        extra = EXTRA.get(operation, {}).get(name)
        params[name] = extra if extra is not None else goods.value(operation, name, shape.members[name])
    return params


# --- edge values ---------------------------------------------------------------

ABSENT = object()


def edges(shape: Any) -> Iterator[tuple[str, Any]]:
    """(label, value) pairs at the edge of ``shape``, nested members included."""
    kind = shape.type_name
    meta = shape.metadata
    yield "null", ABSENT
    yield "deep", DEEP
    if kind != "structure":
        yield "object", {"a": {"b": 1}}
    if kind in ("structure", "map"):
        yield "list", [1, "x"]
    if kind == "string":
        yield "number", 5
        yield "empty", ""
        yield "huge", "x" * (meta.get("max", 4096) + 1)
        yield "nul", "a\x00b"
        yield "surrogate", "a\ud800b"
        yield "controls", "\x01\x1f\x7f"
        yield "unicode", "\u00e9\U0001f511"
        if meta.get("enum"):
            yield "unknown-enum", "NOT_A_VALUE"
        if shape.name == "PolicyType":
            yield "deep-json-text", '{"Statement":' + "[" * 5000 + "]" * 5000 + "}"
        if shape.name == "KeyIdType":
            yield "alias-like", "alias/aws/x"
            yield "arn-like", "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000"
            yield "other-account", "arn:aws:kms:us-east-1:444455556666:key/00000000-0000-0000-0000-000000000000"
    elif kind in ("integer", "long"):
        yield "string", "1"
        yield "float", 1.5
        yield "negative", -1
        yield "zero", 0
        yield "int-overflow", 2**31
        yield "long-overflow", 2**63
        yield "huge", 10**40
        yield "bool", True
        yield "infinity", float("inf")
        yield "nan", float("nan")
        yield "exp", 1e300
    elif kind == "boolean":
        yield "string", "true"
        yield "number", 1
    elif kind == "blob":
        yield "number", 5
        yield "empty", ""
        yield "bad-base64", "!!not base64!!"
        yield "bad-padding", "eA="
        yield "newline", "eA==\n"
        yield "huge", b64(b"x" * (meta.get("max", 8192) + 1))
        yield "surrogate", "eA\ud800=="
        yield "nul", "eA==\x00"
    elif kind == "timestamp":
        yield "string", "2024-01-01T00:00:00Z"
        yield "negative", -1e20
        yield "huge", 1e20
        yield "nan", float("nan")
        yield "bool", False
    elif kind == "list":
        yield "string", "x"
        yield "null-item", [None]
        yield "empty", []
        if meta.get("max"):
            yield "too-many", [sample(shape.member)] * (meta["max"] + 1)
        for label, value in edges(shape.member):
            if value is not ABSENT and label != "deep":
                yield f"item-{label}", [value]
    elif kind == "map":
        yield "string", "x"
        yield "empty", {}
        yield "null-value", {"k": None}
        yield "number-value", {"k": 5}
        yield "empty-key", {"": "v"}
        yield "nul-key", {"a\x00": "v"}
        yield "nul-value", {"k": "\x00"}
        yield "surrogate-key", {"\ud800": "v"}
        yield "surrogate-value", {"k": "\udfff"}
        yield "many", {f"k{i}": "v" for i in range(200)}
        yield "huge-value", {"k": "x" * 10000}
    elif kind == "structure":
        yield "string", "x"
        yield "empty", {}
        yield "unknown-member", {"NoSuchMember": 1}
        good = sample(shape)
        for name, member in shape.members.items():
            for label, value in edges(member):
                if label == "deep":
                    continue
                item = dict(good)
                if value is ABSENT:
                    item.pop(name, None)
                else:
                    item[name] = value
                yield f"{name}-{label}", item


def with_member(params: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    out = dict(params)
    if value is ABSENT:
        out.pop(name, None)
    else:
        out[name] = value
    return out


# Bodies that are no request at all: refused before the operation matters,
# so sent to a few operations only.
BAD_BODIES: dict[str, bytes] = {
    "deep-list": b"[" * 100_000 + b"]" * 100_000,
    "deep-object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "deep-member": b'{"KeyId":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    "deep-unknown-member": b'{"X":' + b"[" * 900 + b"]" * 900 + b',"Y":"\\ud800"}',
    "not-json": b"{'KeyId': 1}",
    "truncated": b'{"KeyId": "',
    "array": b"[]",
    "null": b"null",
    "number": b"1e999999",
    "not-utf8": b'{"KeyId": "\xff\xfe"}',
}
BAD_BODY_OPERATIONS = ("CreateKey", "Encrypt", "ListKeys")
# Bodies that reach an operation's members: sent to every operation.
ODD_BODIES: dict[str, bytes] = {
    "empty": b"",
    "bom": b'\xef\xbb\xbf{"KeyId": "x"}',
    "nan": b'{"Limit": NaN, "NumberOfBytes": NaN}',
    "duplicate-members": b'{"KeyId": 1, "KeyId": "x"}',
    "lone-surrogate-escape": b'{"KeyId": "\\ud800", "Description": "\\udfff"}',
    "nul-escape": b'{"KeyId": "\\u0000", "AliasName": "alias/\\u0000"}',
}


def key_for(operation: str, persona: Persona) -> Key:
    return key_services.key_create(caller=persona.caller(), description="fuzz", **KEY_KINDS.get(operation, {}))


def test_it_never_answers_5xx_to_edge_values_of_any_operation(
    key_admin: Persona, monkeypatch: Any, settings: Any
) -> None:
    # The caller's access key and policies do not change here; cached as in production.
    settings.KMSWEB_AUTH_CACHE_SECONDS = 60
    # Persistent connections, as production runs (KMSWEB_DB_CONN_MAX_AGE): the
    # handler closes a connection after each call otherwise, and thousands of
    # new connections would be most of this test's time.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    wire = Wire(key_admin)
    symmetric = key_services.key_create(caller=key_admin.caller(), description="ciphertexts")
    encrypted = key_services.key_encrypt(caller=key_admin.caller(), key=symmetric, plaintext=b"fuzz", context=None)
    ciphertext = b64(encrypted.ciphertext)
    model = shapes.service_model()
    for operation in sorted(shapes.operation_names()):
        goods = Goods(key_admin, key_for(operation, key_admin), ciphertext)
        good = good_request(operation, goods)
        shape = model.operation_model(operation).input_shape
        bodies = {**ODD_BODIES, **(BAD_BODIES if operation in BAD_BODY_OPERATIONS else {})}
        for label, body in bodies.items():
            wire.send(operation, body, f"body {label}")
        wire.send(operation, encode(good), "good request")
        for name, member in shape.members.items():
            values = list(edges(member))
            if operation not in HANDLERS:
                # Refused once parsed (UnsupportedOperation): the model's checks
                # are the same walk for every operation, so a few values do.
                values = values[:4]
            for label, value in values:
                wire.send(operation, encode(with_member(good, name, value)), f"{name} {label}")
    failures = "\n".join(wire.failures)
    assert not wire.failures, f"{len(wire.failures)} of {wire.sent} requests failed:\n{failures}"
    # The harness itself is sound: every request got past authentication and
    # authorization, and the good requests of most operations succeeded.
    codes = {code for _, code in wire.answers}
    assert not codes & {"InvalidSignatureException", "UnrecognizedClientException", "AccessDeniedException"}, codes
    assert wire.answers[(200, "")] >= len(HANDLERS), wire.answers.most_common()
