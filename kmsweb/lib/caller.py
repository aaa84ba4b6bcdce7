"""Who is asking: the one value every service receives.

The API adapter builds a ``Caller`` from a verified SigV4 signature, the
dashboard from the logged-in user's linked principal, and jobs with
``Caller.system(job)``. Services never see the HTTP request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from django.http import HttpRequest

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

    @classmethod
    def from_request(cls, request: HttpRequest) -> Caller:
        """The caller for a dashboard request by a logged-in, linked user."""
        from django.conf import settings

        from policies.roles import ALL_ROLES
        from policies.selectors import principal_for_user

        user = request.user
        principal = principal_for_user(user)
        if user.is_superuser:
            roles = ALL_ROLES
        else:
            roles = tuple(sorted(g.name for g in user.groups.all()))  # type: ignore[union-attr]
        return cls(
            principal_arn=principal.arn,
            account_id=principal.account_id,
            region=settings.KMSWEB_DEFAULT_REGION,
            origin="dashboard",
            principal_type=principal.type,
            principal_name=principal.name,
            principal_pk=principal.pk,
            source_ip=request.META.get("REMOTE_ADDR"),
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
            mfa_present=bool(getattr(user, "is_verified", lambda: False)()),
            secure_transport=request.is_secure(),
            roles=roles,
            principal_tags=tuple(sorted((principal.tags or {}).items())),
        )

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
