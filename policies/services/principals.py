"""Accounts, principals and their access keys."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audited
from keys.services.platform import platform_decrypt, platform_encrypt
from kmsweb import generations
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AlreadyExists, NotFound, ValidationError
from kmsweb.ttlcache import TTLCache
from policies.authorization import authorize
from policies.models import AccessKey, AccessKeyStatus, Account, Principal, PrincipalType, StsSession

ACCESS_KEY_PURPOSE = "access-key-secrets"
# Temporary credentials' access key ids start so, as AWS's do; long-term ones AKIA.
SESSION_KEY_PREFIX = "ASIA"
_ACCESS_KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# last_used_at is written at most this often per key: an UPDATE on every
# request would cost the API a write for information no one needs that fresh.
_LAST_USED_GRANULARITY = timedelta(minutes=1)
# fullmatch, ASCII only: str.isdigit()/isalnum() accept other scripts' digits
# and letters, and a regex's "$" accepts a trailing newline.
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
_PRINCIPAL_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")


def account_get_or_create(*, account_id: str, name: str = "") -> tuple[Account, bool]:
    """The account with this 12-digit id, created if absent (idempotent)."""
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise ValidationError("An account id is 12 digits.")
    return Account.objects.get_or_create(id=account_id, defaults={"name": name})


def principal_create(*, caller: Caller, account: Account, name: str, type: str) -> Principal:
    """Create a principal (user, role or service) in ``account``; audited."""
    principal = Principal(account=account, name=name, type=type)
    with audited(caller, "CreatePrincipal", request_parameters={"Name": name, "Type": type}) as op:
        authorize(caller=caller, action="iam:CreatePrincipal")
        if type not in PrincipalType.values:
            raise ValidationError(f"Principal type must be one of {', '.join(PrincipalType.values)}.")
        try:
            # Uniqueness is left to the INSERT below, which answers AlreadyExists.
            principal.full_clean(validate_constraints=False)
        except Exception as exc:
            raise ValidationError(f"Invalid principal name {name!r}: {exc}") from exc
        if not _PRINCIPAL_NAME.fullmatch(name):
            raise ValidationError(f"Invalid principal name {name!r}: letters, digits and +=,.@_- only.")
        try:
            with transaction.atomic():
                principal.save()
        except IntegrityError as exc:
            raise AlreadyExists(f"Principal {principal.arn} already exists.") from exc
        op.response_elements = {"Arn": principal.arn}
    return principal


def _new_access_key_id() -> str:
    return "AKIA" + "".join(secrets.choice(_ACCESS_KEY_ALPHABET) for _ in range(16))


def access_key_create(
    *,
    caller: Caller,
    principal: Principal,
    access_key_id: str | None = None,
    secret: str | None = None,
) -> tuple[AccessKey, str]:
    """Create an access key; return it and its secret, which is shown only now.

    The secret is stored encrypted under a platform owned key, bound to the
    access key id, and never logged or audited.
    """
    access_key_id = access_key_id or _new_access_key_id()
    secret = secret or secrets.token_urlsafe(30)[:40]
    with audited(caller, "CreateAccessKey", request_parameters={"UserName": principal.arn}) as op:
        authorize(caller=caller, action="iam:CreateAccessKey")
        if not _ACCESS_KEY_ID.fullmatch(access_key_id):
            raise ValidationError("An access key id is 16-128 upper-case letters and digits.")
        if len(secret) < 16:
            raise ValidationError("A secret access key has at least 16 characters.")
        if AccessKey.objects.filter(access_key_id=access_key_id).exists():
            raise AlreadyExists(f"Access key {access_key_id} already exists.")
        ciphertext = platform_encrypt(
            purpose=ACCESS_KEY_PURPOSE, plaintext=secret.encode(), context={"accessKeyId": access_key_id}
        )
        key = AccessKey.objects.create(access_key_id=access_key_id, principal=principal, secret_ciphertext=ciphertext)
        op.response_elements = {"AccessKeyId": access_key_id, "Status": key.status}
        # A process may have cached "unknown" for this id.
        generations.generation_bump(generations.CREDENTIALS)
    return key, secret


@dataclass(frozen=True)
class Credentials:
    """An active access key (or STS session) with its principal, resolved for one request.

    For temporary credentials ``session`` is set and ``access_key`` is None;
    the caller checks the session token and the expiry on every request.
    """

    access_key: AccessKey | None
    principal: Principal
    secret: str
    session: StsSession | None = None


def _auth_cache_seconds() -> float:
    return float(settings.KMSWEB_AUTH_CACHE_SECONDS)


# access key id -> Credentials (or None for unknown/inactive), see kmsweb.ttlcache;
# the access-key services bump the credentials' generation.
ACCESS_KEY_CACHE: TTLCache[Credentials | None] = TTLCache(_auth_cache_seconds, generations.CREDENTIALS)
_last_touched: dict[str, float] = {}


def _load_credentials(access_key_id: str) -> Credentials | None:
    if access_key_id.startswith(SESSION_KEY_PREFIX):
        return _load_session(access_key_id)
    key = (
        AccessKey.objects.select_related("principal", "principal__account").filter(access_key_id=access_key_id).first()
    )
    if key is None or key.status != AccessKeyStatus.ACTIVE:
        return None
    secret = platform_decrypt(
        purpose=ACCESS_KEY_PURPOSE,
        blob=bytes(key.secret_ciphertext),
        context={"accessKeyId": key.access_key_id},
    ).decode()
    return Credentials(access_key=key, principal=key.principal, secret=secret)


def _load_session(access_key_id: str) -> Credentials | None:
    session = (
        StsSession.objects.select_related("principal", "principal__account").filter(access_key_id=access_key_id).first()
    )
    if session is None:
        return None
    secret = platform_decrypt(
        purpose=ACCESS_KEY_PURPOSE,
        blob=bytes(session.secret_ciphertext),
        context={"accessKeyId": session.access_key_id},
    ).decode()
    return Credentials(access_key=None, principal=session.principal, secret=secret, session=session)


def access_key_authenticate(*, access_key_id: str) -> Credentials | None:
    """Resolve an access key id to its principal and secret, or None.

    None for an unknown or inactive key: the caller answers both the same
    way (``UnrecognizedClientException``), as AWS does. Answers are cached
    per process (``kmsweb.ttlcache``); a change made through the
    services applies to the next request of every process.
    """
    credentials = ACCESS_KEY_CACHE.get_or_load(access_key_id, lambda: _load_credentials(access_key_id))
    if credentials is not None and credentials.session is None:
        # last_used_at is written at most once a minute per process: an
        # UPDATE on every request would cost the API a write for nothing.
        now = time.monotonic()
        if _last_touched.get(access_key_id, 0.0) + _LAST_USED_GRANULARITY.total_seconds() < now:
            _last_touched[access_key_id] = now
            AccessKey.objects.filter(pk=access_key_id).update(last_used_at=timezone.now())
    return credentials


def default_account() -> Account:
    """The account named by KMSWEB_ACCOUNT_ID (created by bootstrap)."""
    account, _ = account_get_or_create(account_id=settings.KMSWEB_ACCOUNT_ID, name="default")
    return account


def principal_get(*, account: Account, name: str, type: str | None = None) -> Principal:
    qs = Principal.objects.filter(account=account, name=name)
    if type:
        qs = qs.filter(type=type)
    principal = qs.first()
    if principal is None:
        raise NotFound(f"Principal {name!r} does not exist in account {account.id}.")
    return principal
