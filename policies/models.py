"""Accounts, principals and their access keys."""

from __future__ import annotations

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
