"""kmsweb's WSGI handler: API calls answered ahead of Django's request cycle.

gunicorn serves ``kmsweb.wsgi.application``; these tests call that handler
the way a WSGI server does (an environ, a ``start_response``), against the
real database, and compare it with the path through Django's middleware
(``AwsApiMiddleware``) that the test client takes.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from django.test import Client, override_settings

from audit.models import AuditEvent
from kmsweb.api.wsgi import KmswebWSGIHandler
from policies.models import Principal
from tests.conftest import REGION, Persona

pytestmark = pytest.mark.django_db(transaction=True)

CONTENT_TYPE = "application/x-amz-json-1.1"


def signed(
    persona: Persona, operation: str, params: dict[str, Any], *, url: str = "http://testserver/", **headers: str
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(params).encode()
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": f"TrentService.{operation}", **headers},
    )
    SigV4Auth(Credentials(persona.access_key_id, persona.secret), "kms", REGION).add_auth(request)
    return dict(request.prepare().headers), body


def environ(headers: dict[str, str], body: bytes | io.RawIOBase, **extra: Any) -> dict[str, Any]:
    stream = io.BytesIO(body) if isinstance(body, bytes) else body
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "192.0.2.7",
        "wsgi.url_scheme": "http",
        "wsgi.input": stream,
        "CONTENT_LENGTH": str(len(body)) if isinstance(body, bytes) else "0",
        # What an HTTP client sends from the URL (botocore signs it, but leaves it to the client).
        "HTTP_HOST": "testserver",
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            env[key] = value
        else:
            env[f"HTTP_{key}"] = value
    env.update(extra)
    return env


def client_headers(headers: dict[str, str]) -> dict[str, str]:
    """Signed headers as the test client's META, with the Host the client signed."""
    meta = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items() if k != "Content-Type"}
    return {**meta, "HTTP_HOST": "testserver"}


class Reply:
    def __init__(self, handler: KmswebWSGIHandler, env: dict[str, Any]) -> None:
        self.status = ""
        self.headers: dict[str, str] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            self.status = status
            self.headers = dict(headers)

        chunks = handler(env, start_response)
        self.body = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()

    @property
    def code(self) -> int:
        return int(self.status.split()[0])

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@pytest.fixture
def handler() -> KmswebWSGIHandler:
    return KmswebWSGIHandler()


def events_after(since: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(id__gt=since).order_by("id"))


def last_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def test_it_answers_an_api_call_with_aws_headers_and_an_audit_event(handler, key_admin, make_key) -> None:
    key = make_key()
    since = last_id()
    headers, body = signed(key_admin, "Encrypt", {"KeyId": str(key.id), "Plaintext": base64.b64encode(b"hi").decode()})
    reply = Reply(handler, environ(headers, body))

    assert reply.status == "200 OK", reply.body
    assert reply.headers["Content-Type"] == CONTENT_TYPE
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    request_id = reply.headers["x-amzn-RequestId"]
    assert reply.json()["KeyId"] == key.arn
    [event] = events_after(since)
    assert (event.event_name, event.error_code, event.request_id) == ("Encrypt", "", request_id)
    assert event.source_ip == "192.0.2.7"

    # The ciphertext it answered decrypts through the same handler.
    headers, body = signed(key_admin, "Decrypt", {"CiphertextBlob": reply.json()["CiphertextBlob"]})
    again = Reply(handler, environ(headers, body))
    assert again.code == 200
    assert base64.b64decode(again.json()["Plaintext"]) == b"hi"


def test_it_answers_exactly_as_the_middleware_path_does(handler, key_admin) -> None:
    """A refusal, through both paths: same status, same body, one event each."""
    for send in ("wsgi", "client"):
        since = last_id()
        headers, body = signed(key_admin, "DescribeKey", {"KeyId": "alias/nothing-here"})
        if send == "wsgi":
            reply = Reply(handler, environ(headers, body))
            status, answer, content_type = reply.code, reply.json(), reply.headers["Content-Type"]
        else:
            response = Client().post("/", data=body, content_type=CONTENT_TYPE, **client_headers(headers))
            status, answer, content_type = response.status_code, json.loads(response.content), response["Content-Type"]
        assert (status, content_type) == (400, CONTENT_TYPE), send
        assert answer["__type"] == "NotFoundException", send
        assert "alias/nothing-here" in answer["message"], send
        assert [(e.event_name, e.error_code) for e in events_after(since)] == [("DescribeKey", "NotFoundException")]


class Unreadable(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        raise AssertionError("an oversized body must not be read")


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=64 * 1024)
def test_it_refuses_a_body_over_the_limit_unread_and_audits_it(handler, key_admin) -> None:
    since = last_id()
    headers, _ = signed(key_admin, "Encrypt", {"KeyId": "alias/x", "Plaintext": "AA=="})
    env = environ(headers, Unreadable(), CONTENT_LENGTH=str(64 * 1024 + 1))
    reply = Reply(handler, env)

    assert reply.code == 413
    assert reply.json()["__type"] == "ValidationException"
    assert "65536 bytes" in reply.json()["message"]
    [event] = events_after(since)
    assert (event.event_name, event.error_code, event.principal_arn) == ("Encrypt", "ValidationException", "")


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=64 * 1024)
def test_the_middleware_path_refuses_an_oversized_body_the_same_way(key_admin) -> None:
    """Through Django's request cycle this used to be a 500."""
    since = last_id()
    headers, _ = signed(key_admin, "Encrypt", {"KeyId": "alias/x", "Plaintext": "AA=="})
    response = Client().post("/", data=b"x" * (64 * 1024 + 1), content_type=CONTENT_TYPE, **client_headers(headers))

    assert response.status_code == 413
    assert json.loads(response.content)["__type"] == "ValidationException"
    assert [(e.event_name, e.error_code) for e in events_after(since)] == [("Encrypt", "ValidationException")]


