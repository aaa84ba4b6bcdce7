"""Members the 2026 KMS model added to operations kmsweb serves.

ListKeys ``ResourceOwners`` (AWS Resource Access Manager sharing) and
CreateGrant for AWS service principals with a ``SourceArn`` constraint.
"""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from keys import services as key_services
from tests.api.direct import call
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _key_ids(persona: Persona, **params: object) -> list[str]:
    answer = call(persona, "ListKeys", **params)
    assert answer.status == 200, answer.body
    return [entry["KeyId"] for entry in answer.out("Keys")]


def test_it_lists_the_accounts_own_keys_for_self_and_by_default(key_admin: Persona) -> None:
    key = key_services.key_create(caller=key_admin.caller())
    assert _key_ids(key_admin) == [str(key.id)]
    assert _key_ids(key_admin, ResourceOwners=["SELF"]) == [str(key.id)]
    assert _key_ids(key_admin, ResourceOwners=["OTHER_ACCOUNTS_VIA_RAM", "SELF"]) == [str(key.id)]


def test_it_lists_no_key_shared_through_ram_which_kmsweb_does_not_have(key_admin: Persona) -> None:
    key_services.key_create(caller=key_admin.caller())
    assert _key_ids(key_admin, ResourceOwners=["OTHER_ACCOUNTS_VIA_RAM"]) == []
    event = AuditEvent.objects.filter(event_name="ListKeys").order_by("-id").first()
    assert event is not None and event.request_parameters["resourceOwners"] == ["OTHER_ACCOUNTS_VIA_RAM"]


@pytest.mark.parametrize(
    ("owners", "why"),
    [
        ([], "Member must have length greater than or equal to 1"),
        (["SELF", "SELF", "SELF"], "Member must have length less than or equal to 2"),
        (["EVERYONE"], "Member must satisfy enum value set: [SELF, OTHER_ACCOUNTS_VIA_RAM]"),
    ],
)
def test_it_refuses_resource_owners_outside_the_model(key_admin: Persona, owners: list[str], why: str) -> None:
    answer = call(key_admin, "ListKeys", ResourceOwners=owners)
    assert answer.code == "ValidationException"
    assert why in (answer.message or "")


SOURCE = "arn:aws:logs:us-east-1:111122223333:log-group:app"


def _service_grant(key_id: str, **overrides: object) -> dict[str, object]:
    params: dict[str, object] = {
        "KeyId": key_id,
        "GranteeServicePrincipal": "logs.amazonaws.com",
        "Operations": ["Encrypt", "Decrypt"],
        "Constraints": {"SourceArn": SOURCE},
        "RetiringPrincipal": "arn:aws:iam::111122223333:root",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def test_it_grants_to_a_service_principal_for_one_source_arn_and_lists_it(key_admin: Persona) -> None:
    key = key_services.key_create(caller=key_admin.caller())
    created = call(key_admin, "CreateGrant", **_service_grant(str(key.id)))
    assert created.status == 200, created.body

    (entry,) = call(key_admin, "ListGrants", KeyId=str(key.id)).out("Grants")
    assert entry["GrantId"] == created.out("GrantId")
    assert entry["GranteeServicePrincipal"] == entry["GranteePrincipal"] == "logs.amazonaws.com"
    assert entry["Constraints"] == {"SourceArn": SOURCE}
    assert entry["RetiringPrincipal"] == "arn:aws:iam::111122223333:root"
    assert "RetiringServicePrincipal" not in entry
    event = AuditEvent.objects.filter(event_name="CreateGrant").order_by("-id").first()
    assert event is not None and event.request_parameters["granteeServicePrincipal"] == "logs.amazonaws.com"

    revoked = call(key_admin, "RevokeGrant", KeyId=str(key.id), GrantId=created.out("GrantId"))
    assert revoked.status == 200, revoked.body


def test_it_names_a_retiring_service_principal(key_admin: Persona) -> None:
    key = key_services.key_create(caller=key_admin.caller())
    params = _service_grant(str(key.id), RetiringPrincipal=None, RetiringServicePrincipal="logs.amazonaws.com")
    assert call(key_admin, "CreateGrant", **params).status == 200
    (entry,) = call(key_admin, "ListGrants", KeyId=str(key.id)).out("Grants")
    assert entry["RetiringServicePrincipal"] == "logs.amazonaws.com"
    # Only the service principal itself may list the grants it can retire.
    denied = call(key_admin, "ListRetirableGrants", RetiringServicePrincipal="logs.amazonaws.com")
    assert denied.code == "AccessDeniedException"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"GranteePrincipal": "arn:aws:iam::111122223333:root"}, "either GranteePrincipal or GranteeServicePrincipal"),
        ({"GranteeServicePrincipal": None}, "either GranteePrincipal or GranteeServicePrincipal"),
        ({"Constraints": None}, "must also specify a SourceArn"),
        ({"RetiringPrincipal": None}, "must also specify a RetiringPrincipal or a RetiringServicePrincipal"),
        ({"RetiringServicePrincipal": "logs.amazonaws.com"}, "either RetiringPrincipal or RetiringServicePrincipal"),
        (
            {"GranteeServicePrincipal": None, "GranteePrincipal": "arn:aws:iam::111122223333:root"},
            "SourceArn grant constraint is supported only with a GranteeServicePrincipal",
        ),
    ],
)
def test_it_refuses_a_service_grant_aws_refuses(key_admin: Persona, overrides: dict[str, object], words: str) -> None:
    key = key_services.key_create(caller=key_admin.caller())
    answer = call(key_admin, "CreateGrant", **_service_grant(str(key.id), **overrides))
    assert answer.code == "ValidationException"
    assert words in (answer.message or "")
    assert call(key_admin, "ListGrants", KeyId=str(key.id)).out("Grants") == []


def test_it_refuses_a_service_principal_outside_the_models_pattern(key_admin: Persona) -> None:
    key = key_services.key_create(caller=key_admin.caller())
    answer = call(key_admin, "CreateGrant", **_service_grant(str(key.id), GranteeServicePrincipal="logs"))
    assert answer.code == "ValidationException"
    assert "granteeServicePrincipal" in (answer.message or "")
