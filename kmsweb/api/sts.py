"""The STS wire adapter: AWS Query (``Action=…&Version=2011-06-15``) in, STS's XML out.

STS calls reach the same ``POST /`` as KMS calls, told apart by having no
``X-Amz-Target`` and a form-encoded body (``kmsweb.api.views.answer``
dispatches). They are signed with credential scope service ``sts``.
Answers and errors have the shape botocore's query parser reads:
``<{Action}Response><{Action}Result>…</{Action}Result><ResponseMetadata>…``
and ``<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>``.
Every call, answered or refused, is audited once with eventSource
``sts.amazonaws.com``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from django.conf import settings
from django.core.exceptions import RequestDataTooBig

from audit.services import audit_rejected_request
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import KmsError
from policies.callers import ApiRequestLike, anonymous_caller, caller_from_signature
from policies.services import sts as services
from policies.services.sts import STS_SOURCE

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/xml"
VERSION = "2011-06-15"
NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
FORM_TYPE = "application/x-www-form-urlencoded"


class StsError(KmsError):
    """An STS error code and status, for errors the adapter answers itself."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


# kmsweb's own error codes (raised by SigV4 checks and shared services) as STS names them.
_STS_CODES: dict[str, tuple[str, int]] = {
    "UnrecognizedClientException": ("InvalidClientTokenId", 403),
    "InvalidSignatureException": ("SignatureDoesNotMatch", 403),
    "IncompleteSignatureException": ("IncompleteSignature", 400),
    "MissingAuthenticationTokenException": ("MissingAuthenticationToken", 403),
    "ExpiredTokenException": ("ExpiredToken", 403),
    "AccessDeniedException": ("AccessDenied", 403),
    "ValidationException": ("ValidationError", 400),
    "MalformedPolicyDocumentException": ("MalformedPolicyDocument", 400),
    "KMSInternalException": ("InternalFailure", 500),
}


def is_sts_call(meta: Any) -> bool:
    """An API call without ``X-Amz-Target`` and with a form body: an STS Query call."""
    return "HTTP_X_AMZ_TARGET" not in meta and str(meta.get("CONTENT_TYPE", "")).lower().startswith(FORM_TYPE)


def _sts_error(error: KmsError) -> KmsError:
    mapped = _STS_CODES.get(error.code)
    if mapped is None:
        return error
    out = StsError(mapped[0], error.message, mapped[1])
    out.decision = error.decision
    out.audited = error.audited
    return out


