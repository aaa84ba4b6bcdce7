"""STS: temporary credentials, roles and their trust policies, API principals' MFA devices.

The STS wire adapter (``kmsweb.api.sts``) calls these services, as the
management commands and the dashboard do. Each records one audit event with
``eventSource`` ``sts.amazonaws.com`` (the IAM-side changes — roles, MFA
devices, principal deletion — with ``iam.amazonaws.com``).

Temporary credentials are ``ASIA…`` access key ids with a 40-character
secret (encrypted under the platform owned ``access-key-secrets`` key, as
long-term secrets are) and a random session token stored only as its
SHA-256: a stolen database yields no usable token. Codes from an MFA device
are accepted once (the device's ``last_t``), as IAM accepts them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import qrcode
import qrcode.image.svg
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_otp.oath import hotp

from audit.services import audited
from keys.services.platform import platform_decrypt, platform_encrypt
from kmsweb.generations import CREDENTIALS, IDENTITY, generation_bump
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, AlreadyExists, KmsError, MalformedPolicyDocument, NotFound, ValidationError
from policies import evaluation as ev
from policies.authorization import authorize, decision_record
from policies.models import AccessKey, Account, MfaDevice, Principal, PrincipalType, StsSession
from policies.services.principals import (
    _ACCESS_KEY_ALPHABET,
    ACCESS_KEY_CACHE,
    ACCESS_KEY_PURPOSE,
    SESSION_KEY_PREFIX,
    principal_create,
)
from policies.services.users import TOTP_DIGITS, TOTP_ISSUER, TOTP_PURPOSE, TOTP_STEP

STS_SOURCE = "sts.amazonaws.com"
IAM_SOURCE = "iam.amazonaws.com"

# AWS's limits: GetSessionToken 15 min to 36 h (default 12 h); AssumeRole
# 15 min to the role's MaxSessionDuration (kmsweb: IAM's default, 1 h).
SESSION_TOKEN_DURATION = (900, 129600, 43200)
ASSUME_ROLE_DURATION = (900, 3600, 3600)
MAX_SESSION_TAGS = 50
_ROLE_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_MFA_DEVICE_NAME = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
_TOKEN_CODE = re.compile(r"[0-9]{6}")
_TAG_KEY = re.compile(r"[\w+\-=._:/@ ]{1,128}", re.ASCII)
_ROLE_ARN = re.compile(r"arn:aws:iam::([0-9]{12}):role/([A-Za-z0-9+=,.@_-]{1,64})")
_MFA_FAILED = "MultiFactorAuthentication failed with invalid MFA one time pass code."


class StsAccessDenied(KmsError):
    """STS's ``AccessDenied`` (HTTP 403)."""

    code = "AccessDenied"
    status = 403


class StsValidationError(KmsError):
    """STS's ``ValidationError`` (HTTP 400)."""

    code = "ValidationError"


@dataclass(frozen=True)
class IssuedCredentials:
    """Temporary credentials as STS returns them; the secret and token exist only here."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime
    session: StsSession

    def as_response(self) -> dict[str, Any]:
        return {
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "SessionToken": self.session_token,
            "Expiration": self.expiration,
        }


@dataclass(frozen=True)
class MfaEnrolment:
    """A new virtual MFA device: its serial, secret, otpauth URI and QR code (shown once)."""

    device: MfaDevice
    secret_b32: str
    uri: str
    qr_data_uri: str


def token_digest(token: str) -> str:
    """The stored form of a session token (SHA-256, hex)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def session_token_matches(session: StsSession, token: str) -> bool:
    """Whether ``token`` is the session's token (constant time)."""
    return hmac.compare_digest(token_digest(token), session.token_sha256)


def _duration(value: int | None, bounds: tuple[int, int, int]) -> int:
    low, high, default = bounds
    if value is None:
        return default
    if value < low:
        raise StsValidationError(
            f"1 validation error detected: Value '{value}' at 'durationSeconds' failed to satisfy constraint: "
            f"Member must have value greater than or equal to {low}"
        )
    if value > high:
        raise StsValidationError(
            f"1 validation error detected: Value '{value}' at 'durationSeconds' failed to satisfy constraint: "
            f"Member must have value less than or equal to {high}"
        )
    return value


# --- MFA devices -------------------------------------------------------------


