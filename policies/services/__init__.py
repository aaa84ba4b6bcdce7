"""Policies' services: principals, access keys, dashboard users, and more.

``authorize`` lives in ``policies.authorization`` (key services import it
without importing this package, which needs platform keys) and is
re-exported here.
"""

from policies.authorization import Decision, authorize
from policies.services.principals import (
    ACCESS_KEY_PURPOSE,
    Credentials,
    access_key_authenticate,
    access_key_create,
    account_get_or_create,
    default_account,
    principal_create,
    principal_get,
)
from policies.services.users import (
    TOTP_PURPOSE,
    Enrolment,
    console_login_record,
    totp_confirm,
    totp_device_enrol,
    totp_pending_device,
    totp_verify,
    user_create,
    user_principal_ensure,
)

__all__ = [
    "ACCESS_KEY_PURPOSE",
    "TOTP_PURPOSE",
    "Credentials",
    "Decision",
    "Enrolment",
    "access_key_authenticate",
    "access_key_create",
    "account_get_or_create",
    "authorize",
    "console_login_record",
    "default_account",
    "principal_create",
    "principal_get",
    "totp_confirm",
    "totp_device_enrol",
    "totp_pending_device",
    "totp_verify",
    "user_create",
    "user_principal_ensure",
]