def _xml(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return escape(str(value))


def _members(members: dict[str, Any]) -> str:
    parts = []
    for name, value in members.items():
        if value is None:
            continue
        inner = _members(value) if isinstance(value, dict) else _xml(value)
        parts.append(f"<{name}>{inner}</{name}>")
    return "".join(parts)


def _result(action: str, result: dict[str, Any], request_id: str) -> bytes:
    return (
        f'<{action}Response xmlns="{NAMESPACE}"><{action}Result>{_members(result)}</{action}Result>'
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    ).encode()


def error_body(error: KmsError, request_id: str) -> bytes:
    """STS's error document for ``error``."""
    kind = "Receiver" if error.status >= 500 else "Sender"
    return (
        f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>{kind}</Type><Code>{_xml(error.code)}</Code>'
        f"<Message>{_xml(error.message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()


def _one(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[-1] if values else None


def _required(form: dict[str, list[str]], name: str) -> str:
    value = _one(form, name)
    if value is None:
        member = name[:1].lower() + name[1:]
        raise StsError(
            "ValidationError",
            f"1 validation error detected: Value null at '{member}' failed to satisfy constraint: "
            "Member must not be null",
        )
    return value


def _int(form: dict[str, list[str]], name: str) -> int | None:
    value = _one(form, name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise StsError("ValidationError", f"Value '{value}' for parameter {name} is not a valid integer.") from None


def _tags(form: dict[str, list[str]]) -> list[dict[str, str]] | None:
    """``Tags.member.N.Key`` / ``Tags.member.N.Value`` as a list, in N order."""
    found: dict[int, dict[str, str]] = {}
    for name, values in form.items():
        parts = name.split(".")
        if len(parts) == 4 and parts[0] == "Tags" and parts[1] == "member" and parts[3] in ("Key", "Value"):
            try:
                index = int(parts[2])
            except ValueError:
                continue
            found.setdefault(index, {})[parts[3]] = values[-1]
    return [found[i] for i in sorted(found)] if found else None


def _get_caller_identity(caller: Caller, form: dict[str, list[str]]) -> dict[str, Any]:
    return services.caller_identity_get(caller=caller)


def _get_session_token(caller: Caller, form: dict[str, list[str]]) -> dict[str, Any]:
    issued = services.session_token_get(
        caller=caller,
        duration_seconds=_int(form, "DurationSeconds"),
        serial_number=_one(form, "SerialNumber"),
        token_code=_one(form, "TokenCode"),
    )
    return {"Credentials": issued.as_response()}


def _assume_role(caller: Caller, form: dict[str, list[str]]) -> dict[str, Any]:
    role_arn = _required(form, "RoleArn")
    session_name = _required(form, "RoleSessionName")
    if _one(form, "Policy") is not None or any(name.startswith("PolicyArns.") for name in form):
        raise StsError("ValidationError", "kmsweb does not support session policies (Policy, PolicyArns).")
    assumed = services.role_assume(
        caller=caller,
        role_arn=role_arn,
        role_session_name=session_name,
        duration_seconds=_int(form, "DurationSeconds"),
        serial_number=_one(form, "SerialNumber"),
        token_code=_one(form, "TokenCode"),
        tags=_tags(form),
        external_id=_one(form, "ExternalId"),
        source_identity=_one(form, "SourceIdentity"),
    )
    return {
        "Credentials": assumed.credentials.as_response(),
        "AssumedRoleUser": {"AssumedRoleId": assumed.assumed_role_id, "Arn": assumed.arn},
        "PackedPolicySize": 0 if assumed.credentials.session.tags else None,
        "SourceIdentity": assumed.credentials.session.source_identity or None,
    }


def _get_access_key_info(caller: Caller, form: dict[str, list[str]]) -> dict[str, Any]:
    return {"Account": services.access_key_info_get(caller=caller, access_key_id=_required(form, "AccessKeyId"))}


HANDLERS: dict[str, Callable[[Caller, dict[str, list[str]]], dict[str, Any]]] = {
    "GetCallerIdentity": _get_caller_identity,
    "GetSessionToken": _get_session_token,
    "AssumeRole": _assume_role,
    "GetAccessKeyInfo": _get_access_key_info,
}


def answer(request: ApiRequestLike, request_id: str) -> tuple[int, bytes]:
    """Serve one STS Query call: authenticate (scope ``sts``), dispatch on Action, audit.

    Never raises: every failure is an STS error document, audited once.
    Returns the HTTP status and the XML body.
    """
    caller = anonymous_caller(request, request_id)
    action = ""
    try:
        try:
            body = request.body
        except RequestDataTooBig as exc:
            raise StsError(
                "ValidationError",
                f"The request body is larger than kmsweb accepts ({settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes).",
                413,
            ) from exc
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError as exc:
            raise StsError("MalformedQueryString", "The request body is not valid UTF-8.") from exc
        action = _one(form, "Action") or ""
        caller = caller_from_signature(request, request_id, service="sts")
        if not action:
            raise StsError("MissingAction", "Missing Action")
        version = _one(form, "Version")
        handler = HANDLERS.get(action)
        if handler is None or version != VERSION:
            raise StsError("InvalidAction", f"Could not find operation {action} for version {version or 'NO_VERSION'}")
        return 200, _result(action, handler(caller, form), request_id)
    except KmsError as exc:
        error = _sts_error(exc)
        event = action if action in HANDLERS else "UnknownOperation"
        audit_rejected_request(caller=caller, event_name=event, error=error, event_source=STS_SOURCE)
        return error.status, error_body(error, request_id)
    except Exception:
        logger.exception("internal error serving STS %s (request %s)", action or "?", request_id)
        error = StsError("InternalFailure", "An internal error occurred.", 500)
        try:
            audit_rejected_request(
                caller=caller, event_name=action or "UnknownOperation", error=error, event_source=STS_SOURCE
            )
        except Exception:
            logger.exception("could not audit internal error (request %s)", request_id)
        return error.status, error_body(error, request_id)
