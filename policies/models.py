"""Accounts, principals and their access keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django_otp.models import Device, ThrottlingMixin


class Account(models.Model):
    """An AWS-style account: the boundary of keys, principals and policies."""

    id = models.CharField(primary_key=True, max_length=12, validators=[RegexValidator(r"^\d{12}$")])
    name = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.id

    @property
    def root_arn(self) -> str:
        return f"arn:aws:iam::{self.id}:root"


class PrincipalType(models.TextChoices):
    USER = "user", "User"
    ROLE = "role", "Role"
    SERVICE = "service", "Service"


class Principal(models.Model):
    """An IAM-style identity that signs API requests or uses the dashboard.

    A dashboard user is linked to a ``user`` principal, so the dashboard and
    the API authorize the same way.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="principals")
    name = models.CharField(
        max_length=64, validators=[RegexValidator(r"^[A-Za-z0-9+=,.@_-]{1,64}$", "letters, digits and +=,.@_-")]
    )
    type = models.CharField(max_length=10, choices=PrincipalType.choices, default=PrincipalType.USER)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="principal"
    )
    # aws:PrincipalTag/<key> in policy conditions.
    tags = models.JSONField(default=dict, blank=True)
    # A role's trust policy (IAM's AssumeRolePolicyDocument): who may
    # sts:AssumeRole it. Empty for users and services, and for a role no one
    # may assume.
    trust_policy = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "type", "name"], name="principal_unique_name")]

    def __str__(self) -> str:
        return self.arn

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:{self.type}/{self.name}"


class AccessKeyStatus(models.TextChoices):
    ACTIVE = "Active", "Active"
    INACTIVE = "Inactive", "Inactive"


class AccessKey(models.Model):
    """A SigV4 credential. The secret is stored encrypted under a platform key."""

    access_key_id = models.CharField(
        primary_key=True, max_length=128, validators=[RegexValidator(r"^[A-Z0-9]{16,128}$")]
    )
    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="access_keys")
    secret_ciphertext = models.BinaryField()
    status = models.CharField(max_length=8, choices=AccessKeyStatus.choices, default=AccessKeyStatus.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.access_key_id

    @property
    def is_active(self) -> bool:
        return self.status == AccessKeyStatus.ACTIVE


class TotpDevice(ThrottlingMixin, Device):
    """A TOTP authenticator (RFC 6238, SHA-1, 6 digits, 30 s) of a dashboard user.

    The shared secret is stored encrypted under the platform owned
    ``totp-secrets`` key, bound to the user's id. ``last_t`` is the time step
    of the last accepted code, so no code is accepted twice. Verification is
    done by ``policies.services.totp_verify``.
    """

    secret_ciphertext = models.BinaryField()
    last_t = models.BigIntegerField(default=-1)

    def get_throttle_factor(self) -> int:
        # 1, 2, 4, 8… seconds after successive failures (django-otp's scheme).
        return 1


class _NoOtpDevice(models.Model):
    """The end of ``ThrottlingMixin.verify_is_allowed``'s chain, for a model that is no django-otp Device."""

    class Meta:
        abstract = True

    def verify_is_allowed(self) -> tuple[bool, dict[str, Any] | None]:
        return True, None


class MfaDevice(ThrottlingMixin, _NoOtpDevice):
    """A virtual MFA device (TOTP, RFC 6238, SHA-1, 6 digits, 30 s) of an API principal.

    Its serial is ``arn:aws:iam::<account>:mfa/<name>``, unique in the
    account, as IAM's. The shared secret is stored encrypted under the
    platform owned ``totp-secrets`` key, bound to the serial. ``last_t`` is
    the time step of the last accepted code: no code is accepted twice.
    """

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="mfa_devices")
    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="mfa_devices")
    name = models.CharField(max_length=128, validators=[RegexValidator(r"^[\w+=,.@-]{1,128}$")])
    secret_ciphertext = models.BinaryField()
    last_t = models.BigIntegerField(default=-1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "name"], name="mfa_device_unique_name")]

    def __str__(self) -> str:
        return self.serial

    @property
    def serial(self) -> str:
        return f"arn:aws:iam::{self.account_id}:mfa/{self.name}"

    def get_throttle_factor(self) -> int:
        # 1, 2, 4, 8… seconds after successive failures (django-otp's scheme).
        return 1


