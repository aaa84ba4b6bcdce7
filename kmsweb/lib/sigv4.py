"""AWS Signature Version 4 verification for both of kmsweb's APIs (KMS and REST).

Pure Python (no Django): the adapter turns a Django request into a
:class:`SignedRequest`, then calls, in this order,

1. :func:`parse_authorization` - checks the ``Authorization`` header's form,
   the request date against the clock, and the credential scope;
2. looks the access key id up itself (unknown or inactive keys are the
   adapter's ``UnrecognizedClientException``, as AWS checks the key id between
   these two steps);
3. :func:`verify_signature` (or :func:`verify_signature_with_key` with a
   signing key it cached from :func:`signing_key`).

Every failure raises :class:`SigV4Error` carrying the AWS error code, the AWS
message and the HTTP status to answer with. The codes, messages and the order
of the checks follow what AWS's JSON ("Coral") services answer:

* no ``Authorization`` header, or one not starting ``AWS4-`` ->
  ``MissingAuthenticationTokenException`` "Request is missing Authentication
  Token";
* a header missing ``Credential``/``Signature``/``SignedHeaders``, or a request
  with neither ``X-Amz-Date`` nor ``Date`` -> ``IncompleteSignatureException``
  "Authorization header requires 'Credential' parameter. ...
  Authorization=<header>";
* a ``key=value`` item without ``=`` -> ``IncompleteSignatureException``;
* a date not in ISO-8601 basic format -> ``IncompleteSignatureException``;
* a date more than ``max_skew`` from now -> ``InvalidSignatureException``
  "Signature expired: ..." / "Signature not yet current: ...";
* ``host`` not signed -> ``InvalidSignatureException``;
* an algorithm other than ``AWS4-HMAC-SHA256`` ->
  ``IncompleteSignatureException``;
* a credential without exactly 5 ``/``-separated parts ->
  ``IncompleteSignatureException``;
* wrong region, service, terminator or scope date ->
  ``InvalidSignatureException`` (all scope problems in one message);
* ``X-Amz-Content-SHA256`` not the hash of the body, or a signature that does
  not match -> ``InvalidSignatureException``.

Only header-based signing is supported: the SDKs never presign KMS calls, so a
query-string signature is treated as no signature at all.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote_plus

__all__ = [
    "ALGORITHM",
    "ParsedAuth",
    "SigV4Error",
    "SignedRequest",
    "canonical_request",
    "parse_authorization",
    "signing_key",
    "string_to_sign",
    "verify_signature",
    "verify_signature_with_key",
]

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
_BASIC_FORMAT = "%Y%m%dT%H%M%SZ"
_REQUIRED_PARAMS = ("Credential", "Signature", "SignedHeaders")
# Characters RFC 3986 leaves unreserved; everything else is percent-encoded in
# the canonical query string (botocore and AWS agree on this set).
_QUERY_SAFE = "-_.~"
# In the canonical path "/" separates segments and "~" is unreserved; the rest
# of the unreserved set is already safe for urllib.parse.quote.
_PATH_SAFE = "/~"

MISSING_AUTH = "MissingAuthenticationTokenException"
INCOMPLETE_AUTH = "IncompleteSignatureException"
INVALID_AUTH = "InvalidSignatureException"

# AWS answers a malformed signature with 400 and a missing or wrong one with
# 403 (AWS "Common Errors": IncompleteSignature 400, MissingAuthenticationToken
# 403; IAM SigV4 troubleshooting: signature mismatches are 403).
_STATUS = {MISSING_AUTH: 403, INCOMPLETE_AUTH: 400, INVALID_AUTH: 403}

SIGNATURE_MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you "
    "provided. Check your AWS Secret Access Key and signing method. Consult "
    "the service documentation for details."
)


class SigV4Error(Exception):
    """A request failed SigV4 authentication.

    ``code`` is the AWS error code (the JSON ``__type``), ``message`` the AWS
    message and ``status`` the HTTP status AWS answers with.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = _STATUS.get(code, 403)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The parts of an HTTP request that SigV4 signs.

    ``path`` is the path exactly as sent on the wire, still percent-encoded
    and without the query string (``/`` for every KMS call). ``query_string``
    is the raw query string without ``?``. ``headers`` maps lower-cased names
    to values; a repeated header is one comma-joined value. Non-ASCII header
    bytes should be passed decoded as UTF-8 with ``surrogateescape`` so they
    hash back to the bytes the client signed.
    """

    method: str
    path: str
    query_string: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class ParsedAuth:
    """A well-formed, in-date, correctly scoped ``Authorization`` header.

    ``date`` is the scope date (``YYYYMMDD``); ``amz_date`` the request time
    (UTC) from ``X-Amz-Date`` or ``Date``; ``timestamp`` the same instant in
    ISO-8601 basic format, as it enters the string to sign.
    """

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: datetime
    timestamp: str

    @property
    def scope(self) -> str:
        """The credential scope, ``date/region/service/aws4_request``."""
        return f"{self.date}/{self.region}/{self.service}/{TERMINATOR}"


def parse_authorization(
    req: SignedRequest,
    *,
    now: datetime,
    service: str = "kms",
    regions: Collection[str] | None = None,
    max_skew: timedelta = timedelta(minutes=15),
) -> ParsedAuth:
    """Parse and check the request's ``Authorization`` header.

    Checks everything that needs no secret: the header's form, the request
    date against ``now`` (an aware datetime) within ``max_skew``, that
    ``host`` is signed, the algorithm, and the credential scope. ``regions``
    lists the regions this deployment answers for; ``None`` accepts any
    non-empty region. Raises :class:`SigV4Error`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    header = req.headers.get("authorization")
    if header is None or not header.strip().startswith("AWS4-"):
        raise SigV4Error(MISSING_AUTH, "Request is missing Authentication Token")

    algorithm, params = _split_header(header)

    missing = [
        f"Authorization header requires '{name}' parameter."
        for name in _REQUIRED_PARAMS
        # SignedHeaders may legitimately be empty here (the host check below
        # rejects it); an empty Credential or Signature is as good as absent.
        if name not in params or (not params[name] and name != "SignedHeaders")
    ]
    raw_date = req.headers.get("x-amz-date")
    from_date_header = raw_date is None
    if from_date_header:
        raw_date = req.headers.get("date")
    if raw_date is None:
        missing.append("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
    if missing or raw_date is None:
        raise SigV4Error(INCOMPLETE_AUTH, " ".join(missing) + f" Authorization={header}")

    amz_date = _parse_date(raw_date, rfc1123=from_date_header)
    timestamp = raw_date.strip() if not from_date_header else amz_date.strftime(_BASIC_FORMAT)
    _check_skew(amz_date, timestamp, now.astimezone(UTC), max_skew)

    signed_headers = tuple(name.strip().lower() for name in params["SignedHeaders"].split(";") if name.strip())
    if "host" not in signed_headers:
        raise SigV4Error(
            INVALID_AUTH,
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        )

    if algorithm != ALGORITHM:
        raise SigV4Error(
            INCOMPLETE_AUTH,
            f"Unsupported AWS 'algorithm': '{algorithm}' (only {ALGORITHM} for now).",
        )

    credential = params["Credential"]
    # AWS ignores trailing slashes before counting the parts.
    parts = credential.rstrip("/").split("/")
    if len(parts) != 5:
        raise SigV4Error(
            INCOMPLETE_AUTH,
            "Credential must have exactly 5 slash-delimited elements, e.g. "
            f"keyid/date/region/service/term, got '{credential}'",
        )
    access_key_id, scope_date, region, scope_service, terminator = parts

    # AWS reports every scope problem at once, in this order.
    problems = []
    if not region or (regions is not None and region not in regions):
        problems.append(f"Credential should be scoped to a valid region, not '{region}'.")
    if scope_service != service:
        problems.append(f"Credential should be scoped to correct service: '{service}'.")
    if terminator != TERMINATOR:
        problems.append(f"Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'.")
    if scope_date != timestamp[:8]:
        problems.append(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 "
            f"version of date from HTTP: '{scope_date}' != '{timestamp[:8]}', "
            f"from '{timestamp}'."
        )
    if problems:
        raise SigV4Error(INVALID_AUTH, " ".join(problems))

    return ParsedAuth(
        access_key_id=access_key_id,
        date=scope_date,
        region=region,
        service=scope_service,
        signed_headers=signed_headers,
        signature=params["Signature"],
        amz_date=amz_date,
        timestamp=timestamp,
    )


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """Derive the SigV4 signing key for one day, region and service.

    Depends only on its arguments, so callers may cache it per access key for
    the day instead of running four HMACs per request.
    """
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, TERMINATOR)


