"""Service delegations: who may let a service act for a principal, through the service, the command and the dashboard.

Every change and every refusal is one audit event; a refusal changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client

from audit.models import AuditEvent
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, NotFound, ValidationError
from policies.models import Principal, PrincipalType, ServiceDelegation
from policies.services import service_delegation_create, service_delegation_delete
from tests import dashboard_fixtures
from tests.conftest import OTHER_ACCOUNT, Persona
from tests.dashboard_fixtures import DashboardUser
from tests.factories import AccountFactory, PrincipalFactory

make_dashboard_user = dashboard_fixtures.make_dashboard_user
signed_in = dashboard_fixtures.signed_in

pytestmark = pytest.mark.django_db
A = settings.KMSWEB_ACCOUNT_ID
HX = {"HTTP_HX_REQUEST": "true"}


def system() -> Caller:
    return Caller.system("tests", account_id=A)


@pytest.fixture
def backup(db: None) -> Principal:
    return PrincipalFactory(account=AccountFactory(id=A), name="backup", type=PrincipalType.SERVICE)


@pytest.fixture
def alice(make_persona: Callable[..., Persona]) -> Persona:
    return make_persona("alice")


def pairs() -> list[tuple[str, str]]:
    return sorted(ServiceDelegation.objects.values_list("principal__name", "service__name"))


def events(name: str) -> list[tuple[str, str]]:
    return list(AuditEvent.objects.filter(event_name=name).values_list("principal_arn", "error_code"))


def test_it_lets_a_principal_delegate_to_a_service_and_withdraw(alice: Persona, backup: Principal) -> None:
    delegation = service_delegation_create(caller=alice.caller(), principal=alice.principal, service=backup)
    assert delegation.created_by == alice.principal.arn
    # Idempotent: a second delegation is the same one.
    assert service_delegation_create(caller=alice.caller(), principal=alice.principal, service=backup) == delegation
    assert pairs() == [("alice", "backup")]
    event = AuditEvent.objects.filter(event_name="CreateServiceDelegation").first()
    assert event is not None and event.event_source == "kmsweb"
    assert event.request_parameters == {"principalArn": alice.principal.arn, "serviceArn": backup.arn}

    service_delegation_delete(caller=alice.caller(), principal=alice.principal, service=backup)
    assert pairs() == []
    assert events("DeleteServiceDelegation") == [(alice.principal.arn, "")]
    with pytest.raises(NotFound):
        service_delegation_delete(caller=alice.caller(), principal=alice.principal, service=backup)
    assert events("DeleteServiceDelegation")[-1] == (alice.principal.arn, "NotFoundException")


def test_it_refuses_a_delegation_made_by_someone_else_without_iam_rights(
    make_persona: Callable[..., Persona], alice: Persona, backup: Principal
) -> None:
    mallory = make_persona("mallory")  # kms:* but no iam: rights
    with pytest.raises(AccessDenied):
        service_delegation_create(caller=mallory.caller(), principal=alice.principal, service=backup)
    assert pairs() == []
    assert events("CreateServiceDelegation") == [(mallory.principal.arn, "AccessDeniedException")]
    # Nor through a service: the user herself acting via backup cannot widen what backup may do.
    via = alice.caller(via_service="backup.us-east-1.amazonaws.com", invoked_by_arn=backup.arn)
    other = PrincipalFactory(account=backup.account, name="payroll", type=PrincipalType.SERVICE)
    service_delegation_create(caller=alice.caller(), principal=alice.principal, service=backup)
    with pytest.raises(AccessDenied):
        service_delegation_create(caller=via, principal=alice.principal, service=other)
    assert pairs() == [("alice", "backup")]


@pytest.mark.parametrize(
    ("principal_type", "service_type", "service_account"),
    [
        (PrincipalType.USER, PrincipalType.USER, A),  # not a service
        (PrincipalType.SERVICE, PrincipalType.SERVICE, A),  # a service cannot delegate
        (PrincipalType.USER, PrincipalType.SERVICE, OTHER_ACCOUNT),  # another account's service
    ],
)
def test_it_refuses_a_delegation_that_makes_no_sense(
    principal_type: str, service_type: str, service_account: str
) -> None:
    principal = PrincipalFactory(account=AccountFactory(id=A), name="who", type=principal_type)
    service = PrincipalFactory(account=AccountFactory(id=service_account), name="svc", type=service_type)
    with pytest.raises(ValidationError):
        service_delegation_create(caller=system(), principal=principal, service=service)
    assert pairs() == []


def test_it_lets_the_operator_delegate_a_role_with_the_command(backup: Principal) -> None:
    PrincipalFactory(account=backup.account, name="nightly", type=PrincipalType.ROLE)
    call_command("service_delegation", "nightly", "backup", "--type", "role")
    assert pairs() == [("nightly", "backup")]
    call_command("service_delegation", "nightly", "backup", "--type", "role", "--remove")
    assert pairs() == []
    with pytest.raises(CommandError, match="does not exist"):
        call_command("service_delegation", "nobody", "backup")
    with pytest.raises(CommandError, match="no such delegation"):
        call_command("service_delegation", "nightly", "backup", "--type", "role", "--remove")
    assert [e[1] for e in events("CreateServiceDelegation")] == [""]


# --- the dashboard ------------------------------------------------------------------------


def test_it_lets_a_dashboard_user_manage_only_their_own_delegations(
    make_dashboard_user: Callable[..., DashboardUser], signed_in: Callable[..., Client], backup: Principal
) -> None:
    vera = make_dashboard_user("vera", "viewer")
    other = make_dashboard_user("otto", "viewer")
    client = signed_in(vera)

    page = client.get(f"/principals/{vera.principal.pk}/").content.decode()
    assert 'id="principal-delegations"' in page and "Let this service act for vera" in page
    response = client.post(f"/principals/{vera.principal.pk}/delegations/", {"service": "backup"})
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert backup.arn in page and ">Remove backup<" in page
    assert pairs() == [("vera", "backup")]

    # Someone else's page: no controls, and a forged POST is refused, audited, and changes nothing.
    page = client.get(f"/principals/{other.principal.pk}/").content.decode()
    assert "Let this service act for" not in page
    response = client.post(f"/principals/{other.principal.pk}/delegations/", {"service": "backup"}, **HX)
    assert response.status_code == 200 and response["HX-Retarget"] == "#flash"
    assert "AccessDeniedException" in response.content.decode()
    assert pairs() == [("vera", "backup")]
    assert events("CreateServiceDelegation")[-1] == (vera.arn, "AccessDeniedException")

    response = client.post(f"/principals/{vera.principal.pk}/delegations/", {"service": "nope"}, **HX)
    assert "NotFoundException" in response.content.decode()
    response = client.post(f"/principals/{vera.principal.pk}/delegations/delete/", {"service": "backup"})
    assert response.status_code == 302 and pairs() == []


def test_it_lets_an_administrator_remove_but_not_hold_delegations(
    make_dashboard_user: Callable[..., DashboardUser], signed_in: Callable[..., Client], backup: Principal
) -> None:
    vera = make_dashboard_user("vera", "viewer")
    ada = make_dashboard_user("ada", "administrator")
    service_delegation_create(caller=system(), principal=vera.principal, service=backup)
    client: Any = signed_in(ada)

    client.post(f"/principals/{vera.principal.pk}/delegations/delete/", {"service": "backup"})
    assert pairs() == []
    response = client.post(f"/principals/{ada.principal.pk}/delegations/", {"service": "backup"}, **HX)
    assert "is an administrator" in response.content.decode()
    assert pairs() == []
