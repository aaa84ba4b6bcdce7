"""SigV4 verification against requests signed by botocore itself.

Pure tests (no database): every accepted request is signed by botocore's own
``SigV4Auth``, so passing here means boto3 clients get through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SIGNED_HEADERS_BLACKLIST, SigV4Auth, _host_from_url
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from kmsweb.lib.sigv4 import (
    SIGNATURE_MISMATCH_MESSAGE,
    ParsedAuth,
    SignedRequest,
    SigV4Error,
    parse_authorization,
    signing_key,
    verify_signature,
    verify_signature_with_key,
)

SIGNED_AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
ACCESS_KEY = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ENDPOINT = "https://kms.us-east-1.amazonaws.com/"
JSON_HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "TrentService.ListKeys",
}


def sign(
    url: str = ENDPOINT,
    *,
    body: bytes = b"{}",
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
    params: Mapping[str, str] | None = None,
    service: str = "kms",
    region: str = "us-east-1",
    secret: str = SECRET,
    at: datetime = SIGNED_AT,
) -> SignedRequest:
    """Sign a request with botocore and return it as the adapter would see it."""
    request = AWSRequest(
        method=method,
        url=url,
        data=body,
        headers=dict(JSON_HEADERS if headers is None else headers),
        params=dict(params or {}),
    )
    # botocore reads the clock through this hook; pin it so dates are exact.
    with mock.patch("botocore.auth.get_current_datetime", return_value=at.replace(tzinfo=None)):
        SigV4Auth(Credentials(ACCESS_KEY, secret), service, region).add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    wire_headers = {name.lower(): value for name, value in request.headers.items()}
    # The HTTP client adds Host from the URL; botocore signs that same value.
    wire_headers.setdefault("host", _host_from_url(url))
    return SignedRequest(
        method=method,
        path=parts.path or "/",
        query_string=parts.query,
        headers=wire_headers,
        body=body,
    )


def with_headers(req: SignedRequest, **changes: str | None) -> SignedRequest:
    """A copy of ``req`` with headers replaced (``None`` removes one)."""
    headers = dict(req.headers)
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return dataclasses.replace(req, headers=headers)


def authenticate(req: SignedRequest, *, now: datetime = SIGNED_AT, secret: str = SECRET, **kw: object) -> ParsedAuth:
    auth = parse_authorization(req, now=now, **kw)  # type: ignore[arg-type]
    verify_signature(req, auth, secret)
    return auth


def error_of(req: SignedRequest, *, now: datetime = SIGNED_AT, secret: str = SECRET, **kw: object) -> SigV4Error:
    with pytest.raises(SigV4Error) as excinfo:
        authenticate(req, now=now, secret=secret, **kw)
    return excinfo.value


# --- accepted requests -------------------------------------------------------


def test_it_accepts_a_request_signed_by_botocore() -> None:
    auth = authenticate(sign())
    assert auth.access_key_id == ACCESS_KEY
    assert (auth.date, auth.region, auth.service) == ("20240501", "us-east-1", "kms")
    assert auth.amz_date == SIGNED_AT
    assert auth.timestamp == "20240501T120000Z"
    assert auth.scope == "20240501/us-east-1/kms/aws4_request"
    assert auth.signed_headers == ("content-type", "host", "x-amz-date", "x-amz-target")


def test_it_accepts_a_cached_signing_key() -> None:
    req = sign()
    auth = parse_authorization(req, now=SIGNED_AT)
    key = signing_key(SECRET, auth.date, auth.region, auth.service)
    verify_signature_with_key(req, auth, key)


def test_it_accepts_the_date_header_instead_of_x_amz_date() -> None:
    # botocore signs with Date (rewritten to RFC 1123) when one is present.
    req = sign(headers={**JSON_HEADERS, "Date": "placeholder"})
    assert "x-amz-date" not in req.headers
    auth = authenticate(req)
    assert auth.amz_date == SIGNED_AT


@pytest.mark.parametrize("minutes", [-15, 15])
def test_it_accepts_clock_skew_up_to_fifteen_minutes(minutes: int) -> None:
    authenticate(sign(), now=SIGNED_AT + timedelta(minutes=minutes))


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("GET", {"b": "2", "a": "1"}),
        ("GET", {"k": "a value/with+reserved&chars=~", "empty": ""}),
        ("POST", {"unicode": "clé ✓", "UPPER": "x"}),
    ],
)
def test_it_accepts_query_string_requests(method: str, params: dict[str, str]) -> None:
    req = sign(method=method, params=params, body=b"" if method == "GET" else b"{}")
    assert req.query_string
    authenticate(req)


def test_it_accepts_a_raw_query_string_in_any_order() -> None:
    req = sign(ENDPOINT + "?z=1&a=2&a=1&flag")
    authenticate(req)


@pytest.mark.parametrize(
    "path",
    [
        "/with%20space/and%2Fslash",
        "/%E2%9C%93/caf%C3%A9",
        "/a/./b/../c//d/",
        "/tilde~and-dash_dot.x",
        "/at@colon:plus+",
    ],
)
def test_it_accepts_paths_needing_encoding(path: str) -> None:
    req = sign("https://kms.us-east-1.amazonaws.com" + path)
    assert req.path == urlsplit("https://x" + path).path
    authenticate(req)


def test_it_accepts_a_non_default_port_in_host() -> None:
    authenticate(sign("http://localhost:8000/"))


def test_it_accepts_an_unsigned_header_being_changed() -> None:
    # Only signed headers are covered; a proxy may rewrite the rest.
    authenticate(with_headers(sign(), user_agent="something else"))


# --- missing or malformed header ----------------------------------------------


def test_it_rejects_a_request_without_authorization() -> None:
    err = error_of(with_headers(sign(), authorization=None))
    assert (err.code, err.message, err.status) == (
        "MissingAuthenticationTokenException",
        "Request is missing Authentication Token",
        403,
    )


def test_it_treats_a_non_sigv4_scheme_as_missing() -> None:
    err = error_of(with_headers(sign(), authorization="Bearer abc"))
    assert err.code == "MissingAuthenticationTokenException"


def test_it_rejects_a_garbled_header() -> None:
    header = "AWS4-HMAC-SHA256 garbage"
    err = error_of(with_headers(sign(), authorization=header))
    assert (err.code, err.status) == ("IncompleteSignatureException", 400)
    assert err.message == (
        "'garbage' not a valid key=value pair (missing equal-sign) in Authorization header: 'AWS4-HMAC-SHA256 garbage'."
    )


def test_it_rejects_a_space_after_an_equals_sign() -> None:
    req = sign()
    header = req.headers["authorization"].replace("Credential=", "Credential= ")
    err = error_of(with_headers(req, authorization=header))
    assert err.code == "IncompleteSignatureException"
    assert err.message.startswith(f"'{ACCESS_KEY}/20240501/us-east-1/kms/aws4_request' not a valid")


def test_it_lists_every_missing_part() -> None:
    header = "AWS4-HMAC-SHA256 Credential=AKID/20240501/us-east-1/kms/aws4_request"
    req = with_headers(sign(), authorization=header, x_amz_date=None)
    err = error_of(req)
    assert err.code == "IncompleteSignatureException"
    assert err.message == (
        "Authorization header requires 'Signature' parameter. "
        "Authorization header requires 'SignedHeaders' parameter. "
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        f"Authorization={header}"
    )


def test_it_rejects_a_date_not_in_basic_format() -> None:
    err = error_of(with_headers(sign(), x_amz_date="2024-05-01T12:00:00Z"))
    assert err.code == "IncompleteSignatureException"
    assert err.message == (
        "Date must be in ISO-8601 'basic format'. Got '2024-05-01T12:00:00Z'. See http://en.wikipedia.org/wiki/ISO_8601"
    )


def test_it_rejects_an_unsupported_algorithm() -> None:
    req = sign()
    header = req.headers["authorization"].replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512")
    err = error_of(with_headers(req, authorization=header))
    assert err.code == "IncompleteSignatureException"
    assert err.message == ("Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512' (only AWS4-HMAC-SHA256 for now).")


def test_it_rejects_a_credential_without_five_parts() -> None:
    req = sign()
    header = req.headers["authorization"].replace("/kms/aws4_request", "/kms")
    err = error_of(with_headers(req, authorization=header))
    assert err.code == "IncompleteSignatureException"
    assert err.message == (
        "Credential must have exactly 5 slash-delimited elements, e.g. "
        f"keyid/date/region/service/term, got '{ACCESS_KEY}/20240501/us-east-1/kms'"
    )


def test_it_rejects_a_request_without_host_in_signed_headers() -> None:
    req = sign()
    header = req.headers["authorization"].replace(";host;", ";")
    assert "host" not in header.split("SignedHeaders=")[1].split(",")[0]
    err = error_of(with_headers(req, authorization=header))
    assert (err.code, err.message) == (
        "InvalidSignatureException",
        "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
    )


# --- dates ---------------------------------------------------------------------


def test_it_rejects_an_expired_signature() -> None:
    err = error_of(sign(), now=SIGNED_AT + timedelta(minutes=16))
    assert (err.code, err.status) == ("InvalidSignatureException", 403)
    assert err.message == (
        "Signature expired: 20240501T120000Z is now earlier than 20240501T120100Z (20240501T121600Z - 15 min.)"
    )


def test_it_rejects_a_signature_from_the_future() -> None:
    err = error_of(sign(), now=SIGNED_AT - timedelta(minutes=16))
    assert err.code == "InvalidSignatureException"
    assert err.message == (
        "Signature not yet current: 20240501T120000Z is still later than 20240501T115900Z (20240501T114400Z + 15 min.)"
    )


def test_it_honours_a_custom_skew() -> None:
    err = error_of(sign(), now=SIGNED_AT + timedelta(minutes=6), max_skew=timedelta(minutes=5))
    assert err.message.endswith("(20240501T120600Z - 5 min.)")


def test_it_rejects_a_naive_now() -> None:
    with pytest.raises(ValueError):
        parse_authorization(sign(), now=SIGNED_AT.replace(tzinfo=None))


# --- credential scope ----------------------------------------------------------


def test_it_rejects_the_wrong_service_in_scope() -> None:
    err = error_of(sign(service="dynamodb"))
    assert (err.code, err.message) == (
        "InvalidSignatureException",
        "Credential should be scoped to correct service: 'kms'.",
    )


def test_it_rejects_a_region_this_deployment_does_not_serve() -> None:
    err = error_of(sign(region="eu-west-1"), regions={"us-east-1"})
    assert (err.code, err.message) == (
        "InvalidSignatureException",
        "Credential should be scoped to a valid region, not 'eu-west-1'.",
    )


def test_it_accepts_any_region_when_none_are_configured() -> None:
    authenticate(sign(region="ap-southeast-2"))


def test_it_reports_every_scope_problem_at_once() -> None:
    req = sign()
    header = req.headers["authorization"].replace(
        "/20240501/us-east-1/kms/aws4_request", "/20240430/mars-1/s3/aws5_request"
    )
    err = error_of(with_headers(req, authorization=header), regions={"us-east-1"})
    assert err.code == "InvalidSignatureException"
    assert err.message == (
        "Credential should be scoped to a valid region, not 'mars-1'. "
        "Credential should be scoped to correct service: 'kms'. "
        "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'. "
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
        "from HTTP: '20240430' != '20240501', from '20240501T120000Z'."
    )


# --- signature -----------------------------------------------------------------


def test_it_rejects_the_wrong_secret() -> None:
    err = error_of(sign(), secret="not-the-secret")
    assert (err.code, err.message, err.status) == (
        "InvalidSignatureException",
        SIGNATURE_MISMATCH_MESSAGE,
        403,
    )
    assert err.message == (
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service "
        "documentation for details."
    )


def test_it_rejects_a_body_changed_after_signing() -> None:
    req = sign(body=b'{"KeyId": "alias/a"}')
    err = error_of(dataclasses.replace(req, body=b'{"KeyId": "alias/b"}'))
    assert (err.code, err.message) == (
        "InvalidSignatureException",
        SIGNATURE_MISMATCH_MESSAGE,
    )


def test_it_rejects_a_signed_header_changed_after_signing() -> None:
    req = with_headers(sign(), x_amz_target="TrentService.ScheduleKeyDeletion")
    err = error_of(req)
    assert (err.code, err.message) == (
        "InvalidSignatureException",
        SIGNATURE_MISMATCH_MESSAGE,
    )


def test_it_rejects_a_content_hash_that_does_not_match_the_body() -> None:
    body = b'{"KeyId": "alias/a"}'
    wrong = "0" * 64
    req = sign(body=body, headers={**JSON_HEADERS, "X-Amz-Content-SHA256": wrong})
    err = error_of(req)
    assert (err.code, err.message) == (
        "InvalidSignatureException",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    )


def test_it_rejects_an_unsigned_payload() -> None:
    req = sign(headers={**JSON_HEADERS, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert error_of(req).code == "InvalidSignatureException"


def test_it_accepts_a_content_hash_that_matches_the_body() -> None:
    import hashlib

    body = b'{"KeyId": "alias/a"}'
    digest = hashlib.sha256(body).hexdigest()
    authenticate(sign(body=body, headers={**JSON_HEADERS, "X-Amz-Content-SHA256": digest}))


def test_it_rejects_a_non_ascii_signature_without_crashing() -> None:
    req = sign()
    header = req.headers["authorization"].rsplit("=", 1)[0] + "=é" * 64
    assert error_of(with_headers(req, authorization=header)).code == "InvalidSignatureException"


# --- property: anything botocore signs verifies, any one-byte change fails ------

# Headers botocore would not sign, or that change how it signs.
_RESERVED = set(SIGNED_HEADERS_BLACKLIST) | {
    "authorization",
    "host",
    "date",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
}
header_names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-"), min_size=1, max_size=20).filter(
    lambda name: name not in _RESERVED and not name.startswith("-")
)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    body=st.binary(max_size=512),
    headers=st.dictionaries(header_names, header_values, max_size=6),
    data=st.data(),
)
def test_it_verifies_whatever_botocore_signs_and_nothing_else(
    body: bytes, headers: dict[str, str], data: st.DataObject
) -> None:
    req = sign(body=body, headers=headers)
    auth = authenticate(req)

    if body:
        index = data.draw(st.integers(0, len(body) - 1), label="index")
        flip = data.draw(st.integers(1, 255), label="flip")
        changed = bytearray(body)
        changed[index] ^= flip
        tampered = dataclasses.replace(req, body=bytes(changed))
    else:
        tampered = dataclasses.replace(req, body=b"\x00")
    with pytest.raises(SigV4Error) as excinfo:
        verify_signature(tampered, auth, SECRET)
    assert excinfo.value.message == SIGNATURE_MISMATCH_MESSAGE

    if headers:
        name = data.draw(st.sampled_from(sorted(headers)), label="header")
        # Appending a visible character always survives the whitespace trim.
        retouched = with_headers(req, **{name.replace("-", "_"): headers[name] + "x"})
        with pytest.raises(SigV4Error):
            verify_signature(retouched, auth, SECRET)