def verify_signature(req: SignedRequest, auth: ParsedAuth, secret_access_key: str) -> None:
    """Check ``auth.signature`` against the request and the caller's secret.

    Raises :class:`SigV4Error` (``InvalidSignatureException``) on mismatch.
    """
    key = signing_key(secret_access_key, auth.date, auth.region, auth.service)
    verify_signature_with_key(req, auth, key)


def verify_signature_with_key(req: SignedRequest, auth: ParsedAuth, key: bytes) -> None:
    """Like :func:`verify_signature`, with a key from :func:`signing_key`."""
    payload_hash = hashlib.sha256(req.body).hexdigest()
    claimed = req.headers.get("x-amz-content-sha256")
    # A claimed hash (or UNSIGNED-PAYLOAD) that is not the body's would let a
    # signature cover a body other than the one we are about to act on.
    if claimed is not None and claimed.strip().lower() != payload_hash:
        raise SigV4Error(
            INVALID_AUTH,
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    sts = _string_to_sign(auth, _canonical_request(req, auth, payload_hash))
    expected = hmac.new(key, sts.encode("utf-8"), hashlib.sha256).hexdigest()
    # The signature is attacker-chosen text: compare bytes, in constant time.
    if not hmac.compare_digest(expected.encode("ascii"), auth.signature.encode("utf-8", "surrogateescape")):
        raise SigV4Error(INVALID_AUTH, SIGNATURE_MISMATCH_MESSAGE)


def canonical_request(req: SignedRequest, auth: ParsedAuth) -> str:
    """The SigV4 canonical request, for debugging signature mismatches."""
    return _canonical_request(req, auth, hashlib.sha256(req.body).hexdigest())


def string_to_sign(req: SignedRequest, auth: ParsedAuth) -> str:
    """The SigV4 string to sign, for debugging signature mismatches."""
    return _string_to_sign(auth, canonical_request(req, auth))


def _split_header(header: str) -> tuple[str, dict[str, str]]:
    """Split ``ALGO k=v, k=v`` into the algorithm and its parameters."""
    algorithm, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    # AWS splits on commas and whitespace alike: "Credential= AKID/..." is
    # reported as the lone item "AKID/...", not as a Credential with a space.
    for item in rest.replace(",", " ").split():
        name, eq, value = item.partition("=")
        if not eq:
            raise SigV4Error(
                INCOMPLETE_AUTH,
                f"'{item}' not a valid key=value pair (missing equal-sign) in Authorization header: '{header}'.",
            )
        params[name] = value
    return algorithm, params


def _parse_date(raw: str, *, rfc1123: bool) -> datetime:
    """Parse ``X-Amz-Date`` (ISO-8601 basic) or ``Date`` (RFC 1123) as UTC."""
    value = raw.strip()
    try:
        if rfc1123:
            parsed = parsedate_to_datetime(value)
            # HTTP dates are always GMT; "-0000" (what botocore sends) parses
            # as "zone unknown", i.e. naive.
            if parsed.tzinfo is None:
                return parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
        # Slicing beats strptime several times over, and this runs per call.
        if len(value) != 16 or value[8] != "T" or value[15] != "Z":
            raise ValueError(value)
        return datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[9:11]),
            int(value[11:13]),
            int(value[13:15]),
            tzinfo=UTC,
        )
    except (ValueError, TypeError, IndexError):
        raise SigV4Error(
            INCOMPLETE_AUTH,
            f"Date must be in ISO-8601 'basic format'. Got '{raw}'. See http://en.wikipedia.org/wiki/ISO_8601",
        ) from None


