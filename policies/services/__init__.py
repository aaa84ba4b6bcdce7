"""Policies' services: principals, access keys, dashboard users, and more.

``authorize`` lives in ``policies.authorization`` (key services import it
without importing this package, which needs platform keys) and is
re-exported here.
"""

from policies.authorization import Decision, authorize
from policies.services.delegations import (
    principal_acting_for,
    principal_is_administrator,
    service_delegation_create,
    service_delegation_delete,
)
from policies.services.grant_requests import (
    OperationPreview,
    grant_request_create,
    grant_request_deadline,
    grant_request_decide,
    grant_request_describe,
    grant_request_preview,
    grant_request_withdraw,
    grant_requests_expire,
)
from policies.services.grants import (
    grant_create,
    grant_from_token,
    grant_list,
    grant_list_retirable,
    grant_retire,
    grant_revoke,
    grant_token_for,
    grant_tokens_check,
    grants_retire_expired,
)
from policies.services.identity import (
    FULL_ACCESS_POLICY,
    access_key_delete,
    access_key_set_status,
    identity_policy_delete,
    identity_policy_put,
    policy_attach,
    policy_detach,
)
from policies.services.people import user_set_active, user_totp_reset, user_unlock, user_update
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
from policies.services.sso import SsoRefused, SsoSignIn, oidc_sign_in, oidc_sign_in_failed
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
    "user_set_active",
    "user_totp_reset",
    "user_unlock",
    "user_update",
    "SsoRefused",
    "SsoSignIn",
    "oidc_sign_in",
    "oidc_sign_in_failed",
    "OperationPreview",
    "grant_request_create",
    "grant_request_deadline",
    "grant_request_decide",
    "grant_request_describe",
    "grant_request_preview",
    "grant_request_withdraw",
    "grant_requests_expire",
    "FULL_ACCESS_POLICY",
    "access_key_delete",
    "access_key_set_status",
    "grant_create",
    "grant_from_token",
    "grant_list",
    "grant_list_retirable",
    "grant_retire",
    "grant_revoke",
    "grant_token_for",
    "grant_tokens_check",
    "grants_retire_expired",
    "identity_policy_delete",
    "identity_policy_put",
    "policy_attach",
    "policy_detach",
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
    "principal_acting_for",
    "principal_is_administrator",
    "service_delegation_create",
    "service_delegation_delete",
    "principal_create",
    "principal_get",
    "totp_confirm",
    "totp_device_enrol",
    "totp_pending_device",
    "totp_verify",
    "user_create",
    "user_principal_ensure",
]
