"""CreateAlias, UpdateAlias, DeleteAlias, ListAliases."""

from __future__ import annotations

import re
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audited
from keys.models import Alias, Key
from keys.selectors import alias_list_for, decode_marker, encode_marker
from keys.services.common import require_customer_managed, require_not_pending_deletion
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AlreadyExists, InvalidAliasName, NotFound, ValidationError
from policies.authorization import authorize

_ALIAS_NAME = re.compile(r"^alias/[a-zA-Z0-9/_-]+$")
RESERVED_PREFIX = "alias/aws/"


def _check_prefix(name: str) -> None:
    """AWS's first check of every alias name: a ValidationException, worded as AWS words it."""
    if not name.startswith("alias/"):
        raise ValidationError(
            'Alias must start with the prefix "alias/". Please see '
            "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
        )
    if ":" in name:
        # The model's pattern lets ':' through; AWS refuses it in an alias name.
        raise ValidationError(f"{name} contains invalid characters for an alias")


def _check_name(name: str) -> None:
    _check_prefix(name)
    if not _ALIAS_NAME.fullmatch(name) or len(name) > 256:
        raise InvalidAliasName(
            f"Alias name '{name}' must begin with 'alias/' and contain only alphanumeric characters, "
            "forward slashes (/), underscores (_), and dashes (-)."
        )
    if name.startswith(RESERVED_PREFIX):
        raise InvalidAliasName(
            f"Alias name '{name}' must not begin with '{RESERVED_PREFIX}': it is reserved for AWS managed keys."
        )


def _alias_arn(caller: Caller, name: str) -> str:
    return f"arn:aws:kms:{caller.region}:{caller.account_id}:{name}"


def alias_create(*, caller: Caller, name: str, key: Key) -> Alias:
    """CreateAlias: a new name for a customer managed key in the caller's account."""
    with audited(caller, "CreateAlias", request_parameters={"AliasName": name, "TargetKeyId": str(key.id)}) as op:
        op.keys.append(key)
        _check_name(name)
        authorize(caller=caller, action="kms:CreateAlias", key=key)
        return alias_insert(caller=caller, name=name, key=key)


def alias_insert(*, caller: Caller, name: str, key: Key) -> Alias:
    """Check and insert an alias row; the caller has authorized and audits.

    Shared by CreateAlias and by CreateKey-with-alias (the dashboard's
    create form), so both refuse the same names the same way.
    """
    _check_name(name)
    require_customer_managed(key, "CreateAlias")
    require_not_pending_deletion(key)
    now = timezone.now()
    try:
        with transaction.atomic():
            return Alias.objects.create(
                account_id=caller.account_id, region=caller.region, name=name, key=key, created_at=now, updated_at=now
            )
    except IntegrityError as exc:
        raise AlreadyExists(f"An alias with the name {_alias_arn(caller, name)} already exists") from exc


def _get_alias(caller: Caller, name: str) -> Alias:
    alias = (
        Alias.objects.select_for_update()
        .select_related("key")
        .filter(account_id=caller.account_id, region=caller.region, name=name)
        .first()
    )
    if alias is None:
        raise NotFound(f"Alias {_alias_arn(caller, name)} is not found.")
    return alias


def alias_update(*, caller: Caller, name: str, key: Key) -> None:
    """UpdateAlias: point an existing alias at another key of the same type."""
    with audited(caller, "UpdateAlias", request_parameters={"AliasName": name, "TargetKeyId": str(key.id)}) as op:
        op.keys.append(key)
        _check_prefix(name)
        if name.startswith(RESERVED_PREFIX):
            _check_name(name)
        alias = _get_alias(caller, name)
        op.keys.append(alias.key)
        authorize(caller=caller, action="kms:UpdateAlias", key=alias.key)
        authorize(caller=caller, action="kms:UpdateAlias", key=key)
        require_customer_managed(key, "UpdateAlias")
        require_not_pending_deletion(key)
        if key.account_id != caller.account_id:
            raise NotFound(f"Key '{key.arn}' does not exist")
        alias.key = key
        alias.updated_at = timezone.now()
        alias.save(update_fields=["key", "updated_at"])


def alias_delete(*, caller: Caller, name: str) -> None:
    """DeleteAlias: the key stays; only the name goes."""
    with audited(caller, "DeleteAlias", request_parameters={"AliasName": name}) as op:
        _check_prefix(name)
        if name.startswith(RESERVED_PREFIX):
            _check_name(name)
        alias = _get_alias(caller, name)
        op.keys.append(alias.key)
        authorize(caller=caller, action="kms:DeleteAlias", key=alias.key)
        alias.delete()


def alias_list(
    *, caller: Caller, key: Key | None = None, limit: int | None = None, marker: str | None = None
) -> dict[str, Any]:
    """ListAliases for the account and region, optionally for one key."""
    limit = limit or 100
    params: dict[str, Any] = {"Limit": limit}
    if key is not None:
        params["KeyId"] = str(key.id)
    with audited(caller, "ListAliases", request_parameters=params) as op:
        if key is not None:
            op.keys.append(key)
        authorize(caller=caller, action="kms:ListAliases")
        qs = alias_list_for(caller=caller, key=key)
        last_name = ""
        if marker:
            (last_name,) = decode_marker(marker, 1)
            qs = qs.filter(name__gt=last_name)
        entries: list[dict[str, Any]] = [
            {
                "AliasName": a.name,
                "AliasArn": a.arn,
                "TargetKeyId": a.key.key_id,
                "CreationDate": a.created_at,
                "LastUpdatedDate": a.updated_at,
            }
            for a in qs.select_related("key")[: limit + 1]
        ]
        if key is None:
            # AWS lists the predefined alias of each service not yet used, without a TargetKeyId.
            taken = {e["AliasName"] for e in entries}
            entries += [
                {"AliasName": name, "AliasArn": _alias_arn(caller, name)}
                for name in predefined_service_aliases(caller=caller, after=str(last_name))
                if name not in taken
            ]
            entries.sort(key=lambda e: e["AliasName"])
        truncated = len(entries) > limit
        page = entries[:limit]
        result: dict[str, Any] = {"Aliases": page, "Truncated": truncated}
        if truncated:
            result["NextMarker"] = encode_marker([page[-1]["AliasName"]])
        return result


def predefined_service_aliases(*, caller: Caller, after: str = "") -> list[str]:
    """``alias/aws/<service>`` of each registered service of the caller's
    account whose key does not exist yet (made on first use), after ``after``."""
    from keys.services.service_keys import SERVICE_ALIAS_PREFIX, service_of_alias
    from policies.models import Principal, PrincipalType

    names = [
        SERVICE_ALIAS_PREFIX + name
        for name in Principal.objects.filter(account_id=caller.account_id, type=PrincipalType.SERVICE).values_list(
            "name", flat=True
        )
    ]
    wanted = sorted(n for n in names if service_of_alias(n) is not None and n > after)
    existing = set(
        Alias.objects.filter(account_id=caller.account_id, region=caller.region, name__in=wanted).values_list(
            "name", flat=True
        )
    )
    return [n for n in wanted if n not in existing]
