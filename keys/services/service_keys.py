"""Service managed keys ("AWS managed"): made on first use of ``alias/aws/<service>``.

A registered service principal (type ``service``, e.g. ``backup``) owns the
name ``alias/aws/<service>`` in each account and region. The first
DescribeKey or cryptographic call that names that alias in the caller's own
account creates the key, as AWS does: KeyManager ``AWS``, the alias, a fixed
key policy that lets the account's principals use it only through the
service (``kms:ViaService``) and read its metadata directly, and yearly
rotation that cannot be turned off. Nobody may change it afterwards; the
fixed policy refuses every management action.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_record
from keys.models import Alias, Key, KeyManager, KeyOrigin, KeySpec, KeyState, KeyUsage
from keys.services.material import material_create
from kmsweb.lib.caller import Caller

SERVICE_ALIAS_PREFIX = "alias/aws/"
ROTATION_DAYS = 365
# Service names are principal names; the alias grammar is narrower, so the
# name must satisfy both.
_SERVICE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

_USE_ACTIONS = [
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:CreateGrant",
    "kms:DescribeKey",
]


def via_service_name(service: str, region: str) -> str:
    """The value of ``kms:ViaService`` for calls made through ``service``."""
    return f"{service}.{region}.amazonaws.com"


def service_of_alias(name: str) -> str | None:
    """``backup`` for ``alias/aws/backup``; None for any other alias."""
    if not name.startswith(SERVICE_ALIAS_PREFIX):
        return None
    service = name[len(SERVICE_ALIAS_PREFIX) :]
    return service if _SERVICE_NAME.fullmatch(service) else None


def service_key_policy(*, account_id: str, region: str, service: str) -> str:
    """The fixed key policy of an AWS managed key, in AWS's shape.

    Every principal of the account may use the key for cryptography, but
    only through the service; the account (root, hence identity policies)
    may read its metadata and revoke grants on it directly. Nothing allows
    changing the key, so PutKeyPolicy, DisableKey, ScheduleKeyDeletion,
    TagResource, CreateAlias… are refused with AccessDeniedException.
    """
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": f"auto-{service}-1",
            "Statement": [
                {
                    "Sid": f"Allow access through {service} for all principals in the account "
                    f"that are authorized to use {service}",
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": _USE_ACTIONS,
                    "Resource": "*",
                    "Condition": {
                        "StringEquals": {
                            "kms:CallerAccount": account_id,
                            "kms:ViaService": via_service_name(service, region),
                        }
                    },
                },
                {
                    "Sid": "Allow direct access to key metadata to the account",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": ["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"],
                    "Resource": "*",
                },
            ],
        },
        indent=2,
    )


def _service_registered(account_id: str, service: str) -> bool:
    from policies.models import Principal, PrincipalType

    return Principal.objects.filter(account_id=account_id, type=PrincipalType.SERVICE, name=service).exists()


def _existing(account_id: str, region: str, name: str) -> Key | None:
    alias = (
        Alias.objects.select_related("key", "key__current_material")
        .filter(account_id=account_id, region=region, name=name, key__deleted_at__isnull=True)
        .first()
    )
    return alias.key if alias is not None else None


def service_key_get_or_create(*, caller: Caller, alias_name: str) -> Key | None:
    """The AWS managed key behind ``alias_name`` in the caller's account and
    region, created now if the service is registered and the key is new.

    Returns None when ``alias_name`` is not a service alias or the service
    is not registered (the caller answers NotFound, as for any alias).
    Creation is not authorized against the caller: it is the platform's act
    on the account's behalf, audited as CreateKey and CreateAlias by the
    ``service-keys`` system caller in the account's trail. Race-safe: two
    first uses at once insert one alias; the loser's transaction rolls back
    on the unique alias constraint and it returns the winner's key.
    """
    service = service_of_alias(alias_name)
    if service is None or not caller.account_id or caller.is_system:
        return None
    if not _service_registered(caller.account_id, service):
        return None
    key = _existing(caller.account_id, caller.region, alias_name)
    if key is not None:
        return key
    system = Caller.system("service-keys", account_id=caller.account_id, region=caller.region)
    try:
        with transaction.atomic():
            now = timezone.now()
            key = Key.objects.create(
                account_id=caller.account_id,
                region=caller.region,
                description=f"Default key that protects my {service} data when no other key is defined",
                key_spec=KeySpec.SYMMETRIC_DEFAULT,
                key_usage=KeyUsage.ENCRYPT_DECRYPT,
                origin=KeyOrigin.AWS_KMS,
                manager=KeyManager.AWS,
                purpose=service,
                state=KeyState.ENABLED,
                policy=service_key_policy(account_id=caller.account_id, region=caller.region, service=service),
                created_at=now,
                rotation_enabled=True,
                rotation_period_days=ROTATION_DAYS,
                next_rotation_at=now + timedelta(days=ROTATION_DAYS),
            )
            key.current_material = material_create(key=key, version=1, now=now)
            key.save(update_fields=["current_material"])
            Alias.objects.create(
                account_id=caller.account_id,
                region=caller.region,
                name=alias_name,
                key=key,
                created_at=now,
                updated_at=now,
            )
            audit_record(
                caller=system,
                event_name="CreateKey",
                keys=[key],
                request_parameters={"Service": service, "TriggeredBy": caller.principal_arn},
                response_elements={"KeyMetadata": {"KeyId": str(key.id), "Arn": key.arn, "KeyManager": "AWS"}},
                additional_event_data={"keyMaterialId": key.current_material.material_id},
            )
            audit_record(
                caller=system,
                event_name="CreateAlias",
                keys=[key],
                request_parameters={"AliasName": alias_name, "TargetKeyId": str(key.id)},
            )
    except IntegrityError:
        # Another request created it first (the alias is unique): use theirs.
        return _existing(caller.account_id, caller.region, alias_name)
    return key