class StsSession(models.Model):
    """Temporary credentials issued by GetSessionToken or AssumeRole.

    ``principal`` is who the credentials act as: the caller itself for
    GetSessionToken, the role for AssumeRole (``source_principal`` is then
    who assumed it). Deleting either ends the session. The session token is
    stored only as its SHA-256; the secret access key is encrypted under the
    platform owned ``access-key-secrets`` key, bound to the access key id.
    """

    access_key_id = models.CharField(primary_key=True, max_length=128)
    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="sts_sessions")
    source_principal = models.ForeignKey(
        Principal, null=True, blank=True, on_delete=models.CASCADE, related_name="sts_sessions_started"
    )
    source_access_key_id = models.CharField(max_length=128, blank=True)
    role_session_name = models.CharField(max_length=64, blank=True)
    source_identity = models.CharField(max_length=64, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    secret_ciphertext = models.BinaryField()
    token_sha256 = models.CharField(max_length=64)
    mfa_authenticated_at = models.DateTimeField(null=True, blank=True)
    mfa_serial = models.CharField(max_length=256, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="sts_session_expiry_idx")]

    def __str__(self) -> str:
        return self.access_key_id

    @property
    def is_role_session(self) -> bool:
        return bool(self.role_session_name)


class ProviderMfaDevice(Device):
    """The identity provider's second factor, as django-otp sees it: one per SSO user.

    django-otp counts a session as verified while it names a confirmed
    device of its user. Only the OIDC callback
    (``policies.services.sso.oidc_sign_in``) confirms this device, when
    the provider's ``amr``/``acr`` claims show that it asked for a second
    factor, and only it puts the device in a session. It accepts no code
    (``verify_token`` is always false), so no other sign-in step can use
    it. A sign-in without provider MFA, losing every mapped group, or
    deactivation unconfirms it, and every session it verified stops being
    verified at its next request.
    """

    def verify_token(self, token: object) -> bool:
        return False

    def verify_is_allowed(self) -> tuple[bool, dict[str, object] | None]:
        return False, {"reason": "the identity provider's second factor is checked by the provider"}


