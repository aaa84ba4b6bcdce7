"""Who is asking: the one value every service receives.

The API adapter builds a ``Caller`` from a verified SigV4 signature, the
dashboard from the logged-in user's linked principal, and jobs with
``Caller.system(job)``. Services never see the HTTP request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
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
    via_service: str | None = None
    secure_transport: bool = False
    request_id: str = field(default_factory=new_request_id)

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
