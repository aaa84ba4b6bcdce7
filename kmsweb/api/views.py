"""The AWS wire adapter: ``POST /`` with ``X-Amz-Target: TrentService.<Op>``.

Authenticate (SigV4), parse and validate the JSON body against botocore's
KMS model, call the operation's handler, and answer in AWS's JSON form.
Every refusal on the way is audited, once.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from audit.services import audit_rejected_request
from keys.services.service_keys import via_service_name
from kmsweb.api import shapes, sigv4
from kmsweb.api.handlers import HANDLERS
from kmsweb.lib.caller import Caller, new_request_id
from kmsweb.lib.errors import (
    IncompleteSignature,
    InternalError,
    InvalidSignature,
    KmsError,
    MissingAuthenticationToken,
    RequestTooLarge,
    SerializationError,
    UnknownOperation,
    UnrecognizedClient,
    UnsupportedOperation,
    ValidationError,
)
from kmsweb.lib.generations import generations_scope
from policies.services import access_key_authenticate, grant_tokens_check, principal_acting_for

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "TrentService."
# A \uD800-\uDFFF escape: half of a surrogate pair, or a lone (invalid) one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# A registered service principal names the principal it acts for here (signed).
ON_BEHALF_OF = "x-kmsweb-on-behalf-of"
_SIGV4_ERRORS: dict[str, type[KmsError]] = {
    cls.code: cls for cls in (MissingAuthenticationToken, IncompleteSignature, InvalidSignature)
}


class ApiRequestLike(Protocol):
    """What the API reads of a request: a Django request has it, and so has
    ``kmsweb.api.wsgi.ApiRequest``."""

    META: Any
    method: str | None
    path: str

    @property
    def body(self) -> bytes: ...

    def is_secure(self) -> bool: ...


def is_api_request(request: HttpRequest) -> bool:
    return request.method == "POST" and "HTTP_X_AMZ_TARGET" in request.META


class MetaHeaders(Mapping[str, str]):
    """A request's headers by lower-case name, read from its WSGI environ on demand.

    ``x-amz-date`` is ``META["HTTP_X_AMZ_DATE"]``; ``content-type`` and
    ``content-length`` are the environ's own ``CONTENT_*`` when set. A name
    with an underscore names no header (the environ cannot tell ``a_b`` from
    ``a-b``). Only the few headers SigV4 reads are looked up, instead of
    copying every header of every request.
    """

    __slots__ = ("_meta",)

    def __init__(self, meta: Mapping[str, Any]) -> None:
        self._meta = meta

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        keys = _META_KEYS.get(name)
        if keys is None:
            keys = _meta_keys(name)
        if not keys:
            return default
        if len(keys) == 2:  # CONTENT_TYPE / CONTENT_LENGTH first, when set
            value = self._meta.get(keys[1])
            if value:
                return value
        return self._meta.get(keys[0], default)

    def __getitem__(self, name: str) -> str:
        value = self.get(name, _ABSENT)
        if value is _ABSENT:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name, _ABSENT) is not _ABSENT

    def _names(self) -> list[str]:
        names = [key[5:].replace("_", "-").lower() for key in self._meta if key.startswith("HTTP_")]
        names += [key.replace("_", "-").lower() for key in ("CONTENT_TYPE", "CONTENT_LENGTH") if self._meta.get(key)]
        return list(dict.fromkeys(names))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


_ABSENT: Any = object()
# Header name -> its environ keys ("HTTP_..." and, for the content headers,
# the CGI name); () for a name with an underscore. Bounded: names come from clients.
_META_KEYS: dict[str, tuple[str, ...]] = {}


def _meta_keys(name: str) -> tuple[str, ...]:
    if "_" in name:
        keys: tuple[str, ...] = ()
    else:
        key = name.upper().replace("-", "_")
        keys = ("HTTP_" + key, key) if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else ("HTTP_" + key,)
    if len(_META_KEYS) < 1024:
        _META_KEYS[name] = keys
    return keys


def _headers(request: ApiRequestLike) -> MetaHeaders:
    return MetaHeaders(request.META)


@functools.lru_cache(maxsize=4096)
def _signing_key(secret: str, date: str, region: str) -> bytes:
    # Four HMACs per request saved; the key is valid for one day and region.
    return sigv4.signing_key(secret, date, region, "kms")


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    """One answer of the KMS API, before any web framework wraps it."""

    status: int
    body: bytes
    request_id: str

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", CONTENT_TYPE),
            ("Content-Length", str(len(self.body))),
            ("x-amzn-RequestId", self.request_id),
        ]


def _json_answer(body: dict[str, Any], request_id: str, status: int = 200) -> ApiAnswer:
    return ApiAnswer(status, shapes.json_bytes(body), request_id)


def error_answer(error: KmsError, request_id: str) -> ApiAnswer:
    return _json_answer({"__type": error.code, "message": error.message}, request_id, error.status)


def _authenticate(request: ApiRequestLike, request_id: str) -> Caller:
    """Verify the signature and return the caller it proves, or raise."""
    signed = sigv4.SignedRequest(
        method=request.method or "POST",
        # The path as sent on the wire (gunicorn's RAW_URI), not Django's decoded one.
        path=request.META.get("RAW_URI", request.path).split("?", 1)[0] or "/",
        query_string=request.META.get("QUERY_STRING", ""),
        headers=_headers(request),
        body=request.body,
    )
    try:
        auth = sigv4.parse_authorization(
            signed, now=datetime.now(UTC), service="kms", regions=settings.KMSWEB_REGIONS or None
        )
    except sigv4.SigV4Error as exc:
        raise _SIGV4_ERRORS.get(exc.code, InvalidSignature)(exc.message) from exc
    # The target picks the operation: were it unsigned, a captured Encrypt
    # could be replayed as ScheduleKeyDeletion with the same body.
    if "x-amz-target" in signed.headers and "x-amz-target" not in auth.signed_headers:
        raise InvalidSignature("'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.")
    # Unsigned, a captured request could be replayed as some other user's.
    if ON_BEHALF_OF in signed.headers and ON_BEHALF_OF not in auth.signed_headers:
        raise InvalidSignature("'X-Kmsweb-On-Behalf-Of' must be a 'SignedHeader' in the AWS Authorization.")
    credentials = access_key_authenticate(access_key_id=auth.access_key_id)
    if credentials is None:
        raise UnrecognizedClient("The security token included in the request is invalid.")
    try:
        sigv4.verify_signature_with_key(signed, auth, _signing_key(credentials.secret, auth.date, auth.region))
    except sigv4.SigV4Error as exc:
        raise _SIGV4_ERRORS.get(exc.code, InvalidSignature)(exc.message) from exc
    principal = credentials.principal
    via_service: str | None = None
    invoked_by_arn: str | None = None
    if ON_BEHALF_OF in signed.headers:
        # The service signed; the request is evaluated as the user it names,
        # with kms:ViaService set (see docs/SERVICE_KEYS.md).
        service = principal
        principal = principal_acting_for(service=service, arn=signed.headers[ON_BEHALF_OF].strip())
        via_service = via_service_name(service.name, auth.region)
        invoked_by_arn = service.arn
    return Caller(
        principal_arn=principal.arn,
        account_id=principal.account_id,
        region=auth.region,
        origin="api",
        principal_type=principal.type,
        principal_name=principal.name,
        principal_pk=principal.pk,
        access_key_id=auth.access_key_id,
        source_ip=request.META.get("REMOTE_ADDR"),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
        secure_transport=request.is_secure(),
        principal_tags=tuple(sorted((principal.tags or {}).items())),
        via_service=via_service,
        invoked_by_arn=invoked_by_arn,
        request_id=request_id,
    )


def authenticate_request(request: HttpRequest, request_id: str) -> Caller:
    """Verify a SigV4-signed request and return its caller, or raise.

    Shared with kmsweb's own REST API (``policies.api``): the same access
    keys sign it, with the credential scope's service ``kms``; the method and
    path are part of what is signed.
    """
    return _authenticate(request, request_id)


def anonymous_caller(request: HttpRequest, request_id: str) -> Caller:
    """Who an unauthenticated request claims to be, for its audit event."""
    return _anonymous(request, request_id)


def _anonymous(request: ApiRequestLike, request_id: str) -> Caller:
    """Who an unauthenticated request claims to be, for its audit event."""
    return Caller(
        principal_arn="",
        account_id="",
        region="",
        origin="api",
        principal_type="anonymous",
        source_ip=request.META.get("REMOTE_ADDR"),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
        request_id=request_id,
    )


@csrf_exempt
def aws_endpoint(request: HttpRequest) -> HttpResponse:
    """Serve one AWS JSON-protocol KMS call as a Django view.

    Production traffic takes ``kmsweb.api.wsgi``'s shorter path to
    :func:`answer`; this view serves what reaches Django's handler (the test
    client, a handler that is not kmsweb's).
    """
    reply = answer(request)
    response = HttpResponse(reply.body, status=reply.status, content_type=CONTENT_TYPE)
    response["x-amzn-RequestId"] = reply.request_id
    return response


def answer(request: ApiRequestLike) -> ApiAnswer:
    """Serve one AWS JSON-protocol KMS call: authenticate, validate, run, audit.

    ``request`` is a Django request or a :class:`kmsweb.api.wsgi.ApiRequest`;
    only ``META``, ``body``, ``method``, ``path`` and ``is_secure()`` are read.
    Never raises: every failure is an AWS error answer, and is audited.
    Its cache lookups see every change answered before it started
    (``kmsweb.lib.generations``).
    """
    with generations_scope():
        return _answer(request)


def _answer(request: ApiRequestLike) -> ApiAnswer:
    request_id = new_request_id()
    target = request.META.get("HTTP_X_AMZ_TARGET", "")
    operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
    event_name = operation if operation in shapes.operation_names() else "UnknownOperation"
    caller = _anonymous(request, request_id)
    params: dict[str, Any] | None = None
    try:
        try:
            request.body  # noqa: B018 - read (and size-checked) once, here
        except RequestDataTooBig as exc:
            raise RequestTooLarge(
                f"The request body is larger than kmsweb accepts ({settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes)."
            ) from exc
        caller = _authenticate(request, request_id)
        if event_name == "UnknownOperation":
            raise UnknownOperation(f"Unknown operation {target or '(no X-Amz-Target)'}.")
        try:
            body = json.loads(request.body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise SerializationError("Start of structure or map found where not expected.") from exc
        if b"\\u" in request.body and _SURROGATE_ESCAPE.search(request.body):
            # json.loads lets "\ud800" through as a lone surrogate, which no
            # later step can encode as UTF-8; only bodies with such an escape
            # pay for the check.
            try:
                json.dumps(body, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError as exc:
                raise SerializationError("Invalid UTF-16 surrogate in a JSON string.") from exc
        try:
            params = shapes.parse_input(operation, body)
        except shapes.ShapeError as exc:
            raise (ValidationError if exc.code == "ValidationException" else SerializationError)(exc.message) from exc
        if params.get("GrantTokens"):
            grant_tokens_check(tokens=params["GrantTokens"])
        handler = HANDLERS.get(operation)
        if handler is None:
            raise UnsupportedOperation(f"kmsweb does not implement {operation} yet.")
        result = handler(caller, params)
        return ApiAnswer(200, shapes.encode_output(operation, result), request_id)
    except KmsError as exc:
        audit_rejected_request(caller=caller, event_name=event_name, error=exc, request_parameters=params)
        return error_answer(exc, request_id)
    except Exception:
        logger.exception("internal error serving %s (request %s)", event_name, request_id)
        error = InternalError("An internal error occurred.")
        try:
            audit_rejected_request(caller=caller, event_name=event_name, error=error)
        except Exception:
            logger.exception("could not audit internal error (request %s)", request_id)
        return error_answer(error, request_id)