def _device_secret(device: MfaDevice) -> bytes:
    return platform_decrypt(
        purpose=TOTP_PURPOSE, blob=bytes(device.secret_ciphertext), context={"mfaSerial": device.serial}
    )


def mfa_device_create(*, caller: Caller, principal: Principal, name: str) -> MfaEnrolment:
    """Create and enable a virtual MFA device for an API principal (IAM's
    CreateVirtualMFADevice + EnableMFADevice); the secret is returned once.

    Audited as ``EnableMFADevice``; the secret never reaches the record.
    """
    secret = secrets.token_bytes(20)
    with audited(
        caller,
        "EnableMFADevice",
        request_parameters={"UserName": principal.arn, "VirtualMFADeviceName": name},
        event_source=IAM_SOURCE,
        read_only=False,
    ) as op:
        authorize(caller=caller, action="iam:EnableMFADevice")
        if not _MFA_DEVICE_NAME.fullmatch(name or ""):
            raise ValidationError("An MFA device name is 1-128 letters, digits and +=,.@_-.")
        if principal.type == PrincipalType.ROLE:
            raise ValidationError("A role has no MFA device: whoever assumes it proves the second factor.")
        device = MfaDevice(account_id=principal.account_id, principal=principal, name=name)
        device.secret_ciphertext = platform_encrypt(
            purpose=TOTP_PURPOSE, plaintext=secret, context={"mfaSerial": device.serial}
        )
        try:
            with transaction.atomic():
                device.save()
        except IntegrityError as exc:
            raise AlreadyExists(f"MFA device {device.serial} already exists.") from exc
        op.response_elements = {"SerialNumber": device.serial}
    secret_b32 = base64.b32encode(secret).decode().rstrip("=")
    label = quote(f"{TOTP_ISSUER}:{principal.name}@{principal.account_id}")
    uri = (
        f"otpauth://totp/{label}?secret={secret_b32}&issuer={TOTP_ISSUER}"
        f"&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP}"
    )
    svg = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage).to_string()
    return MfaEnrolment(device, secret_b32, uri, "data:image/svg+xml;base64," + base64.b64encode(svg).decode())


def mfa_device_delete(*, caller: Caller, device: MfaDevice) -> None:
    """Remove an API principal's MFA device (IAM's DeactivateMFADevice); audited."""
    with audited(
        caller,
        "DeactivateMFADevice",
        request_parameters={"UserName": device.principal.arn, "SerialNumber": device.serial},
        event_source=IAM_SOURCE,
        read_only=False,
    ):
        authorize(caller=caller, action="iam:DeactivateMFADevice")
        MfaDevice.objects.filter(pk=device.pk).delete()


def _mfa_check(*, principal: Principal, serial: str | None, code: str | None, now: datetime) -> datetime | None:
    """Check ``code`` against the principal's device ``serial``; the time it passed, or None without MFA.

    Must run inside a transaction: the device row is locked, so two
    requests racing with one code cannot both pass. Raises ``StsAccessDenied``
    for a wrong, reused or throttled code, or a serial that is not the
    principal's.
    """
    if not serial and not code:
        return None
    if not serial or not code:
        raise StsAccessDenied("MultiFactorAuthentication failed, unable to validate MFA code.")
    if not _TOKEN_CODE.fullmatch(code):
        raise StsValidationError(
            "1 validation error detected: Value at 'tokenCode' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: [\\d]*"
        )
    device = (
        MfaDevice.objects.select_for_update()
        .filter(principal=principal, account_id=principal.account_id, name=serial.rsplit("/", 1)[-1])
        .first()
    )
    if device is None or device.serial != serial:
        raise StsAccessDenied(_MFA_FAILED)
    allowed, _ = device.verify_is_allowed()
    if not allowed:
        raise StsAccessDenied("MultiFactorAuthentication failed: too many wrong codes, wait and try again.")
    secret = _device_secret(device)
    step_now = int(now.timestamp()) // TOTP_STEP
    for t in (step_now - 1, step_now, step_now + 1):
        expected = str(hotp(secret, t, digits=TOTP_DIGITS)).zfill(TOTP_DIGITS)
        if t > device.last_t and hmac.compare_digest(expected, code):
            MfaDevice.objects.filter(pk=device.pk).update(
                last_t=t, throttling_failure_count=0, throttling_failure_timestamp=None
            )
            return now
    device.throttle_increment(commit=False)
    raise MfaRefused(device)