def test_a_request_signed_for_a_script_prefix_is_verified_against_it(handler, key_admin) -> None:
    """Served under SCRIPT_NAME=/kms, the client signed the path /kms/."""
    headers, body = signed(key_admin, "ListKeys", {}, url="http://testserver/kms/")
    assert Reply(handler, environ(headers, body, SCRIPT_NAME="/kms")).code == 200
    # The same request presented as if at the root does not verify.
    refused = Reply(handler, environ(headers, body))
    assert (refused.code, refused.json()["__type"]) == (400, "InvalidSignatureException")


SECURE_ONLY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "kms:*",
                "Resource": "*",
                "Condition": {"Bool": {"aws:SecureTransport": "true"}},
            }
        ],
    }
)


@override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_it_takes_tls_from_the_trusted_proxy_header(handler, make_persona) -> None:
    persona = make_persona("tls-only", policy=SECURE_ONLY)
    headers, body = signed(persona, "GenerateRandom", {"NumberOfBytes": 8})

    plain = Reply(handler, environ(headers, body))
    assert (plain.code, plain.json()["__type"]) == (400, "AccessDeniedException")
    behind_tls = Reply(handler, environ(headers, body, HTTP_X_FORWARDED_PROTO="https"))
    assert behind_tls.code == 200
    assert len(base64.b64decode(behind_tls.json()["Plaintext"])) == 8
    # The header's first value counts, as in Django.
    forged_later = Reply(handler, environ(headers, body, HTTP_X_FORWARDED_PROTO="http, https"))
    assert forged_later.code == 400


def test_it_ignores_the_proxy_header_unless_configured(handler, make_persona) -> None:
    persona = make_persona("tls-only", policy=SECURE_ONLY)
    headers, body = signed(persona, "GenerateRandom", {"NumberOfBytes": 8})
    reply = Reply(handler, environ(headers, body, HTTP_X_FORWARDED_PROTO="https"))
    assert (reply.code, reply.json()["__type"]) == (400, "AccessDeniedException")


def test_everything_else_goes_through_django(handler, key_admin) -> None:
    """The dashboard keeps its middleware: a page without a session is sent to sign in."""
    page = Reply(handler, environ({}, b"", REQUEST_METHOD="GET", PATH_INFO="/keys/"))
    assert page.code == 302
    assert page.headers["Location"].startswith("/login/")
    # Path and method alone make an API call: a POST to / without X-Amz-Target
    # is the API's, which answers an unsigned one with an AWS error (a form
    # body is an STS Query call, answered in STS's XML).
    form = Reply(handler, environ({"Content-Type": "application/x-www-form-urlencoded"}, b"a=1"))
    assert form.code == 403
    assert form.headers["Content-Type"] == "text/xml"
    assert b"<Code>MissingAuthenticationToken</Code>" in form.body
    plain = Reply(handler, environ({"Content-Type": "text/plain"}, b"a=1"))
    assert plain.code == 403
    assert plain.headers["Content-Type"] == CONTENT_TYPE
    assert json.loads(plain.body)["__type"] == "MissingAuthenticationTokenException"
    # An API call on another path is not one: Django answers it.
    headers, body = signed(key_admin, "ListKeys", {})
    elsewhere = Reply(handler, environ(headers, body, PATH_INFO="/keys/"))
    assert not elsewhere.headers.get("Content-Type", "").startswith(CONTENT_TYPE)
    assert Principal.objects.filter(name="key-admin").exists()


def test_headers_are_read_from_the_environ_by_their_lower_case_names() -> None:
    from policies.callers import MetaHeaders

    headers = MetaHeaders(
        {
            "HTTP_X_AMZ_DATE": "20260101T000000Z",
            "HTTP_HOST": "kms.example",
            "CONTENT_TYPE": CONTENT_TYPE,
            "HTTP_CONTENT_TYPE": "text/plain",
            "CONTENT_LENGTH": "",
            "HTTP_CONTENT_LENGTH": "12",
            "wsgi.input": None,
        }
    )
    assert headers["x-amz-date"] == "20260101T000000Z"
    assert headers.get("host") == "kms.example"
    # The environ's own CONTENT_* win when set, as in the request Django builds.
    assert headers["content-type"] == CONTENT_TYPE
    assert headers["content-length"] == "12"
    assert "authorization" not in headers and headers.get("authorization") is None
    with pytest.raises(KeyError):
        headers["authorization"]
    # An underscore names no header: x_amz_date is not x-amz-date.
    assert headers.get("x_amz_date") is None and "x_amz_date" not in headers
    assert sorted(headers) == ["content-length", "content-type", "host", "x-amz-date"]
    assert len(headers) == 4
