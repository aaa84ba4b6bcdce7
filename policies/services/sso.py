"""Single sign-on: what a verified OpenID Connect ``id_token`` makes of a dashboard user.

The view (``policies.sso_views``) runs the authorization-code flow with
PKCE and checks the ``id_token`` (signature against the provider's keys,
issuer, audience, expiry, nonce) before it calls :func:`oidc_sign_in` with
the token's claims. This module decides who the user is, which roles the
groups claim gives, and whether the provider's second factor counts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from kmsweb.lib.errors import AccessDenied, AlreadyExists, KmsError, ValidationError
from policies.models import OidcIdentity, ProviderMfaDevice
from policies.services.users import _user_caller, user_principal_ensure

SIGNIN_SOURCE = "signin.amazonaws.com"
_USERNAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")


class SsoRefused(AccessDenied):
    """The identity provider vouched for the user, but kmsweb does not let them in."""


@dataclass(frozen=True)
class SsoSignIn:
    """A successful SSO sign-in: the user, and the device that verifies the session.

    ``mfa_device`` is None when the provider did not ask for a second
    factor: kmsweb then asks for its own TOTP.
    """

    user: Any
    roles: tuple[str, ...]
    mfa_device: ProviderMfaDevice | None


def oidc_roles_for(groups: list[str]) -> tuple[str, ...]:
    """The dashboard roles ``KMSWEB_OIDC_GROUP_ROLES`` gives these groups, sorted."""
    mapping: Mapping[str, tuple[str, ...]] = settings.KMSWEB_OIDC_GROUP_ROLES
    return tuple(sorted({role for group in groups for role in mapping.get(group, ())}))


def oidc_mfa_present(claims: Mapping[str, Any]) -> bool:
    """True when the ``amr`` or ``acr`` claim says the provider asked for a second factor."""
    amr = claims.get("amr")
    amr_values = [amr] if isinstance(amr, str) else amr if isinstance(amr, list) else []
    if set(settings.KMSWEB_OIDC_MFA_AMR) & {str(v) for v in amr_values}:
        return True
    acr = claims.get("acr")
    return isinstance(acr, str) and acr in settings.KMSWEB_OIDC_MFA_ACR


def _groups(claims: Mapping[str, Any]) -> list[str]:
    value = claims.get(settings.KMSWEB_OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, str | int)]
    return []


def _record(
    *,
    user: Any,
    username: str,
    claims: Mapping[str, Any],
    groups: list[str],
    roles: tuple[str, ...],
    mfa: bool,
    error: KmsError | None,
    source_ip: str | None,
    user_agent: str | None,
    provisioned: bool = False,
) -> None:
    audit_record(
        caller=_user_caller(user, source_ip=source_ip, user_agent=user_agent),
        event_name="ConsoleLogin",
        event_source=SIGNIN_SOURCE,
        request_parameters={"UserName": username},
        response_elements={"ConsoleLogin": "Failure" if error else "Success"},
        additional_event_data={
            "MFAUsed": "Yes" if mfa else "No",
            "step": "oidc",
            "IdentityProvider": str(claims.get("iss", "")),
            "Subject": str(claims.get("sub", "")),
            "Groups": groups,
            "Roles": list(roles),
            "Provisioned": provisioned,
        },
        error=error,
    )


def oidc_sign_in(
    *, claims: Mapping[str, Any], source_ip: str | None = None, user_agent: str | None = None
) -> SsoSignIn:
    """Sign in the user a verified ``id_token`` names; provision them on first sign-in.

    The user is found by (issuer, subject). Their roles are set from the
    groups claim at every sign-in. With no mapped group left the user is
    deactivated (their sessions end at their next request) and refused;
    a later sign-in with a mapped group reactivates them, unless an
    administrator deactivated them. Records one ConsoleLogin event, on
    success and refusal alike; a refusal raises ``SsoRefused`` (or
    ``AlreadyExists`` / ``ValidationError`` for a name kmsweb cannot give
    the new user) after its state change and event are committed, and
    leaves nothing half-created.
    """
    issuer, subject = str(claims.get("iss", "")), str(claims.get("sub", ""))
    groups = _groups(claims)
    roles = oidc_roles_for(groups)
    mfa = oidc_mfa_present(claims)
    username = str(claims.get("preferred_username") or subject)
    result: SsoSignIn | None = None
    user: Any = None
    provisioned = False
    try:
        with transaction.atomic():
            identity = (
                OidcIdentity.objects.select_for_update()
                .select_related("user")
                .filter(issuer=issuer, subject=subject)
                .first()
            )
            if identity is not None:
                user = identity.user
                username = user.get_username()
            if not issuer or not subject:
                raise SsoRefused("The identity provider's token names no issuer or subject.")
            if not roles:
                raise SsoRefused(
                    "Your identity provider account is in no group that gives a kmsweb role. "
                    "Ask an administrator to add you to one."
                )
            if identity is None:
                user, identity = _provision(username=username, issuer=issuer, subject=subject)
                provisioned = True
            elif not user.is_active and not identity.suspended_for_groups:
                raise SsoRefused("Your kmsweb user was deactivated by an administrator.")
            _update(user, identity, claims, groups, roles, mfa)
            # Relinked if an administrator removed the principal meanwhile.
            user_principal_ensure(user=user)
            device = _provider_mfa_device(user, confirmed=mfa)
            result = SsoSignIn(user=user, roles=roles, mfa_device=device if mfa else None)
            _record(
                user=user,
                username=username,
                claims=claims,
                groups=groups,
                roles=roles,
                mfa=mfa,
                error=None,
                source_ip=source_ip,
                user_agent=user_agent,
                provisioned=provisioned,
            )
    except SsoRefused as exc:
        # Losing every mapped group is a change to commit, with the refusal's event.
        with transaction.atomic():
            identity = OidcIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
            if identity is not None and not roles:
                _suspend(identity, groups)
            _record(
                user=identity.user if identity else None,
                username=username,
                claims=claims,
                groups=groups,
                roles=roles,
                mfa=mfa,
                error=exc,
                source_ip=source_ip,
                user_agent=user_agent,
            )
        exc.audited = True
        raise
    except (AlreadyExists, ValidationError) as exc:
        with transaction.atomic():
            _record(
                user=None,
                username=username,
                claims=claims,
                groups=groups,
                roles=roles,
                mfa=mfa,
                error=exc,
                source_ip=source_ip,
                user_agent=user_agent,
            )
        exc.audited = True
        raise
    assert result is not None
    return result


def oidc_sign_in_failed(*, reason: str, source_ip: str | None = None, user_agent: str | None = None) -> None:
    """Record a sign-in the provider's answer did not carry (bad token, provider down, error)."""
    with transaction.atomic():
        audit_record(
            caller=_user_caller(None, source_ip=source_ip, user_agent=user_agent),
            event_name="ConsoleLogin",
            event_source=SIGNIN_SOURCE,
            request_parameters={"UserName": ""},
            response_elements={"ConsoleLogin": "Failure"},
            additional_event_data={"MFAUsed": "No", "step": "oidc", "reason": reason[:500]},
            error=AccessDenied("Failed authentication"),
        )


