"""kmsweb's own REST API for grant requests: JSON in and out, SigV4-signed.

``POST /api/v1/grant-requests`` asks for a grant, ``GET
/api/v1/grant-requests/<id>`` reads one (its requester or an approver),
``POST /api/v1/grant-requests/<id>/withdraw`` takes it back. Requests are
signed exactly like KMS API calls (same access keys, credential scope service
``kms``); the method and path are part of the signature. Errors are
``{"__type": code, "message": ...}`` with 400, 403 (authentication and
authorization) or 404, and every refusal is audited once. Deciding is done in
the dashboard, where approvers pass MFA.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from audit.services import audit_internal_error, audit_rejected_request
from keys.selectors import key_get_for
from kmsweb.lib.caller import Caller, new_request_id
from kmsweb.lib.errors import KmsError, SerializationError, UnknownOperation, ValidationError
from kmsweb.lib.jsonbody import parse_body
from kmsweb.lib.public_url import public_url
from policies import selectors, services
from policies.callers import anonymous_caller, caller_from_signature
from policies.models import GrantRequest, GrantRequestState

CONTENT_TYPE = "application/json"
_STATUS = {
    "AccessDeniedException": 403,
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
    "IncompleteSignatureException": 403,
    "MissingAuthenticationTokenException": 403,
    "NotFoundException": 404,
    "UnknownOperationException": 405,
    "KMSInternalException": 500,
}
_CREATE_MEMBERS = {"KeyId", "GranteePrincipal", "Operations", "Constraints", "Justification", "DurationSeconds"}
_CONSTRAINT_MEMBERS = {"EncryptionContextSubset", "EncryptionContextEquals"}

Result = tuple[int, dict[str, Any]]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _json(body: dict[str, Any], status: int, request_id: str) -> HttpResponse:
    response = HttpResponse(json.dumps(body, separators=(",", ":")), status=status, content_type=CONTENT_TYPE)
    response["x-amzn-RequestId"] = request_id
    return response


def grant_request_body(request: GrantRequest, http: HttpRequest) -> dict[str, Any]:
    """The JSON form of a grant request, with links to itself, its withdrawal and its dashboard page."""
    self_path = reverse("policies:api_grant_request", args=[request.pk])
    decisions = [
        {"Principal": d.principal.arn, "Verdict": d.verdict, "Comment": d.comment, "Date": _iso(d.created_at)}
        for d in request.decisions.select_related("principal")
    ]
    body: dict[str, Any] = {
        "GrantRequestId": request.pk,
        "State": request.state,
        "KeyId": request.key.arn,
        "Requester": request.requester.arn,
        "GranteePrincipal": request.grantee_principal,
        "Operations": list(request.operations),
        "Justification": request.justification,
        "DurationSeconds": int(request.duration.total_seconds()),
        "ApprovalsRequired": request.approvals_required,
        "Approvals": sum(1 for d in decisions if d["Verdict"] == "approve"),
        "CreationDate": _iso(request.created_at),
        "DecisionDate": _iso(request.decided_at),
        "Decisions": decisions,
        "Links": {
            "Self": http.build_absolute_uri(self_path),
            "Dashboard": public_url(reverse("policies:grant_request_detail", args=[request.pk])),
        },
    }
    if request.constraints:
        body["Constraints"] = request.constraints
    if request.state == GrantRequestState.PENDING:
        body["PendingUntil"] = _iso(services.grant_request_deadline(request))
        body["Links"]["Withdraw"] = http.build_absolute_uri(
            reverse("policies:api_grant_request_withdraw", args=[request.pk])
        )
    if request.grant is not None:
        body["GrantId"] = request.grant.grant_id
        body["GrantExpirationDate"] = _iso(request.grant.expires_at)
    return body


def serve_signed(
    request: HttpRequest, event_name: str, method: str, handler: Callable[[Caller], Result]
) -> HttpResponse:
    """Authenticate, run ``handler``, answer in JSON; every refusal audited, never a 500 for bad input."""
    request_id = new_request_id()
    caller = anonymous_caller(request, request_id)
    try:
        if request.method != method:
            raise UnknownOperation(f"{request.method} is not supported here; use {method}.")
        caller = caller_from_signature(request, request_id)
        status, body = handler(caller)
        return _json(body, status, request_id)
    except KmsError as exc:
        try:
            if not isinstance(exc, UnknownOperation):
                audit_rejected_request(caller=caller, event_name=event_name, error=exc)
        except Exception:
            # A refusal that cannot be recorded is not answered as one.
            return _internal_error(caller, event_name, request_id)
        return _json({"__type": exc.code, "message": exc.message}, _STATUS.get(exc.code, exc.status), request_id)
    except Exception:
        return _internal_error(caller, event_name, request_id)


def _internal_error(caller: Caller, event_name: str, request_id: str) -> HttpResponse:
    """A JSON 500 for what went wrong inside kmsweb, logged and audited when the audit trail can take it."""
    error = audit_internal_error(caller=caller, event_name=event_name, request_id=request_id)
    return _json({"__type": error.code, "message": error.message}, 500, request_id)


def _text(body: dict[str, Any], member: str, *, required: bool = True, max_length: int = 2048) -> str:
    value = body.get(member)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{member} must be a string.")
    if not value and required:
        raise ValidationError(f"{member} must not be empty.")
    if len(value) > max_length:
        raise ValidationError(f"{member} must be at most {max_length} characters long.")
    if "\x00" in value:
        raise ValidationError(f"{member} must not contain the NUL character (U+0000).")
    return value


def _context(value: Any, member: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValidationError(f"Constraints.{member} must be an object of string keys and string values.")
    if any("\x00" in k or "\x00" in v for k, v in value.items()):
        raise ValidationError(f"Constraints.{member} must not contain the NUL character (U+0000).")
    return dict(value)


def _parse_create(raw: bytes) -> dict[str, Any]:
    """CreateGrantRequest's body, checked for shape; the service checks meaning."""
    # The KMS API's decoder: refuses what is not JSON, nests too deeply or
    # holds a lone UTF-16 surrogate (which nothing could store or echo).
    body = parse_body(raw, not_json="The body is not valid JSON.")
    if not isinstance(body, dict):
        raise SerializationError("The body must be a JSON object.")
    unknown = sorted(set(body) - _CREATE_MEMBERS)
    if unknown:
        raise ValidationError(f"Unknown member(s): {', '.join(unknown)}.")
    operations = body.get("Operations")
    if not isinstance(operations, list) or not all(isinstance(o, str) for o in operations):
        raise ValidationError("Operations must be a list of operation names.")
    if len(operations) > 20:
        raise ValidationError("Operations lists at most 20 operations.")
    constraints = body.get("Constraints")
    if constraints is not None:
        if not isinstance(constraints, dict) or set(constraints) - _CONSTRAINT_MEMBERS:
            raise ValidationError("Constraints may hold EncryptionContextSubset or EncryptionContextEquals only.")
        constraints = {name: _context(value, name) for name, value in constraints.items()}
    seconds = body.get("DurationSeconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise ValidationError("DurationSeconds must be an integer (3600 to 7776000).")
    if not 0 < seconds <= 10**9:
        raise ValidationError("DurationSeconds must be between 3600 (1 hour) and 7776000 (90 days).")
    return {
        "key_ref": _text(body, "KeyId"),
        "grantee_principal": _text(body, "GranteePrincipal", max_length=256),
        "operations": operations,
        "constraints": constraints or None,
        "justification": _text(body, "Justification", max_length=2000),
        "duration": timedelta(seconds=seconds),
    }


@login_not_required
@csrf_exempt
def grant_requests(request: HttpRequest) -> HttpResponse:
    """POST: ask for a grant; 201 with the pending request."""

    def create(caller: Caller) -> Result:
        data = _parse_create(request.body)
        key = key_get_for(caller=caller, key_ref=data.pop("key_ref"))
        created = services.grant_request_create(caller=caller, key=key, **data)
        return 201, grant_request_body(created, request)

    return serve_signed(request, "CreateGrantRequest", "POST", create)


@login_not_required
@csrf_exempt
def grant_request(request: HttpRequest, request_id: int) -> HttpResponse:
    """GET: one request, for its requester or an approver of its key's account."""

    def describe(caller: Caller) -> Result:
        found = selectors.grant_request_get(request_id=request_id)
        return 200, grant_request_body(services.grant_request_describe(caller=caller, request=found), request)

    return serve_signed(request, "DescribeGrantRequest", "GET", describe)


@login_not_required
@csrf_exempt
def grant_request_withdraw(request: HttpRequest, request_id: int) -> HttpResponse:
    """POST: the requester withdraws a pending request."""

    def withdraw(caller: Caller) -> Result:
        found = selectors.grant_request_get(request_id=request_id)
        return 200, grant_request_body(services.grant_request_withdraw(caller=caller, request=found), request)

    return serve_signed(request, "WithdrawGrantRequest", "POST", withdraw)
