"""The floor's only view: a KMS-shaped endpoint at POST /.

``parse`` mode parses the JSON body and answers a KMS-shaped JSON document
that echoes the request's data, with no cryptography and no database.

``crypto_audit`` mode does what any KMS must do at least: AES-256-GCM on the
data (Encrypt, Decrypt; GenerateDataKey draws a random 256-bit key and
encrypts it) and one durable INSERT of a CloudTrail-like audit row into
PostgreSQL, in autocommit.

Neither mode verifies the SigV4 signature: the floor is the reference that a
real service (which must verify it) is compared with.
"""

import base64
import binascii
import json
import os
import uuid
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .keys import floor_key, open_blob, seal

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "TrentService."
ACCOUNT = "111122223333"
CRYPTO_AUDIT = settings.FLOOR_MODE == "crypto_audit"
AEAD = AESGCM(floor_key())

INSERT_AUDIT = (
    "INSERT INTO bench_floor_audit (event_time, event_id, request_id, event_name,"
    " event_source, aws_region, source_ip_address, user_agent, access_key_id,"
    " key_id, request_parameters, response_elements, error_code, read_only)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, NULL, NULL, %s)"
)


def _answer(payload: dict, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type=CONTENT_TYPE)


def _error(kind: str, message: str, status: int = 400) -> HttpResponse:
    return _answer({"__type": kind, "message": message}, status)


def _credential_scope(request) -> tuple[str, str]:
    """(access key id, region) read from the Authorization header, unverified."""
    auth = request.META.get("HTTP_AUTHORIZATION", "")
    start = auth.find("Credential=")
    if start < 0:
        return "", ""
    scope = auth[start + len("Credential=") :].split(",", 1)[0].split("/")
    return scope[0], scope[2] if len(scope) > 2 else ""


def _audit(request, operation: str, access_key_id: str, region: str, key_id: str, params: dict) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            INSERT_AUDIT,
            [
                datetime.now(UTC),
                uuid.uuid4(),
                uuid.uuid4(),
                operation,
                "kms.amazonaws.com",
                region,
                request.META.get("REMOTE_ADDR", ""),
                request.META.get("HTTP_USER_AGENT", ""),
                access_key_id,
                key_id,
                json.dumps(params),
                True,  # readOnly, as CloudTrail records these KMS calls
            ],
        )


@csrf_exempt
def kms_endpoint(request):
    if request.method != "POST":
        return _error("UnsupportedOperationException", "POST only", 405)
    target = request.META.get("HTTP_X_AMZ_TARGET", "")
    if not target.startswith(TARGET_PREFIX):
        return _error("UnknownOperationException", "missing X-Amz-Target")
    operation = target[len(TARGET_PREFIX) :]
    try:
        body = json.loads(request.body)
    except ValueError:
        return _error("SerializationException", "body is not JSON")
    if not isinstance(body, dict):
        return _error("SerializationException", "body is not a JSON object")
    key_id = body.get("KeyId", "")
    access_key_id, region = _credential_scope(request)
    key_arn = f"arn:aws:kms:{region}:{ACCOUNT}:key/{key_id}"

    if operation == "Encrypt":
        data = body.get("Plaintext")
        if not isinstance(data, str) or not key_id:
            return _error("ValidationException", "KeyId and Plaintext are required")
        if not CRYPTO_AUDIT:
            return _answer({"CiphertextBlob": data, "KeyId": key_arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
        try:
            plaintext = base64.b64decode(data, validate=True)
        except binascii.Error:
            return _error("SerializationException", "Plaintext is not base64")
        blob = seal(AEAD, key_id, plaintext)
        _audit(
            request,
            operation,
            access_key_id,
            region,
            key_id,
            {"keyId": key_id, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
        )
        return _answer(
            {
                "CiphertextBlob": base64.b64encode(blob).decode(),
                "KeyId": key_arn,
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }
        )

    if operation == "Decrypt":
        data = body.get("CiphertextBlob")
        if not isinstance(data, str) or not key_id:
            return _error("ValidationException", "KeyId and CiphertextBlob are required")
        if not CRYPTO_AUDIT:
            return _answer({"Plaintext": data, "KeyId": key_arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
        try:
            plaintext = open_blob(AEAD, key_id, base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError, InvalidTag):
            return _error("InvalidCiphertextException", "cannot decrypt")
        _audit(
            request,
            operation,
            access_key_id,
            region,
            key_id,
            {"keyId": key_id, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
        )
        return _answer(
            {
                "Plaintext": base64.b64encode(plaintext).decode(),
                "KeyId": key_arn,
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }
        )

    if operation == "GenerateDataKey":
        if not key_id or body.get("KeySpec", "AES_256") != "AES_256":
            return _error("ValidationException", "KeyId and KeySpec AES_256 are required")
        if not CRYPTO_AUDIT:
            zeros = base64.b64encode(bytes(32)).decode()
            return _answer({"CiphertextBlob": zeros, "Plaintext": zeros, "KeyId": key_arn})
        data_key = os.urandom(32)
        blob = seal(AEAD, key_id, data_key)
        _audit(request, operation, access_key_id, region, key_id, {"keyId": key_id, "keySpec": "AES_256"})
        return _answer(
            {
                "CiphertextBlob": base64.b64encode(blob).decode(),
                "Plaintext": base64.b64encode(data_key).decode(),
                "KeyId": key_arn,
            }
        )

    return _error("UnknownOperationException", f"unsupported operation {operation}")
