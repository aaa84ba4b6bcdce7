"""Who is asking: the one value every service receives.

``policies.callers`` builds a ``Caller`` from an HTTP request: from a
verified SigV4 signature for the APIs, from the signed-in, TOTP-verified
user's linked principal for the dashboard. Jobs use ``Caller.system(job)``.
Services never see the HTTP request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Origin = Literal["api", "dashboard", "system"]

SYSTEM_PRINCIPAL_ARN = "arn:aws:iam::kmsweb:system"


def new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Caller:
    """An authenticated principal acting in one account and region."""

    principal_arn: str
    account_id: str
    region: str
    origin: Origin
    principal_type: str = "user"
    principal_name: str = ""
    principal_pk: int | None = None
    access_key_id: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    mfa_present: bool = False
    # A request a service principal makes on the principal's behalf
    # (X-Kmsweb-On-Behalf-Of): kms:ViaService, e.g. "backup.us-east-1.amazonaws.com",
    # and the ARN of the service principal that signed it.
    via_service: str | None = None
    invoked_by_arn: str | None = None
    secure_transport: bool = False
    # Dashboard roles (Django groups) of the user behind the principal.
    roles: tuple[str, ...] = ()
    # The principal's tags (aws:PrincipalTag/<key>), as (key, value) pairs.
    principal_tags: tuple[tuple[str, str], ...] = ()
    request_id: str = field(default_factory=new_request_id)
    # Temporary credentials (STS): when the second factor was checked
    # (aws:MultiFactorAuthAge), when the session began, and for a role
    # session its RoleSessionName.
    mfa_authenticated_at: datetime | None = None
    session_created_at: datetime | None = None
    role_session_name: str = ""

    @property
    def is_session(self) -> bool:
        """Whether the caller signs with temporary (``ASIA…``) credentials."""
        return self.session_created_at is not None

    @property
    def session_arn(self) -> str:
        """The ARN STS names the caller by: ``…:assumed-role/<role>/<session>`` for a role session."""
        if self.role_session_name and self.principal_type == "role":
            return f"arn:aws:sts::{self.account_id}:assumed-role/{self.principal_name}/{self.role_session_name}"
        return self.principal_arn

    @classmethod
    def system(cls, job: str, *, account_id: str = "", region: str = "") -> Caller:
        """The caller for background jobs and platform-internal work."""
        return cls(
            principal_arn=SYSTEM_PRINCIPAL_ARN,
            account_id=account_id,
            region=region,
            origin="system",
            principal_type="system",
            principal_name=job,
            user_agent=f"kmsweb-job/{job}",
        )

    @property
    def is_system(self) -> bool:
        return self.origin == "system"
