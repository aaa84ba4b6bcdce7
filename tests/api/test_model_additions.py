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