def _check_skew(amz_date: datetime, timestamp: str, now: datetime, skew: timedelta) -> None:
    """Reject requests signed more than ``skew`` before or after ``now``."""
    minutes = int(skew.total_seconds() // 60)
    if amz_date < now - skew:
        raise SigV4Error(
            INVALID_AUTH,
            f"Signature expired: {timestamp} is now earlier than "
            f"{(now - skew).strftime(_BASIC_FORMAT)} "
            f"({now.strftime(_BASIC_FORMAT)} - {minutes} min.)",
        )
    if amz_date > now + skew:
        raise SigV4Error(
            INVALID_AUTH,
            f"Signature not yet current: {timestamp} is still later than "
            f"{(now + skew).strftime(_BASIC_FORMAT)} "
            f"({now.strftime(_BASIC_FORMAT)} + {minutes} min.)",
        )


def _canonical_request(req: SignedRequest, auth: ParsedAuth, payload_hash: str) -> str:
    headers = req.headers
    canonical_headers = "".join(
        # Trimall: strip, and squeeze inner runs of whitespace to one space.
        f"{name}:{' '.join(headers.get(name, '').split())}\n"
        for name in auth.signed_headers
    )
    return "\n".join(
        (
            req.method.upper(),
            _canonical_path(req.path),
            _canonical_query(req.query_string),
            canonical_headers,
            ";".join(auth.signed_headers),
            payload_hash,
        )
    )


def _string_to_sign(auth: ParsedAuth, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{auth.timestamp}\n{auth.scope}\n{digest}"


def _canonical_path(path: str) -> str:
    """Normalise the wire path and percent-encode it once more.

    Non-S3 services normalise the path (RFC 3986 dot segments, and empty
    segments dropped) and then encode the already-encoded path again, which
    is what "encode each segment twice" means for a path taken off the wire.
    """
    if path == "/" or not path:
        return "/"
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    normalised = "/".join(kept)
    if path.startswith("/"):
        normalised = "/" + normalised
    if path.endswith("/") and kept:
        normalised += "/"
    return quote(normalised or "/", safe=_PATH_SAFE, errors="surrogateescape")


def _canonical_query(query_string: str) -> str:
    """Decode the raw query and re-encode it canonically, sorted."""
    if not query_string:
        return ""
    pairs = []
    for item in query_string.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((_encode_query(name), _encode_query(value)))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def _encode_query(text: str) -> str:
    # "+" is a space on the wire (botocore builds query strings with
    # urlencode) but signed as %20; a literal plus always travels as %2B.
    # surrogateescape round-trips percent-escapes that are not valid UTF-8.
    return quote(
        unquote_plus(text, errors="surrogateescape"),
        safe=_QUERY_SAFE,
        errors="surrogateescape",
    )


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()
