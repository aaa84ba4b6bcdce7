"""The facts a compliance run judges: plain, frozen dataclasses (no Django).

``compliance.snapshot`` loads one ``Snapshot`` per run from the database;
the rules read only these, so each rule is a pure function that a test
drives with hand-built facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property


class Severity(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class ResourceKind(StrEnum):
    KEY = "key"
    PRINCIPAL = "principal"
    GRANT = "grant"
    ACCESS_KEY = "access-key"
    ACCOUNT = "account"


@dataclass(frozen=True)
class PolicyFact:
    """An identity policy of a principal: inline, attached (managed) or a dashboard role's."""

    name: str
    document: str
    kind: str  # "inline" | "managed" | "role"


@dataclass(frozen=True)
class KeyFact:
    """A customer managed key that is not deleted."""

    id: str
    account_id: str
    region: str
    state: str
    key_spec: str
    key_usage: str
    origin: str
    policy: str
    created_at: datetime
    rotation_enabled: bool = False
    rotation_period_days: int | None = None
    last_rotated_at: datetime | None = None
    deletion_date: datetime | None = None
    expiration_model: str = ""
    valid_to: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def arn(self) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{self.id}"


@dataclass(frozen=True)
class PrincipalFact:
    """A principal with its identity policies and, for dashboard users, roles and MFA."""

    arn: str
    account_id: str
    type: str
    name: str
    policies: tuple[PolicyFact, ...] = ()
    roles: tuple[str, ...] = ()
    has_user: bool = False
    has_mfa_device: bool = False


@dataclass(frozen=True)
class GrantFact:
    """A live grant (not retired, revoked or expired)."""

    grant_id: str
    key_id: str
    key_account_id: str
    grantee_principal: str
    operations: tuple[str, ...]
    created_at: datetime
    constraints: Mapping[str, object] | None = None


@dataclass(frozen=True)
class AccessKeyFact:
    """An active SigV4 access key."""

    access_key_id: str
    principal_arn: str
    account_id: str
    created_at: datetime
    last_used_at: datetime | None = None


@dataclass(frozen=True)
class Settings:
    """The operator's choices that rules read (KMSWEB_COMPLIANCE_*)."""

    unused_key_days: int = 90
    unused_grant_days: int = 90
    access_key_max_days: int = 90
    required_tags: tuple[str, ...] = ()
    # Principals holding one of these dashboard roles are key administrators.
    admin_roles: tuple[str, ...] = ("key-admin", "administrator")


@dataclass(frozen=True)
class Snapshot:
    """Everything one compliance run knows, loaded once.

    ``usage`` maps (key id, principal ARN, operation) to the newest
    successful call in the look-back window (from the audit trail); the
    derived views below are computed once per snapshot.
    """

    now: datetime
    keys: tuple[KeyFact, ...] = ()
    principals: tuple[PrincipalFact, ...] = ()
    grants: tuple[GrantFact, ...] = ()
    access_keys: tuple[AccessKeyFact, ...] = ()
    usage: Mapping[tuple[str, str, str], datetime] = field(default_factory=dict)
    crypto_operations: frozenset[str] = frozenset()
    settings: Settings = field(default_factory=Settings)

    @cached_property
    def key_last_used(self) -> dict[str, datetime]:
        """Newest cryptographic use of each key in the window."""
        out: dict[str, datetime] = {}
        for (key_id, _principal, operation), at in self.usage.items():
            if operation in self.crypto_operations and (key_id not in out or at > out[key_id]):
                out[key_id] = at
        return out

    @cached_property
    def key_users(self) -> dict[str, dict[str, datetime]]:
        """key id -> principal ARN -> newest cryptographic use of the key by that principal."""
        out: dict[str, dict[str, datetime]] = {}
        for (key_id, principal, operation), at in self.usage.items():
            if operation in self.crypto_operations:
                seen = out.setdefault(key_id, {})
                if principal not in seen or at > seen[principal]:
                    seen[principal] = at
        return out

    @cached_property
    def principals_by_arn(self) -> dict[str, PrincipalFact]:
        return {p.arn: p for p in self.principals}