class MfaRefused(StsAccessDenied):
    """A wrong or reused code; carries the device's failure count, which must outlive the rollback."""

    def __init__(self, device: MfaDevice) -> None:
        super().__init__(_MFA_FAILED)
        self.device_pk = device.pk
        self.failures = (device.throttling_failure_timestamp, device.throttling_failure_count)

    def keep_throttle(self) -> None:
        MfaDevice.objects.filter(pk=self.device_pk).update(
            throttling_failure_timestamp=self.failures[0], throttling_failure_count=self.failures[1]
        )


# --- sessions ----------------------------------------------------------------


def _new_session_key_id() -> str:
    return SESSION_KEY_PREFIX + "".join(secrets.choice(_ACCESS_KEY_ALPHABET) for _ in range(16))


def _issue(
    *,
    principal: Principal,
    source: Principal | None,
    source_access_key_id: str,
    duration: int,
    now: datetime,
    mfa_at: datetime | None,
    mfa_serial: str,
    role_session_name: str = "",
    tags: dict[str, str] | None = None,
    source_identity: str = "",
) -> IssuedCredentials:
    access_key_id = _new_session_key_id()
    secret = secrets.token_urlsafe(30)[:40]
    token = secrets.token_urlsafe(96)
    expires = now + timedelta(seconds=duration)
    session = StsSession.objects.create(
        access_key_id=access_key_id,
        principal=principal,
        source_principal=source,
        source_access_key_id=source_access_key_id or "",
        role_session_name=role_session_name,
        source_identity=source_identity,
        tags=tags or {},
        secret_ciphertext=platform_encrypt(
            purpose=ACCESS_KEY_PURPOSE, plaintext=secret.encode(), context={"accessKeyId": access_key_id}
        ),
        token_sha256=token_digest(token),
        mfa_authenticated_at=mfa_at,
        mfa_serial=mfa_serial if mfa_at else "",
        created_at=now,
        expires_at=expires,
    )
    ACCESS_KEY_CACHE.invalidate(access_key_id)
    return IssuedCredentials(access_key_id, secret, token, expires, session)


def _principal_of(caller: Caller) -> Principal:
    principal = (
        Principal.objects.select_related("account").filter(pk=caller.principal_pk).first()
        if caller.principal_pk is not None
        else None
    )
    if principal is None:
        raise StsAccessDenied(f"User: {caller.principal_arn} is not authorized to perform this operation.")
    return principal


def session_token_get(
    *,
    caller: Caller,
    duration_seconds: int | None = None,
    serial_number: str | None = None,
    token_code: str | None = None,
) -> IssuedCredentials:
    """GetSessionToken: temporary credentials for the caller itself, with MFA when a code is given.

    Refused to callers that already use temporary credentials (as AWS) and
    to roles. Any principal may call it (AWS: no permission needed).
    """
    params = {"DurationSeconds": duration_seconds, "SerialNumber": serial_number}
    try:
        with audited(
            caller,
            "GetSessionToken",
            request_parameters={k: v for k, v in params.items() if v is not None},
            event_source=STS_SOURCE,
            read_only=False,
        ) as op:
            duration = _duration(duration_seconds, SESSION_TOKEN_DURATION)
            if caller.is_session:
                raise StsAccessDenied("Cannot call GetSessionToken with session credentials")
            if caller.principal_type == PrincipalType.ROLE:
                raise StsAccessDenied("Cannot call GetSessionToken with session credentials")
            principal = _principal_of(caller)
            now = timezone.now()
            mfa_at = _mfa_check(principal=principal, serial=serial_number, code=token_code, now=now)
            issued = _issue(
                principal=principal,
                source=None,
                source_access_key_id=caller.access_key_id or "",
                duration=duration,
                now=now,
                mfa_at=mfa_at,
                mfa_serial=serial_number or "",
            )
            op.response_elements = {"Credentials": issued.as_response()}
            op.additional_event_data["mfaAuthenticated"] = mfa_at is not None
    except MfaRefused as exc:
        exc.keep_throttle()
        raise
    return issued


@dataclass(frozen=True)
class AssumedRole:
    """AssumeRole's answer: the credentials and the assumed-role user."""

    credentials: IssuedCredentials
    arn: str
    assumed_role_id: str


