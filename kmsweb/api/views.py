"""The AWS wire adapter: ``POST /``, the operation named by ``X-Amz-Target: TrentService.<Op>``.

Authenticate (SigV4), parse and validate the JSON body against botocore's
KMS model, call the operation's handler, and answer in AWS's JSON form.
Every refusal on the way is audited, once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from audit.services import audit_internal_error, audit_rejected_request
from audit.services.writer import on_the_way
from kmsweb import metrics
from kmsweb.api import shapes, sts
from kmsweb.api.handlers import HANDLERS
from kmsweb.generations import StaleGenerations, generations_scope
from kmsweb.lib import operations
from kmsweb.lib.caller import Caller, new_request_id
from kmsweb.lib.errors import (
    KmsError,
    RequestTooLarge,
    SerializationError,
    UnknownOperation,
    UnsupportedOperation,
    ValidationError,
)
from kmsweb.lib.jsonbody import parse_body
from kmsweb.ratelimit import rate_limit_check
from policies.callers import ApiRequestLike, anonymous_caller, caller_from_signature
from policies.services import grant_tokens_check

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "TrentService."


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    """One answer of the KMS API, before any web framework wraps it."""

    status: int
    body: bytes
    request_id: str
    content_type: str = CONTENT_TYPE

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            ("x-amzn-RequestId", self.request_id),
        ]


def _json_answer(body: dict[str, Any], request_id: str, status: int = 200) -> ApiAnswer:
    return ApiAnswer(status, shapes.json_bytes(body), request_id)


def error_answer(error: KmsError, request_id: str) -> ApiAnswer:
    body = {"__type": error.code, "message": error.message} if error.wire_message else {"__type": error.code}
    return _json_answer(body, request_id, error.status)


def is_api_call(environ: Mapping[str, Any]) -> bool:
    """Whether a request (its WSGI environ, or a Django request's ``META``) is a KMS API call.

    The API is ``POST /``, told by path and method alone: the one test, used
    by the WSGI handler and ``AwsApiMiddleware``. No header decides it, since
    headers are the client's to choose: every other request is the
    dashboard's or the REST API's and meets their gate, and a ``POST /``
    meets the API, which trusts a valid signature and nothing else.
    """
    return environ.get("PATH_INFO", "") in ("/", "") and str(environ.get("REQUEST_METHOD", "")).upper() == "POST"


@csrf_exempt
def aws_endpoint(request: HttpRequest) -> HttpResponse:
    """Serve one AWS JSON-protocol KMS call as a Django view.

    Production traffic takes ``kmsweb.api.wsgi``'s shorter path to
    :func:`answer`; this view serves what reaches Django's handler (the test
    client, a handler that is not kmsweb's).
    """
    reply = answer(request)
    response = HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
    response["x-amzn-RequestId"] = reply.request_id
    return response


def answer(request: ApiRequestLike) -> ApiAnswer:
    """Serve one AWS JSON-protocol KMS call (or hand an STS Query call to ``kmsweb.api.sts``).

    ``request`` is a Django request or a :class:`kmsweb.api.wsgi.ApiRequest`;
    only ``META``, ``body``, ``method``, ``path`` and ``is_secure()`` are read.
    Never raises: every failure is an AWS error answer, and is audited.
    Its cache lookups see every change answered before it started
    (``kmsweb.generations``).
    """
    started = time.perf_counter()
    target = request.META.get("HTTP_X_AMZ_TARGET", "")
    operation = target.removeprefix(TARGET_PREFIX)
    token = _call.set(_Call())
    grouped = operations.is_read_only(operation) and settings.KMSWEB_AUDIT_GROUP_COMMIT
    try:
        with on_the_way(grouped), generations_scope(optimistic=_may_assume_generations(grouped)):
            reply = _answer(request)
    except StaleGenerations:
        # A change to a cached table committed while the call ran on the
        # counters it assumed: it left no event and no answer. Served again,
        # reading the counters (and not counted against its quotas again).
        metrics.GENERATION_RETRIES.inc()
        with generations_scope():
            reply = _answer(request)
    finally:
        _call.reset(token)
    metrics.api_observe(operation, reply.status, time.perf_counter() - started)
    return reply


class _Call:
    """What one call's first attempt did that the call served again must not do twice."""

    __slots__ = ("quota_counted",)

    def __init__(self) -> None:
        self.quota_counted = False


_call: ContextVar[_Call | None] = ContextVar("kmsweb_api_call", default=None)


def _may_assume_generations(grouped: bool) -> bool:
    """Whether a call may assume the cache generations, its audit event checking them.

    ``grouped``: a read-only call, whose one write is its event, handed to
    the group writer. On PostgreSQL, where the writer's statement checks
    them (``kmsweb.generations``). Every other call reads them.
    """
    return grouped and connections[DEFAULT_DB_ALIAS].vendor == "postgresql"


def _answer(request: ApiRequestLike) -> ApiAnswer:
    request_id = new_request_id()
    if "HTTP_X_AMZ_TARGET" not in request.META and sts.is_sts_call(request.META):
        status, body = sts.answer(request, request_id)
        return ApiAnswer(status, body, request_id, sts.CONTENT_TYPE)
    target = request.META.get("HTTP_X_AMZ_TARGET", "")
    operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
    event_name = operation if operation in shapes.operation_names() else "UnknownOperation"
    caller = anonymous_caller(request, request_id)
    try:
        try:
            request.body  # noqa: B018 - read (and size-checked) once, here
        except RequestDataTooBig as exc:
            raise RequestTooLarge(
                f"The request body is larger than kmsweb accepts ({settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes)."
            ) from exc
        caller = caller_from_signature(request, request_id)
        if event_name == "UnknownOperation":
            raise UnknownOperation(f"Unknown operation {target or '(no X-Amz-Target)'}.")
        body = parse_body(request.body)
    except KmsError as exc:
        audit_rejected_request(caller=caller, event_name=event_name, error=exc)
        return error_answer(exc, request_id)
    except Exception:
        return _internal_error(caller, event_name, request_id)
    return serve(caller, operation, body, request_id)


def serve(caller: Caller, operation: str, body: Any, request_id: str) -> ApiAnswer:
    """Serve one authenticated call of ``operation`` with its decoded JSON ``body``.

    Validates the body against the model, checks grant tokens, calls the
    handler and answers; every refusal is audited once and answered in AWS's
    error form. Never raises. The wire reaches it once the signature is
    verified; tests call it with a persona's caller to walk AWS's error
    tables without a signed request per case.
    """
    params: dict[str, Any] | None = None
    try:
        try:
            params = shapes.parse_input(operation, body)
        except shapes.ShapeError as exc:
            raise (ValidationError if exc.code == "ValidationException" else SerializationError)(exc.message) from exc
        call = _call.get()
        if call is None or not call.quota_counted:
            # Counted once per call: a call served again (StaleGenerations) was
            # counted by its first attempt, unless that attempt was throttled
            # (a throttled call is not counted).
            rate_limit_check(
                account_id=caller.account_id,
                region=caller.region,
                principal_arn=caller.principal_arn,
                operation=operation,
                params=params,
            )
            if call is not None:
                call.quota_counted = True
        if params.get("GrantTokens"):
            grant_tokens_check(tokens=params["GrantTokens"])
        handler = HANDLERS.get(operation)
        if handler is None:
            raise UnsupportedOperation(f"kmsweb does not implement {operation} yet.")
        result = handler(caller, params)
        return ApiAnswer(200, shapes.encode_output(operation, result), request_id)
    except KmsError as exc:
        audit_rejected_request(caller=caller, event_name=operation, error=exc, request_parameters=params)
        return error_answer(exc, request_id)
    except Exception:
        return _internal_error(caller, operation, request_id)


def _internal_error(caller: Caller, event_name: str, request_id: str) -> ApiAnswer:
    return error_answer(audit_internal_error(caller=caller, event_name=event_name, request_id=request_id), request_id)
