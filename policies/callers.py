"""Who is asking, from an HTTP request: the one place a request becomes a ``Caller``.

* :func:`caller_from_request` - a dashboard request, by the session's user,
  who must have signed in with a password *and* passed the TOTP second
  factor. The dashboard's gate (``policies.middleware``) already refuses
  anyone else; this is the second, independent lock, so a view the gate
  let through by mistake still cannot act.
* :func:`caller_from_signature` - a SigV4-signed request, for both APIs:
  the AWS JSON API (``kmsweb.api``) and kmsweb's own REST API
  (``policies.api``). Same access keys, credential scope service ``kms``;
  the method and path are part of what is signed.
* :func:`anonymous_caller` - who an unauthenticated API request claims to
  be, for the audit event of its refusal.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from keys.services.service_keys import via_service_name
from kmsweb.lib import sigv4
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    AccessDenied,
    ExpiredToken,
    IncompleteSignature,
    InvalidSignature,
    KmsError,
    MissingAuthenticationToken,
    UnrecognizedClient,
)
from policies.roles import ALL_ROLES
from policies.selectors import principal_for_user
from policies.services import access_key_authenticate, principal_acting_for
from policies.services.sts import session_token_matches

# A registered service principal names the principal it acts for here (signed).
ON_BEHALF_OF = "x-kmsweb-on-behalf-of"
# Temporary credentials' session token (STS).
SECURITY_TOKEN = "x-amz-security-token"  # noqa: S105 - a header name
_SIGV4_ERRORS: dict[str, type[KmsError]] = {
    cls.code: cls for cls in (MissingAuthenticationToken, IncompleteSignature, InvalidSignature)
}


def caller_from_request(request: HttpRequest) -> Caller:
    """The caller for a dashboard request by a logged-in, second-factor-verified, linked user.

    Raises ``PermissionDenied`` (403) for anyone else: an anonymous visitor,
    or a session that passed the password step only. Raises ``UnlinkedUser``
    for a user with no principal.
    """
    user: Any = request.user
    if not user.is_authenticated or not user.is_verified():
        raise PermissionDenied("Sign in with your password and your second factor first.")
    principal = principal_for_user(user)
    if user.is_superuser:
        roles = ALL_ROLES
    else:
        roles = tuple(sorted(g.name for g in user.groups.all()))
    # Kept for the page's sidebar (policies.context_processors), which would
    # otherwise query the groups again on every page.
    request.dashboard_roles = roles  # type: ignore[attr-defined]
    return Caller(
        principal_arn=principal.arn,
        account_id=principal.account_id,
        region=settings.KMSWEB_DEFAULT_REGION,
        origin="dashboard",
        principal_type=principal.type,
        principal_name=principal.name,
        principal_pk=principal.pk,
        source_ip=request.META.get("REMOTE_ADDR"),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
        mfa_present=True,
        secure_transport=request.is_secure(),
        roles=roles,
        principal_tags=tuple(sorted((principal.tags or {}).items())),
    )


def caller_from_signature(request: ApiRequestLike, request_id: str, *, service: str = "kms") -> Caller:
    """Verify a SigV4-signed request and return the caller it proves, or raise a ``KmsError``.

    ``service`` is the credential scope's service: ``kms`` for both APIs,
    ``sts`` for the STS Query API. Temporary (``ASIA…``) credentials must
    carry their session token (``X-Amz-Security-Token``) and be unexpired.
    """
    return _authenticate(request, request_id, service)


def anonymous_caller(request: ApiRequestLike, request_id: str) -> Caller:
    """Who an unauthenticated request claims to be, for its audit event."""
    return _anonymous(request, request_id)


class ApiRequestLike(Protocol):
    """What the API reads of a request: a Django request has it, and so has
    ``kmsweb.api.wsgi.ApiRequest``."""

    META: Any
    method: str | None
    path: str

    @property
    def body(self) -> bytes: ...

    def is_secure(self) -> bool: ...


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
def _signing_key(secret: str, date: str, region: str, service: str = "kms") -> bytes:
    # Four HMACs per request saved; the key is valid for one day and region.
    return sigv4.signing_key(secret, date, region, service)


_INVALID_TOKEN = "The security token included in the request is invalid."  # noqa: S105 - a message


def _authenticate(request: ApiRequestLike, request_id: str, service: str = "kms") -> Caller:
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
            signed, now=datetime.now(UTC), service=service, regions=settings.KMSWEB_REGIONS or None
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
        raise UnrecognizedClient(_INVALID_TOKEN)
    session = credentials.session
    token = signed.headers.get(SECURITY_TOKEN)
    if session is not None:
        # The token is checked before the signature, as AWS does: a tampered
        # token is an invalid token whatever the signature says.
        if token is None or not session_token_matches(session, token):
            raise UnrecognizedClient(_INVALID_TOKEN)
        if SECURITY_TOKEN not in auth.signed_headers:
            raise InvalidSignature("'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization.")
    elif token is not None:
        # A long-term key has no session token; one sent with it is not valid.
        raise UnrecognizedClient(_INVALID_TOKEN)
    try:
        sigv4.verify_signature_with_key(signed, auth, _signing_key(credentials.secret, auth.date, auth.region, service))
    except sigv4.SigV4Error as exc:
        raise _SIGV4_ERRORS.get(exc.code, InvalidSignature)(exc.message) from exc
    if session is not None and session.expires_at <= datetime.now(UTC):
        raise ExpiredToken("The security token included in the request is expired")
    principal = credentials.principal
    via_service: str | None = None
    invoked_by_arn: str | None = None
    if ON_BEHALF_OF in signed.headers:
        # The service signed; the request is evaluated as the user it names,
        # with kms:ViaService set (see docs/SERVICE_KEYS.md).
        if session is not None:
            # A session's MFA and tags are the signer's, not the user's.
            raise AccessDenied("Temporary credentials cannot act on another principal's behalf.")
        signer = principal
        principal = principal_acting_for(service=signer, arn=signed.headers[ON_BEHALF_OF].strip())
        via_service = via_service_name(signer.name, auth.region)
        invoked_by_arn = signer.arn
    tags = dict(principal.tags or {})
    if session is not None:
        # Session tags override the principal's tags of the same key (AWS).
        tags.update(session.tags or {})
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
        principal_tags=tuple(sorted(tags.items())),
        via_service=via_service,
        invoked_by_arn=invoked_by_arn,
        request_id=request_id,
        mfa_present=session is not None and session.mfa_authenticated_at is not None,
        mfa_authenticated_at=session.mfa_authenticated_at if session is not None else None,
        session_created_at=session.created_at if session is not None else None,
        role_session_name=session.role_session_name if session is not None else "",
    )


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
