"""Dashboard users: their principals, sign-in records and TOTP devices."""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_otp.oath import hotp

from audit.services import audit_record, audited
from keys.services.platform import platform_decrypt, platform_encrypt
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, AlreadyExists, NotFound, ValidationError
from policies.models import Account, Principal, PrincipalType, TotpDevice
from policies.services.people import check_admin
from policies.services.principals import default_account, principal_create

TOTP_PURPOSE = "totp-secrets"
TOTP_STEP = 30
TOTP_DIGITS = 6
TOTP_ISSUER = "kmsweb"
_USERNAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")


def _user_caller(user: Any, *, source_ip: str | None, user_agent: str | None) -> Caller:
    principal = Principal.objects.filter(user=user).first() if user is not None else None
    return Caller(
        principal_arn=principal.arn if principal else "",
        account_id=principal.account_id if principal else settings.KMSWEB_ACCOUNT_ID,
        region=settings.KMSWEB_DEFAULT_REGION,
        origin="dashboard",
        principal_type=principal.type if principal else "anonymous",
        principal_name=principal.name if principal else "",
        principal_pk=principal.pk if principal else None,
        source_ip=source_ip,
        user_agent=user_agent,
    )


def user_principal_ensure(*, user: Any) -> Principal:
    """The user's principal, created in the default account at first sign-in.

    ``createsuperuser`` makes users without one; they get a ``user`` principal
    of their own name. An existing principal of that name is never taken
    over: an operator links it with ``create_user``.
    """
    principal = Principal.objects.filter(user=user).first()
    if principal is not None:
        return principal
    account = default_account()
    caller = Caller.system("dashboard-signin", account_id=account.id)
    principal = principal_create(caller=caller, account=account, name=user.get_username(), type=PrincipalType.USER)
    Principal.objects.filter(pk=principal.pk).update(user=user)
    principal.user = user
    return principal


def console_login_record(
    *, username: str, user: Any, success: bool, mfa_used: bool, source_ip: str | None, user_agent: str | None
) -> None:
    """Audit one sign-in step, never the password.

    A sign-in is one ``ConsoleLogin`` (CloudTrail's): the second factor's
    outcome, or a failure at either step. A correct password is only half a
    sign-in (the dashboard always asks for the code next), so it is recorded
    as ``CredentialVerification``, not as a second ConsoleLogin.
    """
    caller = _user_caller(user, source_ip=source_ip, user_agent=user_agent)
    error = None if success else AccessDenied("Failed authentication")
    event_name = "CredentialVerification" if success and not mfa_used else "ConsoleLogin"
    with transaction.atomic():
        audit_record(
            caller=caller,
            event_name=event_name,
            event_source="signin.amazonaws.com",
            request_parameters={"UserName": username},
            response_elements={event_name: "Success" if success else "Failure"},
            additional_event_data={"MFAUsed": "Yes" if mfa_used else "No", "step": "mfa" if mfa_used else "password"},
            error=error,
        )


@dataclass(frozen=True)
class Enrolment:
    """What the enrolment page shows: the secret, its otpauth URI and QR code."""

    secret_b32: str
    uri: str
    qr_data_uri: str


def _totp_secret(device: TotpDevice) -> bytes:
    return platform_decrypt(
        purpose=TOTP_PURPOSE, blob=bytes(device.secret_ciphertext), context={"userId": str(device.user_id)}
    )


def _enrolment(user: Any, secret: bytes) -> Enrolment:
    secret_b32 = base64.b32encode(secret).decode().rstrip("=")
    label = quote(f"{TOTP_ISSUER}:{user.get_username()}")
    uri = (
        f"otpauth://totp/{label}?secret={secret_b32}&issuer={TOTP_ISSUER}"
        f"&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP}"
    )
    svg = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage).to_string()
    return Enrolment(secret_b32, uri, "data:image/svg+xml;base64," + base64.b64encode(svg).decode())


def totp_pending_device(*, user: Any, source_ip: str | None = None, user_agent: str | None = None) -> Enrolment:
    """The user's unconfirmed TOTP device, created (and audited) if absent."""
    device = TotpDevice.objects.filter(user=user, confirmed=False).first()
    if device is not None:
        return _enrolment(user, _totp_secret(device))
    caller = _user_caller(user, source_ip=source_ip, user_agent=user_agent)
    secret = secrets.token_bytes(20)
    with audited(caller, "CreateVirtualMFADevice", request_parameters={"UserName": user.get_username()}):
        TotpDevice.objects.create(
            user=user,
            name="authenticator",
            confirmed=False,
            secret_ciphertext=platform_encrypt(
                purpose=TOTP_PURPOSE, plaintext=secret, context={"userId": str(user.pk)}
            ),
        )
    return _enrolment(user, secret)


