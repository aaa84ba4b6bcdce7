"""Loading one ``Snapshot`` of facts per run: the only module of the rules' path that reads the ORM.

Each kind of fact is one or two queries (values lists, no model instances, no
server-side cursors: tens of thousands of small rows come faster in one fetch),
so a run's cost is a handful of scans however many keys there are. Usage
comes from the audit trail: the newest successful call per (key, principal,
operation) in the look-back window, one grouped query.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max

from audit.models import AuditEvent
from compliance.rules.facts import (
    AccessKeyFact,
    GrantFact,
    KeyFact,
    PolicyFact,
    PrincipalFact,
    Settings,
    Snapshot,
)
from keys.models import Key, KeyManager, Tag
from kmsweb.lib import operations
from policies.models import AccessKey, AccessKeyStatus, Grant, IdentityPolicy, PolicyAttachment, Principal, TotpDevice
from policies.roles import ALL_ROLES, role_policy_document

# Pending-deletion keys are judged on use in the last 30 days, whatever the settings say.
MIN_WINDOW_DAYS = 30


def rule_settings() -> Settings:
    """The rules' settings from KMSWEB_COMPLIANCE_*."""
    return Settings(
        unused_key_days=settings.KMSWEB_COMPLIANCE_UNUSED_KEY_DAYS,
        unused_grant_days=settings.KMSWEB_COMPLIANCE_UNUSED_GRANT_DAYS,
        access_key_max_days=settings.KMSWEB_COMPLIANCE_ACCESS_KEY_MAX_DAYS,
        required_tags=tuple(settings.KMSWEB_COMPLIANCE_REQUIRED_TAGS),
    )


def _keys() -> tuple[KeyFact, ...]:
    tags: dict[str, dict[str, str]] = defaultdict(dict)
    live = Tag.objects.filter(key__manager=KeyManager.CUSTOMER, key__deleted_at__isnull=True)
    for tagged, tag_key, tag_value in live.values_list("key_id", "tag_key", "tag_value"):
        tags[str(tagged)][tag_key] = tag_value
    rows = Key.objects.filter(manager=KeyManager.CUSTOMER, deleted_at__isnull=True).values_list(
        "id",
        "account_id",
        "region",
        "state",
        "key_spec",
        "key_usage",
        "origin",
        "policy",
        "created_at",
        "rotation_enabled",
        "rotation_period_days",
        "last_rotated_at",
        "deletion_date",
        "expiration_model",
        "valid_to",
    )
    out = []
    for row in rows:
        key_id = str(row[0])
        out.append(KeyFact(key_id, *row[1:], tags=tags.get(key_id, {})))  # type: ignore[arg-type, misc]
    return tuple(out)


def _principals() -> tuple[PrincipalFact, ...]:
    from django.contrib.auth import get_user_model

    policies: dict[int, list[PolicyFact]] = defaultdict(list)
    inline = IdentityPolicy.objects.filter(principal__isnull=False).values_list("principal_id", "name", "document")
    for pk, name, document in inline:
        policies[pk].append(PolicyFact(name, document, "inline"))
    attached = PolicyAttachment.objects.values_list("principal_id", "policy__name", "policy__document")
    for pk, name, document in attached:
        policies[pk].append(PolicyFact(name, document, "managed"))
    users = get_user_model().objects.filter(principal__isnull=False)
    superusers = set(users.filter(is_superuser=True).values_list("pk", flat=True))
    groups: dict[int, list[str]] = defaultdict(list)
    for user_pk, group in users.values_list("pk", "groups__name"):
        if group:
            groups[user_pk].append(group)
    with_mfa = set(TotpDevice.objects.filter(confirmed=True).values_list("user_id", flat=True))
    out = []
    rows = Principal.objects.values_list("pk", "account_id", "type", "name", "user_id")
    for pk, account_id, ptype, name, user_id in rows:
        roles = ALL_ROLES if user_id in superusers else tuple(sorted(groups.get(user_id, ())))
        facts = list(policies.get(pk, ()))
        facts += [PolicyFact(f"kmsweb-role/{r}", role_policy_document(r), "role") for r in roles]
        out.append(
            PrincipalFact(
                arn=f"arn:aws:iam::{account_id}:{ptype}/{name}",
                account_id=account_id,
                type=ptype,
                name=name,
                policies=tuple(facts),
                roles=tuple(roles),
                has_user=user_id is not None,
                has_mfa_device=user_id in with_mfa,
            )
        )
    return tuple(out)


def _grants(now: datetime) -> tuple[GrantFact, ...]:
    rows = (
        Grant.objects.live(now)
        .filter(key__manager=KeyManager.CUSTOMER, key__deleted_at__isnull=True)
        .values_list(
            "grant_id", "key_id", "key__account_id", "grantee_principal", "operations", "created_at", "constraints"
        )
    )
    return tuple(
        GrantFact(gid, str(key_id), account, grantee, tuple(ops or ()), created, constraints)
        for gid, key_id, account, grantee, ops, created, constraints in rows
    )


def _access_keys() -> tuple[AccessKeyFact, ...]:
    rows = AccessKey.objects.filter(status=AccessKeyStatus.ACTIVE).values_list(
        "access_key_id", "principal__account_id", "principal__type", "principal__name", "created_at", "last_used_at"
    )
    return tuple(
        AccessKeyFact(ak, f"arn:aws:iam::{account}:{ptype}/{name}", account, created, last_used)
        for ak, account, ptype, name, created, last_used in rows
    )


def _usage(now: datetime, days: int) -> dict[tuple[str, str, str], datetime]:
    rows = (
        AuditEvent.objects.filter(event_time__gte=now - timedelta(days=days), event_time__lte=now, error_code="")
        .exclude(key_id="")
        .exclude(principal_arn="")
        .values_list("key_id", "principal_arn", "event_name")
        .annotate(last=Max("event_time"))
        .order_by()
    )
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Enough memory to group in a hash table rather than sort to disk (for this transaction only).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL work_mem = '64MB'")
        return {(k, p, e): last for k, p, e, last in rows}


def snapshot_load(*, now: datetime) -> Snapshot:
    """Every fact the rules read, as of ``now``."""
    rules = rule_settings()
    window = max(rules.unused_key_days, rules.unused_grant_days, MIN_WINDOW_DAYS)
    return Snapshot(
        now=now,
        keys=_keys(),
        principals=_principals(),
        grants=_grants(now),
        access_keys=_access_keys(),
        usage=_usage(now, window),
        crypto_operations=frozenset(operations.CRYPTO),
        settings=rules,
    )
