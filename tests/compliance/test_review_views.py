"""The least-privilege review in the dashboard: the access review page (allowed against
used, generated policy, diff, apply after a preview), the Preview step of the key
policy and inline policy forms (gains and losses, findings, a malformed policy as an
inline error with nothing saved), the external-access page, and who may see them."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils.html import escape

from audit.models import AuditEvent
from keys import services as key_services
from keys.models import Key
from policies.models import Grant, IdentityPolicy
from policies.services.grant_requests import grant_request_create
from tests import dashboard_fixtures
from tests.conftest import OTHER_ACCOUNT, Persona
from tests.dashboard_fixtures import DashboardUser
from tests.factories import PrincipalFactory
from tests.policies.test_grant_requests_views import caller_of

make_dashboard_user = dashboard_fixtures.make_dashboard_user
signed_in = dashboard_fixtures.signed_in
viewer_user = dashboard_fixtures.viewer_user
key_admin_user = dashboard_fixtures.key_admin_user
HX = {"HTTP_HX_REQUEST": "true"}
BROAD = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})


def html(response: Any) -> str:
    assert response.status_code == 200, (response.status_code, response.content[:300])
    return response.content.decode()


@pytest.fixture
def app(make_persona: Callable[..., Persona], make_key: Callable[..., Key]) -> dict[str, Any]:
    key = make_key(description="payroll")
    app = make_persona("app", policy=BROAD)
    key_services.key_encrypt(caller=app.caller(), key=key, plaintext=b"x", context={"purpose": "payroll"})
    return {"persona": app, "key": key}


@pytest.fixture
def admin(make_dashboard_user: Callable[..., DashboardUser]) -> DashboardUser:
    return make_dashboard_user("ada", "administrator")


def test_it_shows_the_access_review_with_the_generated_policy_and_the_diff(
    app: dict[str, Any], viewer_user: DashboardUser, signed_in: Callable[..., Client]
) -> None:
    principal, key = app["persona"].principal, app["key"]
    client = signed_in(viewer_user)
    page = html(client.get(f"/compliance/principals/{principal.pk}/access-review/"))
    assert f'data-key="{key.id}"' in page
    generated = page.split('id="access-review-policy">')[1].split("</pre>")[0]
    policy = json.loads(generated.replace("&quot;", '"'))
    (statement,) = policy["Statement"]
    assert statement["Action"] == "kms:Encrypt" and statement["Resource"] == key.arn
    assert statement["Condition"] == {"StringEquals": {"kms:EncryptionContext:purpose": "payroll"}}
    assert 'id="access-review-diff"' in page and "+++ generated" in page
    # A viewer may read the review but not apply it.
    assert 'id="access-review-apply"' not in page
    # Linked from the principal's page and from the Compliance page.
    assert f"/compliance/principals/{principal.pk}/access-review/" in html(client.get(f"/principals/{principal.pk}/"))
    assert f"/compliance/principals/{principal.pk}/access-review/" in html(client.get("/compliance/"))
    assert html(client.get(f"/compliance/principals/{principal.pk}/access-review/?days=0")).count("errorlist") == 1


def test_it_applies_the_generated_policy_after_a_preview(
    app: dict[str, Any], admin: DashboardUser, signed_in: Callable[..., Client]
) -> None:
    principal, key = app["persona"].principal, app["key"]
    client = signed_in(admin)
    page = html(client.get(f"/compliance/principals/{principal.pk}/access-review/"))
    assert 'id="access-review-apply"' in page
    (name,) = principal.inline_policies.values_list("name", flat=True)
    assert f'name="name" value="{name}"' in page  # its one inline policy is the one to replace
    document = json.loads(page.split('id="access-review-policy">')[1].split("</pre>")[0].replace("&quot;", '"'))
    text = json.dumps(document, indent=2)
    preview = html(
        client.post(
            f"/compliance/previews/principals/{principal.pk}/",
            {"name": name, "document": text, "apply": "1"},
            **HX,
        )
    )
    assert "<html" not in preview and 'id="policy-preview-losses"' in preview
    assert 'id="policy-preview-narrowed"' in preview  # Encrypt stays, under the context condition
    assert "iam-policy-blocked-kms-actions" in preview  # the KMS.1 finding it resolves
    assert IdentityPolicy.objects.get(principal=principal, name=name).document == BROAD  # nothing saved yet
    form = preview.split('id="policy-preview-apply"')[1]
    assert f'value="{name}"' in form and escape(text) in form
    response = client.post(f"/principals/{principal.pk}/policies/", {"name": name, "document": text})
    assert response.status_code == 302
    assert IdentityPolicy.objects.get(principal=principal, name=name).document == text
    assert key.arn in text


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"Statement": [{"Effect": "Maybe", "Action": "kms:*", "Resource": "*"}]}), "Maybe"),
    ],
)
def test_it_shows_a_malformed_policy_inline_and_saves_nothing(
    app: dict[str, Any], admin: DashboardUser, signed_in: Callable[..., Client], document: str, says: str
) -> None:
    principal, key = app["persona"].principal, app["key"]
    client = signed_in(admin)
    before_policy = Key.objects.get(pk=key.pk).policy
    part = html(client.post(f"/compliance/previews/keys/{key.id}/", {"policy": document}, **HX))
    assert 'id="policy-preview-error"' in part and says in part and "Nothing was saved." in part
    part = html(
        client.post(f"/compliance/previews/principals/{principal.pk}/", {"name": "x", "document": document}, **HX)
    )
    assert 'id="policy-preview-error"' in part and 'id="policy-preview-apply"' not in part
    assert Key.objects.get(pk=key.pk).policy == before_policy
    assert not principal.inline_policies.filter(name="x").exists()


def test_it_previews_a_key_policy_from_the_key_page(
    app: dict[str, Any], key_admin_user: DashboardUser, signed_in: Callable[..., Client]
) -> None:
    key = app["key"]
    client = signed_in(key_admin_user)
    page = html(client.get(f"/keys/{key.id}/"))
    assert f'hx-post="/compliance/previews/keys/{key.id}/"' in page and 'id="key-policy-preview"' in page
    partner = f"arn:aws:iam::{OTHER_ACCOUNT}:root"
    policy = json.loads(key.policy)
    policy["Statement"].append(
        {"Sid": "Partner", "Effect": "Allow", "Principal": {"AWS": partner}, "Action": "kms:Decrypt", "Resource": "*"}
    )
    part = html(client.post(f"/compliance/previews/keys/{key.id}/", {"policy": json.dumps(policy)}, **HX))
    gains = part.split('id="policy-preview-gains"')[1].split("</table>")[0]
    assert f'data-principal="{partner}"' in gains and "kms:Decrypt" in gains
    assert "kms-key-policy-no-public-access" in part.split('id="policy-preview-created"')[1]
    assert Key.objects.get(pk=key.pk).policy == key.policy
    event = AuditEvent.objects.filter(event_name="PreviewPolicyChange").latest("id")
    assert event.origin == "dashboard" and event.error_code == ""


def test_it_lists_external_access(
    make_key: Callable[..., Key], key_admin: Persona, viewer_user: DashboardUser, signed_in: Callable[..., Client]
) -> None:
    key = make_key(description="shared")
    policy = json.loads(key.policy)
    policy["Statement"].append(
        {"Sid": "Everyone", "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}
    )
    key_services.key_put_policy(caller=key_admin.caller(), key=key, policy=json.dumps(policy))
    page = html(signed_in(viewer_user).get("/compliance/external-access/"))
    row = page.split(f'data-key="{key.id}" data-principal="*"')[1].split("</tr>")[0]
    assert "everyone" in row and "statement &#x27;Everyone&#x27;" in row and "kms:Decrypt" in row


def test_a_user_without_a_role_is_refused(
    app: dict[str, Any], make_dashboard_user: Callable[..., DashboardUser], signed_in: Callable[..., Client]
) -> None:
    principal, key = app["persona"].principal, app["key"]
    client = signed_in(make_dashboard_user("nobody"))
    page = client.get(f"/compliance/principals/{principal.pk}/access-review/")
    assert 'id="access-review-policy"' not in page.content.decode()
    part = client.post(f"/compliance/previews/keys/{key.id}/", {"policy": BROAD}, **HX).content.decode()
    assert 'id="policy-preview-gains"' not in part
    refused = AuditEvent.objects.filter(event_name__in=["GetAccessReview", "PreviewPolicyChange"])
    assert [e.error_code for e in refused.order_by("id")] == ["AccessDeniedException"] * 2


def test_it_previews_inline_and_managed_policies_from_the_principals_pages(
    app: dict[str, Any], admin: DashboardUser, signed_in: Callable[..., Client]
) -> None:
    from kmsweb.lib.caller import Caller
    from policies import services as policy_services

    principal, key = app["persona"].principal, app["key"]
    client = signed_in(admin)
    page = html(client.get(f"/principals/{principal.pk}/"))
    assert f'hx-post="/compliance/previews/principals/{principal.pk}/"' in page and 'id="inline-policy-preview"' in page
    listing = html(client.get("/principals/"))
    assert 'hx-post="/compliance/previews/policies/"' in listing and 'id="managed-policy-preview"' in listing
    system = Caller.system("tests", account_id=principal.account_id)
    managed = policy_services.identity_policy_put(
        caller=system, account=principal.account, name="Readers", document=BROAD
    )
    policy_services.policy_attach(caller=system, principal=principal, policy=managed)
    policy_services.identity_policy_delete(caller=system, policy=principal.inline_policies.get())
    narrower = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}]}
    )
    part = html(client.post("/compliance/previews/policies/", {"name": "Readers", "document": narrower}, **HX))
    losses = part.split('id="policy-preview-losses"')[1].split("</table>")[0]
    assert f'data-principal="{principal.arn}"' in losses and "kms:Decrypt" in losses
    assert IdentityPolicy.objects.get(pk=managed.pk).document == BROAD
    bad = html(client.post("/compliance/previews/policies/", {"name": "Readers", "document": "{"}, **HX))
    assert 'id="policy-preview-error"' in bad
    assert key.arn in losses or str(key.id) in losses


def test_it_generates_no_policy_for_a_principal_that_used_nothing(
    make_persona: Callable[..., Persona], admin: DashboardUser, signed_in: Callable[..., Client]
) -> None:
    idle = make_persona("idle", policy=BROAD).principal
    page = html(signed_in(admin).get(f"/compliance/principals/{idle.pk}/access-review/"))
    assert 'id="access-review-note"' in page and "made no successful KMS call" in page
    assert 'id="access-review-policy"' not in page and 'id="access-review-apply"' not in page


def test_an_approver_previews_a_grant_request_before_deciding(
    make_key: Callable[..., Key],
    key_admin_user: DashboardUser,
    make_dashboard_user: Callable[..., DashboardUser],
    signed_in: Callable[..., Client],
) -> None:
    key = make_key(description="invoices")
    grantee = PrincipalFactory(account=key_admin_user.principal.account, name="billing-app", type="role")
    request = grant_request_create(
        caller=caller_of(key_admin_user, "key-admin"),
        key=key,
        grantee_principal=grantee.arn,
        operations=["Decrypt"],
        constraints={"EncryptionContextSubset": {"app": "billing"}},
        justification="The billing application decrypts invoices.",
        duration=timedelta(days=30),
    )
    approver = signed_in(make_dashboard_user("april", "approver"))
    page = html(approver.get(f"/grant-requests/{request.pk}/"))
    assert f'hx-post="/compliance/previews/grant-requests/{request.pk}/"' in page

    part = html(approver.post(f"/compliance/previews/grant-requests/{request.pk}/", **HX))
    gains = part.split('id="policy-preview-gains"')[1].split("</table>")[0]
    assert f'data-principal="{grantee.arn}"' in gains and "kms:Decrypt" in gains
    assert not Grant.objects.filter(key=key).exists()
    event = AuditEvent.objects.filter(event_name="PreviewPolicyChange").latest("id")
    assert event.request_parameters["changeType"] == "CreateGrant" and event.error_code == ""

    # A request the caller may not see (a viewer is neither its requester nor an approver) is not previewed.
    viewer = signed_in(make_dashboard_user("vic", "viewer"))
    part = viewer.post(f"/compliance/previews/grant-requests/{request.pk}/", **HX).content.decode()
    assert 'id="policy-preview-gains"' not in part and "billing-app" not in part
