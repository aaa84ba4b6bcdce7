"""Access keys and principals: secrets are stored encrypted, bound to their key id.

Service-level tests: the secret must appear nowhere at rest (not in the row,
not in a full database dump, not in the audit trail), and a ciphertext moved
to another access key must not authenticate as that key.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from audit.models import AuditEvent
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AlreadyExists, InternalError, ValidationError
from policies.models import AccessKey, AccessKeyStatus, Account, Principal, PrincipalType
from policies.services import (
    access_key_authenticate,
    access_key_create,
    account_get_or_create,
    principal_create,
)
from tests.factories import AccountFactory, PrincipalFactory

pytestmark = pytest.mark.django_db

ACCOUNT_ID = "123456789012"


@pytest.fixture
def account() -> Account:
    return AccountFactory(id=ACCOUNT_ID)


@pytest.fixture
def system(account: Account) -> Caller:
    return Caller.system("tests", account_id=account.id)


@pytest.fixture
def principal(account: Account) -> Principal:
    return PrincipalFactory(account=account, name="app")


def spellings(secret: str) -> set[bytes]:
    raw = secret.encode()
    return {
        raw,
        raw.hex().encode(),
        raw.hex().upper().encode(),
        base64.b64encode(raw),
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
    }


def _decoded_strings(value: Any) -> list[bytes]:
    """Every string in a dumpdata tree, and what it base64-decodes to (BinaryFields)."""
    out: list[bytes] = []
    if isinstance(value, dict):
        for item in value.values():
            out += _decoded_strings(item)
    elif isinstance(value, list):
        for item in value:
            out += _decoded_strings(item)
    elif isinstance(value, str):
        out.append(value.encode())
        try:
            out.append(base64.b64decode(value, validate=True))
        except ValueError:
            pass
    return out


# -- storage ------------------------------------------------------------------------


def test_it_stores_no_plaintext_secret(system: Caller, principal: Principal) -> None:
    key, secret = access_key_create(caller=system, principal=principal)
    assert key.access_key_id.startswith("AKIA") and len(key.access_key_id) == 20
    assert len(secret) == 40
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM policies_accesskey WHERE access_key_id = %s", [key.access_key_id])
        (row,) = cursor.fetchall()
    stored = [bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row]
    assert bytes(key.secret_ciphertext) in stored
    for column in stored:
        for spelling in spellings(secret):
            assert spelling not in column


def test_it_leaves_no_secret_in_a_database_dump(system: Caller, principal: Principal) -> None:
    secrets = [access_key_create(caller=system, principal=principal)[1] for _ in range(3)]
    secrets.append(
        access_key_create(
            caller=system, principal=principal, access_key_id="AKIAFIXEDFIXEDFIXED1", secret="a-known-secret-value-0123"
        )[1]
    )
    out = io.StringIO()
    call_command("dumpdata", stdout=out)
    dump = out.getvalue()
    assert "policies.accesskey" in dump and "AKIAFIXEDFIXEDFIXED1" in dump
    values = _decoded_strings(json.loads(dump))
    for secret in secrets:
        for spelling in spellings(secret):
            assert spelling.decode("latin-1") not in dump
            assert not any(spelling in value for value in values)


def test_it_audits_the_creation_without_the_secret(system: Caller, principal: Principal) -> None:
    # The first access key also creates (and audits) the platform key.
    access_key_create(caller=system, principal=principal)
    mark = AuditEvent.objects.count()
    key, secret = access_key_create(caller=system, principal=principal)
    (event,) = AuditEvent.objects.order_by("id")[mark:]
    assert (event.event_name, event.error_code) == ("CreateAccessKey", "")
    assert event.request_parameters == {"userName": principal.arn}
    assert event.response_elements == {"accessKeyId": key.access_key_id, "status": "Active"}
    text = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert all(s.decode("latin-1") not in text for s in spellings(secret))


# -- authentication --------------------------------------------------------------------


def test_it_authenticates_an_active_key(system: Caller, principal: Principal) -> None:
    key, secret = access_key_create(caller=system, principal=principal)
    credentials = access_key_authenticate(access_key_id=key.access_key_id)
    assert credentials is not None
    assert credentials.secret == secret
    assert credentials.principal == principal
    assert credentials.access_key.pk == key.pk
    assert AccessKey.objects.get(pk=key.pk).last_used_at is not None


def test_it_authenticates_a_fixed_id_and_secret(system: Caller, principal: Principal) -> None:
    key, secret = access_key_create(
        caller=system, principal=principal, access_key_id="AKIDEXAMPLE1234567", secret="wJalrXUtnFEMI/K7MDENG"
    )
    assert (key.access_key_id, secret) == ("AKIDEXAMPLE1234567", "wJalrXUtnFEMI/K7MDENG")
    credentials = access_key_authenticate(access_key_id="AKIDEXAMPLE1234567")
    assert credentials is not None and credentials.secret == "wJalrXUtnFEMI/K7MDENG"


def test_it_refuses_an_inactive_or_unknown_key(system: Caller, principal: Principal) -> None:
    key, _ = access_key_create(caller=system, principal=principal)
    AccessKey.objects.filter(pk=key.pk).update(status=AccessKeyStatus.INACTIVE)
    assert access_key_authenticate(access_key_id=key.access_key_id) is None
    assert access_key_authenticate(access_key_id="AKIAUNKNOWNUNKNOWN00") is None
    assert access_key_authenticate(access_key_id="") is None
    assert access_key_authenticate(access_key_id=key.access_key_id.lower()) is None


def test_it_opens_a_secret_only_for_its_own_access_key(system: Caller, principal: Principal) -> None:
    mine, my_secret = access_key_create(caller=system, principal=principal)
    other_principal = PrincipalFactory(account=principal.account, name="other")
    theirs, their_secret = access_key_create(caller=system, principal=other_principal)
    # Someone with database access copies my ciphertext into their row.
    AccessKey.objects.filter(pk=theirs.pk).update(secret_ciphertext=bytes(mine.secret_ciphertext))
    with pytest.raises(InternalError):
        access_key_authenticate(access_key_id=theirs.access_key_id)
    # Mine still works.
    credentials = access_key_authenticate(access_key_id=mine.access_key_id)
    assert credentials is not None and credentials.secret == my_secret


def test_it_fails_loudly_on_a_tampered_secret(system: Caller, principal: Principal) -> None:
    key, _ = access_key_create(caller=system, principal=principal)
    blob = bytearray(key.secret_ciphertext)
    blob[-1] ^= 1
    AccessKey.objects.filter(pk=key.pk).update(secret_ciphertext=bytes(blob))
    with pytest.raises(InternalError):
        access_key_authenticate(access_key_id=key.access_key_id)


# -- principals -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PrincipalType.values)
def test_it_creates_a_principal_with_its_arn(system: Caller, account: Account, kind: str) -> None:
    mark = AuditEvent.objects.count()
    principal = principal_create(caller=system, account=account, name="ci.deploy@corp", type=kind)
    assert principal.arn == f"arn:aws:iam::{ACCOUNT_ID}:{kind}/ci.deploy@corp"
    assert Principal.objects.get(pk=principal.pk).type == kind
    (event,) = AuditEvent.objects.order_by("id")[mark:]
    assert (event.event_name, event.error_code) == ("CreatePrincipal", "")
    assert event.response_elements == {"arn": principal.arn}


def test_it_refuses_a_duplicate_principal(system: Caller, account: Account) -> None:
    principal_create(caller=system, account=account, name="app", type="user")
    mark = AuditEvent.objects.count()
    with pytest.raises(AlreadyExists):
        principal_create(caller=system, account=account, name="app", type="user")
    (event,) = AuditEvent.objects.order_by("id")[mark:]
    assert event.error_code == "AlreadyExistsException"
    assert Principal.objects.filter(name="app").count() == 1
    # The same name is another principal as another type, or in another account.
    principal_create(caller=system, account=account, name="app", type="role")
    principal_create(caller=system, account=AccountFactory(id="210987654321"), name="app", type="user")
    assert Principal.objects.filter(name="app").count() == 3


def test_it_refuses_a_duplicate_access_key_id(system: Caller, principal: Principal) -> None:
    key, secret = access_key_create(caller=system, principal=principal)
    mark = AuditEvent.objects.count()
    with pytest.raises(AlreadyExists):
        access_key_create(caller=system, principal=principal, access_key_id=key.access_key_id, secret="x" * 20)
    (event,) = AuditEvent.objects.order_by("id")[mark:]
    assert event.error_code == "AlreadyExistsException"
    credentials = access_key_authenticate(access_key_id=key.access_key_id)
    assert credentials is not None and credentials.secret == secret


@pytest.mark.parametrize(
    "name", ["", "has space", "x" * 65, "slash/name", "colon:name", "ünicode", "bob\n", "tab\tname", "*"]
)
def test_it_refuses_an_invalid_principal_name(system: Caller, account: Account, name: str) -> None:
    with pytest.raises(ValidationError):
        principal_create(caller=system, account=account, name=name, type="user")
    assert not Principal.objects.filter(account=account).exists()


def test_it_accepts_the_longest_principal_name(system: Caller, account: Account) -> None:
    assert principal_create(caller=system, account=account, name="x" * 64, type="user").name == "x" * 64


@pytest.mark.parametrize("kind", ["group", "", "USER", "root"])
def test_it_refuses_an_unknown_principal_type(system: Caller, account: Account, kind: str) -> None:
    with pytest.raises(ValidationError):
        principal_create(caller=system, account=account, name="app", type=kind)
    assert not Principal.objects.filter(account=account).exists()


@pytest.mark.parametrize(
    ("access_key_id", "secret"),
    [
        ("AKIASHORT", "s" * 20),
        ("akialowercase12345", "s" * 20),
        ("AKIA-WITH-DASHES-1", "s" * 20),
        ("AKIA WITH SPACES 1", "s" * 20),
        ("A" * 129, "s" * 20),
        ("AKIA\u00c0\u00c0\u00c0\u00c0\u00c0\u00c0\u00c0\u00c0\u00c0\u00c0\u00c0\u00c0", "s" * 20),
        ("AKIA" + "\u0661" * 12, "s" * 20),
        ("AKIAVALIDVALIDVALID\n", "s" * 20),
        ("AKIAVALIDVALIDVALID1", "short-secret"),
    ],
)
def test_it_refuses_an_invalid_access_key_id_or_secret(
    system: Caller, principal: Principal, access_key_id: str, secret: str
) -> None:
    with pytest.raises(ValidationError):
        access_key_create(caller=system, principal=principal, access_key_id=access_key_id, secret=secret)
    assert not AccessKey.objects.filter(principal=principal).exists()


def test_it_audits_refused_principal_and_access_key_creation(system: Caller, principal: Principal) -> None:
    mark = AuditEvent.objects.count()
    with pytest.raises(ValidationError):
        principal_create(caller=system, account=principal.account, name="app2", type="group")
    with pytest.raises(ValidationError):
        access_key_create(caller=system, principal=principal, access_key_id="bad", secret="s" * 20)
    events = AuditEvent.objects.order_by("id")[mark:]
    assert [(e.event_name, e.error_code) for e in events] == [
        ("CreatePrincipal", "ValidationException"),
        ("CreateAccessKey", "ValidationException"),
    ]


@pytest.mark.parametrize(
    "account_id", ["", "12345", "1234567890123", "abcdefghijkl", "12345678901 ", "\u0661" * 12, "\u00b2" * 12]
)
def test_it_refuses_an_account_id_that_is_not_12_ascii_digits(account_id: str) -> None:
    with pytest.raises(ValidationError):
        account_get_or_create(account_id=account_id)
    assert not Account.objects.filter(id=account_id).exists()


def test_it_gets_or_creates_an_account_idempotently() -> None:
    first, created = account_get_or_create(account_id="999988887777", name="ops")
    again, created_again = account_get_or_create(account_id="999988887777", name="ignored")
    assert (created, created_again) == (True, False)
    assert first == again and again.name == "ops"
