"""A service acting for a principal (``X-Kmsweb-On-Behalf-Of``), with boto3 against a live kmsweb.

A registered service principal is served on a user's behalf only when the
user delegated to that service, never for an administrator; the request is
evaluated as the user with ``kms:ViaService`` set, and the audit event
names both the user and the service.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from audit.models import AuditEvent
from keys.models import Key
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied
from policies.models import Principal, PrincipalType, ServiceDelegation
from policies.services import access_key_create, service_delegation_create, service_delegation_delete
from tests.conftest import REGION, Persona

HEADER = "X-Kmsweb-On-Behalf-Of"
DENIED = "AccessDeniedException"


def _service(name: str) -> Persona:
    principal = Principal.objects.create(account_id=settings.KMSWEB_ACCOUNT_ID, name=name, type=PrincipalType.SERVICE)
    key, secret = access_key_create(caller=Caller.system("tests"), principal=principal)
    return Persona(principal=principal, access_key_id=key.access_key_id, secret=secret)


def _acting_for(client: Any, arn: str) -> Any:
    def add_header(request: Any, **_: Any) -> None:
        request.headers[HEADER] = arn

    client.meta.events.register("before-sign.kms.*", add_header)
    return client


def _delegate(persona: Persona, service: Persona) -> None:
    service_delegation_create(caller=persona.caller(), principal=persona.principal, service=service.principal)


@pytest.fixture
def backup(key_admin: Persona) -> Persona:
    return _service("backup")


@pytest.fixture
def payroll(key_admin: Persona) -> Persona:
    return _service("payroll")


@pytest.fixture
def alice(make_persona: Callable[..., Persona]) -> Persona:
    """A user with kms:* in her own identity policy (the default key policy lets it decide)."""
    from policies.services import FULL_ACCESS_POLICY

    return make_persona("alice", policy=FULL_ACCESS_POLICY)


@pytest.fixture
def key(make_key: Callable[..., Key]) -> Key:
    return make_key()


def _refused(call: Callable[..., Any], **params: Any) -> AuditEvent:
    """The call is refused with AccessDeniedException and audited once, naming the service and the principal."""
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    with pytest.raises(ClientError) as exc:
        call(**params)
    assert exc.value.response["Error"]["Code"] == DENIED
    events = list(AuditEvent.objects.filter(id__gt=last))
    assert len(events) == 1 and events[0].error_code == DENIED
    return events[0]


def test_it_refuses_to_act_for_a_user_who_did_not_delegate(
    kms_client: Callable[..., Any], backup: Persona, alice: Persona, key: Key
) -> None:
    via_backup = _acting_for(kms_client(backup), alice.principal.arn)

    event = _refused(via_backup.encrypt, KeyId=str(key.id), Plaintext=b"x")

    decision = event.additional_event_data["decision"]
    assert decision["reason"] == "not-delegated"
    assert decision["invokedByArn"] == backup.principal.arn
    assert decision["onBehalfOf"] == alice.principal.arn
    assert "has not delegated" in decision["explanation"]
    # alice's own rights are untouched, and alice herself may still encrypt.
    kms_client(alice).encrypt(KeyId=str(key.id), Plaintext=b"x")


def test_it_acts_only_for_principals_that_delegated_to_that_service(
    kms_client: Callable[..., Any], backup: Persona, payroll: Persona, alice: Persona, key: Key
) -> None:
    _delegate(alice, payroll)

    _refused(_acting_for(kms_client(backup), alice.principal.arn).encrypt, KeyId=str(key.id), Plaintext=b"x")
    via_payroll = _acting_for(kms_client(payroll), alice.principal.arn)
    blob = via_payroll.encrypt(KeyId=str(key.id), Plaintext=b"x")["CiphertextBlob"]
    assert via_payroll.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"

    event = AuditEvent.objects.filter(event_name="Encrypt", error_code="").get()
    assert event.principal_arn == alice.principal.arn
    assert event.user_identity["invokedBy"] == "payroll.amazonaws.com"
    assert event.user_identity["invokedByArn"] == payroll.principal.arn


def test_it_stops_acting_for_a_principal_once_the_delegation_is_removed(
    kms_client: Callable[..., Any], backup: Persona, alice: Persona, key: Key
) -> None:
    _delegate(alice, backup)
    via_backup = _acting_for(kms_client(backup), alice.principal.arn)
    via_backup.encrypt(KeyId=str(key.id), Plaintext=b"x")

    service_delegation_delete(caller=alice.caller(), principal=alice.principal, service=backup.principal)

    _refused(via_backup.encrypt, KeyId=str(key.id), Plaintext=b"x")


@pytest.mark.parametrize("admin", ["superuser", "administrator role"])
def test_it_never_acts_for_an_administrator(
    kms_client: Callable[..., Any], backup: Persona, make_persona: Callable[..., Persona], key: Key, admin: str
) -> None:
    from policies.services import FULL_ACCESS_POLICY

    ada = make_persona("ada", policy=FULL_ACCESS_POLICY)
    user = get_user_model().objects.create_user("ada", password=None, is_superuser=admin == "superuser")
    if admin == "administrator role":
        user.groups.add(Group.objects.get_or_create(name="administrator")[0])
    Principal.objects.filter(pk=ada.principal.pk).update(user=user)
    ada.principal.refresh_from_db()

    # An administrator cannot delegate, even to itself, nor the operator for it.
    for caller in (ada.caller(), Caller.system("tests")):
        with pytest.raises(AccessDenied):
            service_delegation_create(caller=caller, principal=ada.principal, service=backup.principal)
    assert not ServiceDelegation.objects.exists()
    # A delegation made before the principal became an administrator no longer counts.
    ServiceDelegation.objects.create(
        principal=ada.principal, service=backup.principal, created_by="tests", created_at=key.created_at
    )
    keys = Key.objects.count()
    event = _refused(
        _acting_for(kms_client(backup), ada.principal.arn).create_key, Description="made by backup for ada"
    )
    assert event.additional_event_data["decision"]["explanation"].endswith("no service may act for it.")
    assert Key.objects.count() == keys


def test_it_evaluates_the_users_own_policies_with_kms_via_service(
    kms_client: Callable[..., Any], make_persona: Callable[..., Persona], backup: Persona, payroll: Persona, key: Key
) -> None:
    only_via_backup = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:Decrypt"],
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:ViaService": f"backup.{REGION}.amazonaws.com"}},
            }
        ],
    }
    bea = make_persona("bea", policy=json.dumps(only_via_backup))
    _delegate(bea, backup)
    _delegate(bea, payroll)

    blob = _acting_for(kms_client(backup), bea.principal.arn).encrypt(KeyId=str(key.id), Plaintext=b"x")
    assert blob["KeyId"] == key.arn
    # Directly, or through another service she also delegated to, her policy does not allow it.
    _refused(kms_client(bea).encrypt, KeyId=str(key.id), Plaintext=b"x")
    event = _refused(_acting_for(kms_client(payroll), bea.principal.arn).encrypt, KeyId=str(key.id), Plaintext=b"x")
    assert event.principal_arn == bea.principal.arn
    assert event.user_identity["invokedBy"] == "payroll.amazonaws.com"
    assert event.user_identity["invokedByArn"] == payroll.principal.arn
    assert event.additional_event_data["decision"]["reason"] == "implicit-deny"