def _suspend(identity: OidcIdentity, groups: list[str]) -> None:
    """No mapped group left: no roles, no provider MFA, and (once the user is active) no sign-in."""
    user = identity.user
    user.groups.clear()
    if user.is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])
        identity.suspended_for_groups = True
    identity.groups = groups
    identity.save(update_fields=["groups", "suspended_for_groups"])
    ProviderMfaDevice.objects.filter(user=user).update(confirmed=False)


def _provision(*, username: str, issuer: str, subject: str) -> tuple[Any, OidcIdentity]:
    from django.contrib.auth import get_user_model

    if not _USERNAME.fullmatch(username):
        raise ValidationError(
            f"Your identity provider's user name {username[:64]!r} is not a valid kmsweb name "
            "(letters, digits and +=,.@_- only, at most 64)."
        )
    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        # Never take over a local user (or another provider's) by its name.
        raise AlreadyExists(
            f"A kmsweb user named {username!r} already exists and is not linked to this identity provider account."
        )
    user = user_model(username=username)
    user.set_unusable_password()
    user.save()
    identity = OidcIdentity.objects.create(user=user, issuer=issuer, subject=subject)
    user_principal_ensure(user=user)
    return user, identity


def _update(
    user: Any, identity: OidcIdentity, claims: Mapping[str, Any], groups: list[str], roles: tuple[str, ...], mfa: bool
) -> None:
    user.is_active = True
    user.email = str(claims.get("email") or user.email)[:254]
    user.first_name = str(claims.get("given_name") or user.first_name)[:150]
    user.last_name = str(claims.get("family_name") or user.last_name)[:150]
    user.save(update_fields=["is_active", "email", "first_name", "last_name"])
    user.groups.set([Group.objects.get_or_create(name=role)[0] for role in roles])
    identity.groups = groups
    identity.mfa = mfa
    identity.suspended_for_groups = False
    identity.last_sign_in_at = timezone.now()
    identity.save(update_fields=["groups", "mfa", "suspended_for_groups", "last_sign_in_at"])


def _provider_mfa_device(user: Any, *, confirmed: bool) -> ProviderMfaDevice:
    device, _ = ProviderMfaDevice.objects.get_or_create(
        user=user, defaults={"name": "identity provider", "confirmed": confirmed}
    )
    if device.confirmed != confirmed:
        device.confirmed = confirmed
        device.save(update_fields=["confirmed"])
    return device