class OidcIdentity(models.Model):
    """A dashboard user's identity at the OpenID provider: issuer + subject, and what it said last.

    Users are matched by (issuer, ``sub``), never by name or e-mail, so a
    provider account cannot take over a local user. ``groups`` are the
    groups of the last sign-in; the user's roles were set from them.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identity")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    groups = models.JSONField(default=list)
    mfa = models.BooleanField(default=False)
    # Deactivated because no mapped group was left (a later sign-in with one
    # reactivates), as opposed to by an administrator (which sticks).
    suspended_for_groups = models.BooleanField(default=False)
    last_sign_in_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_issuer_subject")]

    def __str__(self) -> str:
        return f"{self.issuer} {self.subject}"


class IdentityPolicy(models.Model):
    """An IAM-style identity policy: managed (account-wide, attachable) or inline.

    A managed policy has no ``principal`` and is attached through
    ``PolicyAttachment``; an inline policy belongs to exactly one principal.
    """

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="identity_policies")
    name = models.CharField(max_length=128, validators=[RegexValidator(r"^[\w+=,.@-]{1,128}$")])
    description = models.CharField(max_length=1000, blank=True)
    document = models.TextField()
    principal = models.ForeignKey(
        Principal, null=True, blank=True, on_delete=models.CASCADE, related_name="inline_policies"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "name"], condition=models.Q(principal__isnull=True), name="managed_policy_name"
            ),
            models.UniqueConstraint(
                fields=["principal", "name"], condition=models.Q(principal__isnull=False), name="inline_policy_name"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_inline(self) -> bool:
        return self.principal_id is not None

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:policy/{self.name}"


class PolicyAttachment(models.Model):
    """A managed identity policy attached to a principal."""

    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="attachments")
    policy = models.ForeignKey(IdentityPolicy, on_delete=models.CASCADE, related_name="attachments")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["principal", "policy"], name="attachment_unique")]

    def __str__(self) -> str:
        return f"{self.policy_id}->{self.principal_id}"


class GrantQuerySet(models.QuerySet["Grant"]):
    def live(self, now: datetime) -> GrantQuerySet:
        """Grants that still give permissions: not retired, revoked or expired."""
        return self.filter(retired_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class Grant(models.Model):
    """A KMS grant: lets ``grantee_principal`` use one key for some operations.

    Retired and revoked grants stay as rows (``retired_at`` set) so the audit
    trail and the grant-request history can still name them.
    """

    grant_id = models.CharField(max_length=64, unique=True)
    key = models.ForeignKey("keys.Key", on_delete=models.CASCADE, related_name="grants")
    name = models.CharField(max_length=256, blank=True)
    grantee_principal = models.CharField(max_length=256)
    retiring_principal = models.CharField(max_length=256, blank=True)
    operations = models.JSONField(default=list)
    constraints = models.JSONField(null=True, blank=True)
    issuing_account = models.CharField(max_length=12)
    created_by = models.CharField(max_length=256)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    retired_how = models.CharField(max_length=16, blank=True)  # retired | revoked | expired | key-deleted

    objects = GrantQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["key", "grantee_principal"], name="grant_key_grantee_idx"),
            models.Index(fields=["retiring_principal"], name="grant_retiring_idx"),
            models.Index(fields=["expires_at"], name="grant_expiry_idx"),
        ]

    def __str__(self) -> str:
        return self.grant_id


class GrantRequestState(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"
    EXPIRED = "expired", "Expired"


class GrantRequest(models.Model):
    """A request for a grant, decided by approvers (kmsweb's addition to AWS).

    On the final approval the grant is created with ``expires_at`` =
    decision time + ``duration``. Requests are never deleted.
    """

    key = models.ForeignKey("keys.Key", on_delete=models.CASCADE, related_name="grant_requests")
    requester = models.ForeignKey(Principal, on_delete=models.PROTECT, related_name="grant_requests")
    grantee_principal = models.CharField(max_length=256)
    operations = models.JSONField(default=list)
    constraints = models.JSONField(null=True, blank=True)
    justification = models.TextField(max_length=2000)
    duration = models.DurationField()
    state = models.CharField(max_length=10, choices=GrantRequestState.choices, default=GrantRequestState.PENDING)
    approvals_required = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    grant = models.ForeignKey(Grant, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        indexes = [models.Index(fields=["state", "created_at"], name="grant_request_state_idx")]

    def __str__(self) -> str:
        return f"grant request {self.pk} ({self.state})"


class GrantRequestDecision(models.Model):
    """One step of a grant request's timeline: an approval, rejection or withdrawal."""

    request = models.ForeignKey(GrantRequest, on_delete=models.CASCADE, related_name="decisions")
    principal = models.ForeignKey(Principal, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=10)  # approve | reject | withdraw
    comment = models.TextField(max_length=2000, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "principal"], condition=models.Q(verdict="approve"), name="one_approval_each"
            )
        ]

    def __str__(self) -> str:
        return f"{self.verdict} by {self.principal_id}"


class ServiceDelegation(models.Model):
    """A principal's consent that a registered service principal may act for it.

    A service signing a request with ``X-Kmsweb-On-Behalf-Of`` is refused
    unless the named user or role has a delegation to that service (see
    docs/SERVICE_KEYS.md). Rows are written and removed only by the
    delegation services, which audit every change.
    """

    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="service_delegations")
    service = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="delegated_by")
    created_by = models.CharField(max_length=256)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["principal", "service"], name="service_delegation_unique")]

    def __str__(self) -> str:
        return f"{self.service_id}->{self.principal_id}"