def _check_code(device: TotpDevice, token: str, now: datetime) -> None:
    """Accept a code for this step or one either side, once; throttle failures."""
    allowed, info = device.verify_is_allowed()
    if not allowed:
        raise AccessDenied("Too many wrong codes: wait a few seconds and try again.")
    secret = _totp_secret(device)
    step_now = int(now.timestamp()) // TOTP_STEP
    for t in (step_now - 1, step_now, step_now + 1):
        expected = str(hotp(secret, t, digits=TOTP_DIGITS)).zfill(TOTP_DIGITS)
        if t > device.last_t and hmac.compare_digest(expected, token):
            device.last_t = t
            device.throttle_reset(commit=False)
            device.save(update_fields=["last_t", "throttling_failure_timestamp", "throttling_failure_count"])
            return
    device.throttle_increment(commit=False)
    device.save(update_fields=["throttling_failure_timestamp", "throttling_failure_count"])
    raise AccessDenied("That code is not valid, or it was already used.")


def totp_confirm(*, user: Any, token: str, source_ip: str | None = None, user_agent: str | None = None) -> TotpDevice:
    """Confirm the pending device with a first code (EnableMFADevice)."""
    caller = _user_caller(user, source_ip=source_ip, user_agent=user_agent)
    device = TotpDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        raise NotFound("There is no authenticator waiting for confirmation.")
    try:
        with audited(caller, "EnableMFADevice", request_parameters={"UserName": user.get_username()}) as op:
            op.additional_event_data["step"] = "enrol"
            _check_code(device, token, timezone.now())
            TotpDevice.objects.filter(pk=device.pk).update(confirmed=True)
            device.confirmed = True
    finally:
        _persist_throttle(device)
    return device


def totp_verify(*, user: Any, token: str, source_ip: str | None = None, user_agent: str | None = None) -> TotpDevice:
    """Check a sign-in code against the user's confirmed device (ConsoleLogin, MFA step)."""
    device = TotpDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        raise NotFound("No authenticator is enrolled.")
    try:
        _check_code(device, token, timezone.now())
    except AccessDenied:
        _persist_throttle(device)
        console_login_record(
            username=user.get_username(),
            user=user,
            success=False,
            mfa_used=True,
            source_ip=source_ip,
            user_agent=user_agent,
        )
        raise
    console_login_record(
        username=user.get_username(), user=user, success=True, mfa_used=True, source_ip=source_ip, user_agent=user_agent
    )
    return device


def _persist_throttle(device: TotpDevice) -> None:
    # A failed check raises inside a transaction that rolls back; write the
    # failure counters again so throttling holds.
    TotpDevice.objects.filter(pk=device.pk).update(
        throttling_failure_timestamp=device.throttling_failure_timestamp,
        throttling_failure_count=device.throttling_failure_count,
        last_t=device.last_t,
    )


def totp_device_enrol(*, caller: Caller, user: Any, replace: bool = False) -> Enrolment:
    """Enrol a confirmed TOTP device for ``user`` from the command line.

    Refuses when the user already has one, unless ``replace`` (which removes
    the old devices in the same transaction).
    """
    secret = secrets.token_bytes(20)
    with audited(caller, "EnableMFADevice", request_parameters={"UserName": user.get_username()}) as op:
        op.additional_event_data["step"] = "operator-enrol"
        existing = TotpDevice.objects.filter(user=user)
        if existing.filter(confirmed=True).exists() and not replace:
            raise AlreadyExists(f"{user.get_username()} already has an authenticator (use --replace).")
        existing.delete()
        TotpDevice.objects.create(
            user=user,
            name="authenticator",
            confirmed=True,
            secret_ciphertext=platform_encrypt(
                purpose=TOTP_PURPOSE, plaintext=secret, context={"userId": str(user.pk)}
            ),
        )
    return _enrolment(user, secret)


def user_create(
    *,
    caller: Caller,
    username: str,
    password: str,
    roles: list[str],
    account: Account | None = None,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
) -> Any:
    """A dashboard user with roles (groups), linked to a new ``user`` principal (CreateUser).

    Administrators only (``iam:CreateUser``), with a second factor when
    called from the dashboard; the command line calls it as the system.
    """
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError as DjangoValidationError
    from django.core.validators import validate_email

    from policies.roles import ROLES

    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValidationError(f"Unknown role(s): {', '.join(unknown)}; choose from {', '.join(ROLES)}.")
    user_model = get_user_model()
    account = account or default_account()
    with audited(caller, "CreateUser", request_parameters={"UserName": username, "Roles": roles, "Email": email}):
        check_admin(caller, "iam:CreateUser")
        if not _USERNAME.fullmatch(username):
            raise ValidationError("A user name is 1-64 letters, digits and +=,.@_- characters.")
        if email:
            try:
                validate_email(email)
            except DjangoValidationError as exc:
                raise ValidationError("Enter a valid e-mail address.") from exc
        if user_model.objects.filter(username=username).exists():
            raise AlreadyExists(f"User {username!r} already exists.")
        user = user_model(username=username, email=email, first_name=first_name[:150], last_name=last_name[:150])
        try:
            validate_password(password, user)
        except DjangoValidationError as exc:
            raise ValidationError(" ".join(exc.messages)) from exc
        user.set_password(password)
        user.save()
        user.groups.set([Group.objects.get_or_create(name=role)[0] for role in roles])
        principal = principal_create(caller=caller, account=account, name=username, type=PrincipalType.USER)
        Principal.objects.filter(pk=principal.pk).update(user=user)
    return user
