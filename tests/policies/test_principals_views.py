"""The Principals pages: who sees what, who may change what, and what a change leaves behind.

Only the administrator role may create, deactivate or delete access keys and
put, attach or detach identity policies. Other roles see the pages without
any of those controls, and a forged POST is refused by ``authorize`` (an
audited AccessDeniedException shown as a message, never a 500). Users sign
in through the real views (password, then TOTP); see
``tests/dashboard_fixtures.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.conf import settings
from django.test import Client
from django.utils.html import escape

from audit.models import AuditEvent
from kmsweb.lib.caller import Caller
from policies.models import AccessKey, AccessKeyStatus, IdentityPolicy, PolicyAttachment, Principal
from policies.services import access_key_authenticate, access_key_create, identity_policy_put, policy_attach
from tests.conftest import OTHER_ACCOUNT, Persona
from tests.dashboard_fixtures import DashboardUser
from tests.factories import AccountFactory, PrincipalFactory

pytestmark = pytest.mark.django_db

DENIED = "AccessDeniedException"
HX = {"HTTP_HX_REQUEST": "true"}
A = settings.KMSWEB_ACCOUNT_ID
LIST_KEYS = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "List", "Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}],
    }
)
READ_ONLY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Describe*", "Resource": "*"}]}
)


def html(response: Any) -> str:
    return response.content.decode()


def system() -> Caller:
    return Caller.system("tests", account_id=A)


@pytest.fixture
def administrator(make_dashboard_user: Callable[..., DashboardUser]) -> DashboardUser:
    """A user made by policies.services.user_create with the administrator role."""
    return make_dashboard_user("ada", "administrator")


@pytest.fixture
def admin_client(administrator: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(administrator)


@pytest.fixture
def app(db: None) -> Principal:
    """A service role of the default account, with an access key, an inline and an attached policy."""
    principal = PrincipalFactory(account=AccountFactory(id=A), name="billing-app", type="role")
    access_key_create(caller=system(), principal=principal)
    identity_policy_put(
        caller=system(), account=principal.account, name="Inline", document=READ_ONLY, principal=principal
    )
    managed = identity_policy_put(caller=system(), account=principal.account, name="Readers", document=READ_ONLY)
    policy_attach(caller=system(), principal=principal, policy=managed)
    identity_policy_put(caller=system(), account=principal.account, name="Writers", document=READ_ONLY)
    return principal


def state() -> dict[str, list[Any]]:
    """What a refused change must leave as it was."""
    return {
        "access_keys": sorted(AccessKey.objects.values_list("access_key_id", "principal_id", "status")),
        "policies": sorted(IdentityPolicy.objects.values_list("name", "principal_id", "document"), key=repr),
        "attachments": sorted(PolicyAttachment.objects.values_list("principal_id", "policy_id")),
    }


def mutations(principal: Principal, access_key_id: str) -> list[tuple[str, dict[str, str], str, str]]:
    """(url, form, audit event name, IAM action) for every change the Principals pages offer."""
    base = f"/principals/{principal.pk}"
    return [
        (f"{base}/access-keys/", {}, "CreateAccessKey", "iam:CreateAccessKey"),
        (
            f"{base}/access-keys/status/",
            {"access_key_id": access_key_id, "active": "false"},
            "UpdateAccessKey",
            "iam:UpdateAccessKey",
        ),
        (f"{base}/access-keys/delete/", {"access_key_id": access_key_id}, "DeleteAccessKey", "iam:DeleteAccessKey"),
        (
            f"{base}/policies/",
            {"name": "Sneaky", "document": READ_ONLY},
            "PutPrincipalPolicy",
            "iam:PutPrincipalPolicy",
        ),
        (f"{base}/policies/delete/", {"name": "Inline"}, "DeletePolicy", "iam:DeletePolicy"),
        (f"{base}/policies/attach/", {"name": "Writers"}, "AttachPrincipalPolicy", "iam:AttachPrincipalPolicy"),
        (
            f"{base}/policies/attach/",
            {"name": "Readers", "detach": "true"},
            "DetachPrincipalPolicy",
            "iam:DetachPrincipalPolicy",
        ),
        ("/principals/policies/", {"name": "Sneaky", "document": READ_ONLY}, "CreatePolicy", "iam:CreatePolicy"),
    ]


def controls(principal: Principal) -> list[str]:
    """The forms of the principal page that change something."""
    base = f"/principals/{principal.pk}"
    suffixes = ("access-keys/", "access-keys/status/", "access-keys/delete/", "policies/", "policies/delete/")
    return [f'action="{base}/{suffix}"' for suffix in (*suffixes, "policies/attach/")]


# --- what each role sees ------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "key-admin"])
def test_it_shows_principals_to_other_roles_without_any_mutating_control(
    make_dashboard_user: Callable[..., DashboardUser],
    signed_in: Callable[..., Client],
    app: Principal,
    role: str,
    django_assert_max_num_queries: Any,
) -> None:
    client = signed_in(make_dashboard_user("vic", role))
    access_key = app.access_keys.get()

    # 13: the page's own queries plus the sidebar's grant request count, the
    # alarm banner's alarms in ALARM and the sealing banner's status.
    with django_assert_max_num_queries(13):
        listing = html(client.get("/principals/"))
    assert app.arn in listing and "Readers" in listing
    assert 'id="managed-policy-form"' not in listing

    page = html(client.get(f"/principals/{app.pk}/"))
    assert app.arn in page and access_key.access_key_id in page
    assert "Inline" in page and "Readers" in page
    for control in controls(app):
        assert control not in page, control
    for label in ("Create access key", "Deactivate", "Delete access key", "Save inline policy", "Detach", "Attach"):
        assert f">{label}<" not in page, label


def test_it_shows_an_administrator_every_control(admin_client: Client, app: Principal) -> None:
    listing = html(admin_client.get("/principals/"))
    assert 'id="managed-policy-form"' in listing
    page = html(admin_client.get(f"/principals/{app.pk}/"))
    for control in controls(app):
        assert control in page, control
    assert ">Create access key<" in page and ">Deactivate<" in page and ">Save inline policy<" in page


def test_it_lists_many_principals_in_a_bounded_number_of_queries(
    admin_client: Client, app: Principal, django_assert_max_num_queries: Any
) -> None:
    for n in range(25):
        principal = PrincipalFactory(account=app.account, name=f"svc-{n:02d}")
        access_key_create(caller=system(), principal=principal)
    # 13: the page's own queries plus the sidebar's grant request count, the
    # alarm banner's alarms in ALARM and the sealing banner's status.
    with django_assert_max_num_queries(13):
        response = admin_client.get("/principals/")
    assert response.status_code == 200
    assert html(response).count('href="/principals/') >= 26


# --- forged changes -------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "key-admin"])
def test_it_refuses_and_audits_every_forged_change(
    make_dashboard_user: Callable[..., DashboardUser],
    signed_in: Callable[..., Client],
    app: Principal,
    role: str,
) -> None:
    who = make_dashboard_user("mallory", role)
    client = signed_in(who)
    access_key = app.access_keys.get()

    for url, form, event_name, action in mutations(app, access_key.access_key_id):
        before = state()
        response = client.post(url, form, **HX)
        assert response.status_code == 200 and response["HX-Retarget"] == "#flash", url
        fragment = html(response)
        assert "<html" not in fragment
        assert f"{DENIED}: User: {who.arn} is not authorized to perform: {action}" in fragment
        assert state() == before, url
        denial = AuditEvent.objects.get(event_name=event_name, error_code=DENIED)
        assert denial.principal_arn == who.arn and denial.origin == "dashboard"
        assert denial.additional_event_data["decision"]["reason"] == "implicit-deny"

    # Without HTMX: back to a page that says why, after the redirect.
    before = state()
    response = client.post(f"/principals/{app.pk}/access-keys/", HTTP_REFERER=f"/principals/{app.pk}/")
    assert response.status_code == 302 and response["Location"] == f"/principals/{app.pk}/"
    page = html(client.get(response["Location"]))
    assert f"{DENIED}: User: {who.arn} is not authorized to perform: iam:CreateAccessKey" in page
    assert state() == before
    assert AuditEvent.objects.filter(event_name="CreateAccessKey", error_code=DENIED).count() == 2


def test_it_needs_the_csrf_token_to_change_anything(
    administrator: DashboardUser, signed_in: Callable[..., Client], app: Principal
) -> None:
    client = signed_in(administrator, enforce_csrf_checks=True)
    before = state()
    assert client.post(f"/principals/{app.pk}/access-keys/").status_code == 403
    assert state() == before
    assert not AuditEvent.objects.filter(event_name="CreateAccessKey", principal_arn=administrator.arn).exists()


# --- access keys ----------------------------------------------------------------------


def new_secret(page: str) -> tuple[str, str]:
    match = re.search(r'New access key <code>([A-Z0-9]+)</code>.*?<code id="new-secret">([^<]+)</code>', page, re.S)
    assert match, "no new secret on the page"
    return match.group(1), match.group(2)


def test_it_shows_a_new_secret_once_and_stores_it_encrypted(
    admin_client: Client, administrator: DashboardUser, app: Principal
) -> None:
    response = admin_client.post(f"/principals/{app.pk}/access-keys/")

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    access_key_id, secret = new_secret(html(response))
    row = AccessKey.objects.get(access_key_id=access_key_id)
    assert row.principal == app and row.status == AccessKeyStatus.ACTIVE
    assert secret.encode() not in bytes(row.secret_ciphertext)
    assert access_key_authenticate(access_key_id=access_key_id).secret == secret  # it is that secret, encrypted
    event = AuditEvent.objects.get(event_name="CreateAccessKey", principal_arn=administrator.arn)
    assert event.error_code == "" and secret not in json.dumps(
        [event.request_parameters, event.response_elements, event.additional_event_data]
    )

    again = html(admin_client.get(f"/principals/{app.pk}/"))
    assert access_key_id in again
    assert secret not in again and 'id="new-secret"' not in again


@pytest.mark.django_db(transaction=True)
def test_it_deactivates_and_deletes_an_access_key_that_boto3_then_cannot_use(
    admin_client: Client, administrator: DashboardUser, app: Principal, kms_client: Callable[..., Any]
) -> None:
    start = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    access_key_id, secret = new_secret(html(admin_client.post(f"/principals/{app.pk}/access-keys/")))
    response = admin_client.post(f"/principals/{app.pk}/policies/", {"name": "ListKeys", "document": LIST_KEYS})
    assert response.status_code == 302
    persona = Persona(principal=app, access_key_id=access_key_id, secret=secret)
    client = kms_client(persona)
    try:
        assert client.list_keys()["Keys"] == []

        response = admin_client.post(
            f"/principals/{app.pk}/access-keys/status/", {"access_key_id": access_key_id, "active": "false"}
        )
        assert response.status_code == 302 and response["Location"] == f"/principals/{app.pk}/"
        assert AccessKey.objects.get(access_key_id=access_key_id).status == AccessKeyStatus.INACTIVE
        assert ">Activate<" in html(admin_client.get(f"/principals/{app.pk}/"))
        with pytest.raises(ClientError) as inactive:
            client.list_keys()
        assert inactive.value.response["Error"]["Code"] == "UnrecognizedClientException"
        del inactive

        response = admin_client.post(f"/principals/{app.pk}/access-keys/delete/", {"access_key_id": access_key_id})
        assert response.status_code == 302
        assert not AccessKey.objects.filter(access_key_id=access_key_id).exists()
        assert access_key_id not in html(admin_client.get(f"/principals/{app.pk}/"))
        with pytest.raises(ClientError) as deleted:
            client.list_keys()
        assert deleted.value.response["Error"]["Code"] == "UnrecognizedClientException"
        del deleted
    finally:
        client.close()

    done = list(
        AuditEvent.objects.filter(id__gt=start, principal_arn=administrator.arn).values_list(
            "event_name", "error_code", "origin"
        )
    )
    assert done == [
        ("CreateAccessKey", "", "dashboard"),
        ("PutPrincipalPolicy", "", "dashboard"),
        ("UpdateAccessKey", "", "dashboard"),
        ("DeleteAccessKey", "", "dashboard"),
    ]


def test_it_refuses_an_access_key_of_another_principal(
    admin_client: Client, app: Principal, key_admin: Persona
) -> None:
    before = state()
    response = admin_client.post(
        f"/principals/{app.pk}/access-keys/delete/", {"access_key_id": key_admin.access_key_id}, **HX
    )
    assert response.status_code == 200 and "NotFoundException" in html(response)
    assert state() == before


# --- identity policies ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ('{"Version": "2012-10-17", "Statement": [', "not valid JSON"),
        (
            json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "kms:Encrypt",
                            "Resource": "*",
                            "Condition": {"StringEqualz": {"kms:CallerAccount": A}},
                        }
                    ],
                }
            ),
            "unknown condition operator: StringEqualz",
        ),
    ],
    ids=["invalid-json", "unknown-operator"],
)
def test_it_keeps_a_bad_inline_policy_inline_with_the_input(
    admin_client: Client, app: Principal, document: str, says: str
) -> None:
    before = state()
    response = admin_client.post(f"/principals/{app.pk}/policies/", {"name": "Broken", "document": document})

    assert response.status_code == 200
    page = html(response)
    assert escape(says) in page
    form = page[page.index('id="inline-policy-form"') :]
    assert 'value="Broken"' in form and escape(document) in form
    assert state() == before
    refusal = AuditEvent.objects.get(event_name="PutPrincipalPolicy", error_code="MalformedPolicyDocumentException")
    assert refusal.origin == "dashboard"


def test_it_puts_an_inline_policy(admin_client: Client, app: Principal) -> None:
    response = admin_client.post(f"/principals/{app.pk}/policies/", {"name": "ListKeys", "document": LIST_KEYS})

    assert response.status_code == 302 and response["Location"] == f"/principals/{app.pk}/"
    policy = IdentityPolicy.objects.get(principal=app, name="ListKeys")
    assert policy.document == LIST_KEYS
    assert escape(LIST_KEYS) in html(admin_client.get(f"/principals/{app.pk}/"))

    response = admin_client.post(f"/principals/{app.pk}/policies/delete/", {"name": "ListKeys"})
    assert response.status_code == 302
    assert not IdentityPolicy.objects.filter(principal=app, name="ListKeys").exists()


def test_it_creates_attaches_and_detaches_a_managed_policy(admin_client: Client, app: Principal) -> None:
    response = admin_client.post("/principals/policies/", {"name": "KeyListers", "document": LIST_KEYS})
    assert response.status_code == 302 and response["Location"] == "/principals/"
    managed = IdentityPolicy.objects.get(principal__isnull=True, name="KeyListers")
    assert managed.account_id == A and "KeyListers" in html(admin_client.get("/principals/"))

    page = html(admin_client.get(f"/principals/{app.pk}/"))
    assert '<option value="KeyListers">' in page

    response = admin_client.post(f"/principals/{app.pk}/policies/attach/", {"name": "KeyListers"})
    assert response.status_code == 302
    assert PolicyAttachment.objects.filter(principal=app, policy=managed).exists()
    attached = html(admin_client.get(f"/principals/{app.pk}/"))
    assert '<option value="KeyListers">' not in attached

    response = admin_client.post(f"/principals/{app.pk}/policies/attach/", {"name": "KeyListers", "detach": "true"})
    assert response.status_code == 302
    assert not PolicyAttachment.objects.filter(principal=app, policy=managed).exists()
    assert IdentityPolicy.objects.filter(pk=managed.pk).exists()  # detached, not deleted


def test_it_keeps_a_bad_managed_policy_inline_with_the_input(admin_client: Client, app: Principal) -> None:
    before = state()
    document = '{"Version": "2012-10-17"}'
    response = admin_client.post("/principals/policies/", {"name": "NoStatements", "document": document})

    assert response.status_code == 200
    page = html(response)
    assert "no Statement element" in page
    form = page[page.index('id="managed-policy-form"') :]
    assert 'value="NoStatements"' in form and escape(document) in form
    assert state() == before


def test_it_refuses_to_attach_a_policy_of_no_such_name(admin_client: Client, app: Principal) -> None:
    before = state()
    response = admin_client.post(f"/principals/{app.pk}/policies/attach/", {"name": "Nope"}, **HX)
    assert response.status_code == 200 and "NotFoundException" in html(response)
    assert state() == before


# --- another account's principals -----------------------------------------------------


def test_it_answers_another_accounts_principal_as_not_found(
    admin_client: Client, app: Principal, outsider: Persona
) -> None:
    theirs = outsider.principal
    message = f"NotFoundException: No principal {theirs.pk} in account {A}."
    before = state()

    response = admin_client.get(f"/principals/{theirs.pk}/", HTTP_REFERER="/principals/")
    assert response.status_code == 302 and response["Location"] == "/principals/"
    page = html(admin_client.get("/principals/"))
    assert message in page and theirs.arn not in page

    response = admin_client.get(f"/principals/{theirs.pk}/", **HX)
    assert response.status_code == 200 and message in html(response) and "<html" not in html(response)

    for url, form, *_ in mutations(theirs, outsider.access_key_id)[:-1]:  # the last one names no principal
        response = admin_client.post(url, form, **HX)
        assert response.status_code == 200 and message in html(response), url
    assert state() == before

    missing = admin_client.get("/principals/987654321/", follow=True)
    assert missing.status_code == 200 and "NotFoundException: No principal 987654321" in html(missing)
    assert Principal.objects.filter(account_id=OTHER_ACCOUNT).count() == 1