def _session_tags(tags: list[dict[str, str]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in tags or []:
        key, value = tag.get("Key"), tag.get("Value")
        if key is None or value is None:
            raise StsValidationError("A session tag needs a Key and a Value.")
        if not _TAG_KEY.fullmatch(key) or key.lower().startswith("aws:") or len(value) > 256:
            raise StsValidationError(f"The session tag {key!r} is not valid (key 1-128 characters, value up to 256).")
        if key.lower() in {k.lower() for k in out}:
            raise StsValidationError(f"Duplicate tag keys found. Please note that Tag keys are case insensitive: {key}")
        out[key] = value
    if len(out) > MAX_SESSION_TAGS:
        raise StsValidationError(f"A session has at most {MAX_SESSION_TAGS} tags.")
    return out


def role_assume(
    *,
    caller: Caller,
    role_arn: str,
    role_session_name: str,
    duration_seconds: int | None = None,
    serial_number: str | None = None,
    token_code: str | None = None,
    tags: list[dict[str, str]] | None = None,
    external_id: str | None = None,
    source_identity: str | None = None,
) -> AssumedRole:
    """AssumeRole: temporary credentials of a role, if its trust policy lets the caller in.

    The trust policy is evaluated by the policy engine as a resource policy
    (action ``sts:AssumeRole``, resource the role): naming the caller
    directly allows it; naming the account delegates to the caller's
    identity policies. The request's ``aws:MultiFactorAuthPresent`` /
    ``aws:MultiFactorAuthAge`` are those of the code given now or, for a
    caller on MFA-authenticated session credentials, of that session;
    ``aws:RequestTag/…`` and ``aws:TagKeys`` carry the session tags,
    ``sts:ExternalId`` and ``sts:SourceIdentity`` what the caller passed.
    """
    params: dict[str, Any] = {
        "RoleArn": role_arn,
        "RoleSessionName": role_session_name,
        "DurationSeconds": duration_seconds,
        "SerialNumber": serial_number,
        "Tags": tags,
        "ExternalId": external_id,
        "SourceIdentity": source_identity,
    }
    try:
        with audited(
            caller,
            "AssumeRole",
            request_parameters={k: v for k, v in params.items() if v is not None},
            event_source=STS_SOURCE,
            read_only=False,
        ) as op:
            if duration_seconds is not None and ASSUME_ROLE_DURATION[1] < duration_seconds <= 43200:
                raise StsValidationError(
                    f"The requested DurationSeconds exceeds the MaxSessionDuration set for this role "
                    f"({ASSUME_ROLE_DURATION[1]} seconds)."
                )
            duration = _duration(duration_seconds, (ASSUME_ROLE_DURATION[0], 43200, ASSUME_ROLE_DURATION[2]))
            if not _ROLE_SESSION_NAME.fullmatch(role_session_name or ""):
                raise StsValidationError(
                    f"1 validation error detected: Value '{role_session_name}' at 'roleSessionName' failed to "
                    "satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]* "
                    "and have length between 2 and 64"
                )
            session_tags = _session_tags(tags)
            if source_identity is not None and not _ROLE_SESSION_NAME.fullmatch(source_identity):
                raise StsValidationError(
                    f"1 validation error detected: Value '{source_identity}' at 'sourceIdentity' failed to "
                    "satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]* "
                    "and have length between 2 and 64"
                )
            if caller.is_session and caller.principal_type == PrincipalType.ROLE:
                source_identity = source_identity or _source_identity_of(caller)
            match = _ROLE_ARN.fullmatch(role_arn or "")
            denied = StsAccessDenied(
                f"User: {caller.session_arn} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
            )
            if match is None:
                raise StsValidationError(f"{role_arn!r} is not a valid role ARN.")
            role = (
                Principal.objects.select_related("account")
                .filter(account_id=match.group(1), name=match.group(2), type=PrincipalType.ROLE)
                .first()
            )
            if role is None or not role.trust_policy:
                raise denied
            source = _principal_of(caller)
            now = timezone.now()
            mfa_at = _mfa_check(principal=source, serial=serial_number, code=token_code, now=now)
            if mfa_at is None and caller.mfa_authenticated_at is not None:
                mfa_at = caller.mfa_authenticated_at
            context: dict[str, Any] = {"aws:MultiFactorAuthPresent": mfa_at is not None}
            if mfa_at is not None:
                context["aws:MultiFactorAuthAge"] = max(0, int((now - mfa_at).total_seconds()))
            if external_id is not None:
                context["sts:ExternalId"] = external_id
            if source_identity:
                context["sts:SourceIdentity"] = source_identity
            if session_tags:
                context["aws:TagKeys"] = list(session_tags)
                for key, value in session_tags.items():
                    context[f"aws:RequestTag/{key}"] = value
            _authorize_trust(caller=caller, role=role, context=context, denied=denied)
            if caller.is_session and caller.principal_type == PrincipalType.ROLE:
                # Role chaining: AWS caps the chained session at one hour.
                duration = min(duration, 3600)
            issued = _issue(
                principal=role,
                source=source,
                source_access_key_id=caller.access_key_id or "",
                duration=duration,
                now=now,
                mfa_at=mfa_at,
                mfa_serial=serial_number or "",
                role_session_name=role_session_name,
                tags=session_tags,
                source_identity=source_identity or "",
            )
            assumed_arn = f"arn:aws:sts::{role.account_id}:assumed-role/{role.name}/{role_session_name}"
            assumed_id = f"{role_id(role)}:{role_session_name}"
            op.response_elements = {
                "Credentials": issued.as_response(),
                "AssumedRoleUser": {"Arn": assumed_arn, "AssumedRoleId": assumed_id},
            }
    except MfaRefused as exc:
        exc.keep_throttle()
        raise
    return AssumedRole(issued, assumed_arn, assumed_id)


def _source_identity_of(caller: Caller) -> str:
    # A source identity set once follows the chain of role sessions (AWS).
    return (
        StsSession.objects.filter(access_key_id=caller.access_key_id).values_list("source_identity", flat=True).first()
        or ""
    )


def role_id(role: Principal) -> str:
    """A stable, AWS-shaped unique id of a role (``AROA…``), from its account and primary key."""
    digest = hashlib.sha256(f"{role.account_id}:{role.pk}".encode()).digest()
    return "AROA" + base64.b32encode(digest).decode()[:17]


def _authorize_trust(*, caller: Caller, role: Principal, context: dict[str, Any], denied: StsAccessDenied) -> None:
    """Evaluate the role's trust policy with the caller's identity policies (see ``role_assume``)."""
    from policies.authorization import identity_policies_for

    trust = ev.parse_policy(role.trust_policy, kind="trust")
    keys = {
        "aws:PrincipalArn": caller.principal_arn,
        "aws:PrincipalAccount": caller.account_id,
        "aws:PrincipalType": caller.principal_type,
        "aws:SecureTransport": caller.secure_transport,
        **({"aws:SourceIp": caller.source_ip} if caller.source_ip else {}),
        **{f"aws:PrincipalTag/{k}": v for k, v in caller.principal_tags},
        **context,
    }
    ctx = ev.RequestContext(
        action="sts:AssumeRole",
        principal_arn=caller.principal_arn,
        principal_account=caller.account_id,
        resource_arn=role.arn,
        resource_account=role.account_id,
        now=timezone.now(),
        keys=keys,
    )
    identity = [(name, policy) for name, policy, _ in identity_policies_for(caller)]
    decision = ev.evaluate(ctx, trust, identity, ())
    if not decision.allowed:
        denied.decision = decision_record(decision)
        raise denied


def caller_identity_get(*, caller: Caller) -> dict[str, str]:
    """GetCallerIdentity: who signed the request. Needs no permission (as AWS); audited, read-only."""
    with audited(caller, "GetCallerIdentity", event_source=STS_SOURCE, read_only=True) as op:
        if caller.role_session_name and caller.principal_type == PrincipalType.ROLE:
            role = _principal_of(caller)
            user_id = f"{role_id(role)}:{caller.role_session_name}"
        else:
            user_id = caller.principal_name
        answer = {"UserId": user_id, "Account": caller.account_id, "Arn": caller.session_arn}
        op.response_elements = dict(answer)
    return answer


def access_key_info_get(*, caller: Caller, access_key_id: str) -> str:
    """GetAccessKeyInfo: the account an access key id belongs to; needs ``sts:GetAccessKeyInfo``."""
    with audited(
        caller,
        "GetAccessKeyInfo",
        request_parameters={"AccessKeyId": access_key_id},
        event_source=STS_SOURCE,
        read_only=True,
    ) as op:
        try:
            authorize(caller=caller, action="sts:GetAccessKeyInfo")
        except AccessDenied as exc:
            denied = StsAccessDenied(f"User: {caller.session_arn} is not authorized to perform: sts:GetAccessKeyInfo")
            denied.decision = exc.decision
            raise denied from exc
        if not re.fullmatch(r"[\w]{16,128}", access_key_id or "", re.ASCII):
            raise StsValidationError(
                "1 validation error detected: Value at 'accessKeyId' failed to satisfy constraint: "
                "Member must have length greater than or equal to 16"
            )
        account = (
            AccessKey.objects.filter(access_key_id=access_key_id)
            .values_list("principal__account_id", flat=True)
            .first()
            or StsSession.objects.filter(access_key_id=access_key_id)
            .values_list("principal__account_id", flat=True)
            .first()
        )
        if account is None:
            # AWS decodes the account from the id itself; kmsweb can only look it up.
            raise StsValidationError(f"The access key id {access_key_id} is not one kmsweb issued.")
        op.response_elements = {"Account": account}
    return account


# --- roles and principals ------------------------------------------------------


def _validated_trust(document: str) -> str:
    try:
        ev.parse_policy(document, kind="trust")
    except ev.PolicyError as exc:
        raise MalformedPolicyDocument(exc.message) from exc
    return document


def role_create(*, caller: Caller, account: Account, name: str, trust_policy: str) -> Principal:
    """Create a role principal with its trust policy (IAM's CreateRole); audited."""
    _validated_trust(trust_policy)
    with transaction.atomic():
        role = principal_create(caller=caller, account=account, name=name, type=PrincipalType.ROLE)
        role_trust_policy_put(caller=caller, role=role, document=trust_policy)
    return role


def role_trust_policy_put(*, caller: Caller, role: Principal, document: str) -> None:
    """Replace a role's trust policy (IAM's UpdateAssumeRolePolicy); audited."""
    with audited(
        caller,
        "UpdateAssumeRolePolicy",
        request_parameters={"RoleName": role.name, "PolicyDocument": document},
        event_source=IAM_SOURCE,
        read_only=False,
    ):
        authorize(caller=caller, action="iam:UpdateAssumeRolePolicy")
        if role.type != PrincipalType.ROLE:
            raise ValidationError(f"{role.arn} is not a role.")
        _validated_trust(document)
        Principal.objects.filter(pk=role.pk).update(trust_policy=document)
        role.trust_policy = document


def principal_delete(*, caller: Caller, principal: Principal) -> None:
    """Delete a principal with its access keys, MFA devices and sessions; its
    temporary credentials (and those it started by AssumeRole) stop at once.

    Refused (nothing deleted) while grant requests name it.
    """
    from django.db.models import ProtectedError

    with audited(
        caller,
        "DeletePrincipal",
        request_parameters={"Principal": principal.arn},
        event_source=IAM_SOURCE,
        read_only=False,
    ):
        authorize(caller=caller, action="iam:DeletePrincipal")
        try:
            with transaction.atomic():
                Principal.objects.filter(pk=principal.pk).delete()
                # Any cached access key or session id could be the principal's:
                # every process drops them before its next request.
                generation_bump(CREDENTIALS, IDENTITY)
        except ProtectedError as exc:
            raise ValidationError(f"{principal.arn} is named by grant requests and cannot be deleted.") from exc


def sts_sessions_delete_expired(*, caller: Caller, now: datetime) -> int:
    """Delete temporary credentials past their expiry (the ``delete_expired_sessions`` job).

    They are refused on use already; this keeps the table to live sessions.
    Idempotent: a second worker deletes nothing more. Audited once per run.
    """
    with audited(caller, "DeleteExpiredSessions", event_source=STS_SOURCE, read_only=False) as op:
        deleted, _ = StsSession.objects.filter(expires_at__lte=now).delete()
        op.response_elements = {"deleted": deleted}
    return deleted


def mfa_device_for(*, principal: Principal, name: str) -> MfaDevice:
    """The principal's MFA device of that name, or ``NotFound``."""
    device = MfaDevice.objects.filter(principal=principal, name=name).first()
    if device is None:
        raise NotFound(f"{principal.arn} has no MFA device {name!r}.")
    return device
