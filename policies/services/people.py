"""People: administrators manage dashboard users (the People pages).

Every change is authorized through the same model as everything else
(roles are identity policies; only ``iam:*``, i.e. the administrator
role, allows these actions), needs a caller who passed a second factor,
and records exactly one audit event, refusals included.
"""

from __future__ import annotations

from typing import Any

from axes.utils import reset as axes_reset
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import transaction

from audit.services import audited
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, ValidationError
from policies.authorization import authorize
from policies.models import OidcIdentity, TotpDevice
from policies.roles import ADMINISTRATOR_ROLE, ROLES


def check_admin(caller: Caller, action: str) -> None:
    """Authorize ``action``; a dashboard change also needs the caller's second factor."""
    if not caller.is_system and not caller.mfa_present:
        raise AccessDenied("Managing people needs a session verified with a second factor.")
    authorize(caller=caller, action=action)


def _roles(roles: list[str]) -> list[str]:
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValidationError(f"Unknown role(s): {', '.join(unknown)}; choose from {', '.join(ROLES)}.")
    return sorted(set(roles))


def _principal_pk(user: Any) -> int | None:
    from policies.models import Principal

    return Principal.objects.filter(user=user).values_list("pk", flat=True).first()


def user_update(*, caller: Caller, user: Any, first_name: str, last_name: str, email: str, roles: list[str]) -> Any:
    """Change a dashboard user's name, e-mail and roles (UpdateUser).

    An administrator cannot take the administrator role from themself
    (no one would be left to give it back). A single sign-on user's roles
    are set again from the provider's groups at their next sign-in.
    """
    params = {"UserName": user.get_username(), "Roles": sorted(roles), "Email": email}
    with audited(caller, "UpdateUser", request_parameters=params):
        check_admin(caller, "iam:UpdateUser")
        wanted = _roles(roles)
        if caller.principal_pk is not None and _principal_pk(user) == caller.principal_pk:
            had_admin = user.is_superuser or user.groups.filter(name=ADMINISTRATOR_ROLE).exists()
            if had_admin and not user.is_superuser and ADMINISTRATOR_ROLE not in wanted:
                raise ValidationError("You cannot remove your own administrator role.")
        if email:
            try:
                validate_email(email)
            except DjangoValidationError as exc:
                raise ValidationError("Enter a valid e-mail address.") from exc
        user.first_name, user.last_name, user.email = first_name[:150], last_name[:150], email[:254]
        user.save(update_fields=["first_name", "last_name", "email"])
        user.groups.set([Group.objects.get_or_create(name=role)[0] for role in wanted])
    return user


def user_set_active(*, caller: Caller, user: Any, active: bool) -> Any:
    """Deactivate (or reactivate) a dashboard user; their sessions end at their next request.

    Django refuses an inactive user when it loads a session. A deactivated
    single sign-on user stays out whatever the provider says. No one
    deactivates themself.
    """
    event = "ActivateUser" if active else "DeactivateUser"
    with audited(caller, event, request_parameters={"UserName": user.get_username()}):
        check_admin(caller, "iam:UpdateUser")
        if not active and caller.principal_pk is not None and _principal_pk(user) == caller.principal_pk:
            raise ValidationError("You cannot deactivate yourself.")
        user.is_active = active
        user.save(update_fields=["is_active"])
        # An administrator's decision, not the provider's: a sign-in does not undo it.
        OidcIdentity.objects.filter(user=user).update(suspended_for_groups=False)
    return user


def user_totp_reset(*, caller: Caller, user: Any) -> int:
    """Remove a user's TOTP authenticators (DeactivateMFADevice); returns how many.

    Their sessions verified by one are no longer verified at their next
    request, and their next sign-in enrols a new authenticator.
    """
    with audited(caller, "DeactivateMFADevice", request_parameters={"UserName": user.get_username()}) as op:
        check_admin(caller, "iam:DeactivateMFADevice")
        removed, _ = TotpDevice.objects.filter(user=user).delete()
        op.response_elements = {"DevicesRemoved": removed}
    return removed


def user_unlock(*, caller: Caller, user: Any) -> int:
    """Clear a user's failed sign-ins (django-axes), lifting a lockout; returns how many records."""
    with audited(caller, "UnlockUser", request_parameters={"UserName": user.get_username()}) as op:
        check_admin(caller, "iam:UnlockUser")
        with transaction.atomic():
            cleared = axes_reset(username=user.get_username())
        op.response_elements = {"AttemptsCleared": cleared}
    return cleared
