"""The Compliance pages: the permission matrix, filters and the HTMX path, the
finding detail, suppression by an approver (inline errors, input kept), a
viewer's forged POST refused and audited, and the key page's panel."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from compliance.models import Finding, FindingStatus
from compliance.services import compliance_evaluate
from keys import services as key_services
from keys.models import Key
from kmsweb.lib.caller import Caller
from tests import dashboard_fixtures
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser

approver_user = dashboard_fixtures.approver_user
auditor_user = dashboard_fixtures.auditor_user
key_admin_user = dashboard_fixtures.key_admin_user
make_dashboard_user = dashboard_fixtures.make_dashboard_user
signed_in = dashboard_fixtures.signed_in
viewer_user = dashboard_fixtures.viewer_user
HX = {"HTTP_HX_REQUEST": "true"}
ROTATION = "kms-rotation-enabled"


def html(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


@pytest.fixture
def key(make_key: Callable[..., Key]) -> Key:
    made = make_key(description="payments")
    compliance_evaluate(caller=Caller.system("evaluate_compliance"), now=timezone.now())
    return made


@pytest.fixture
def open_finding(key: Key) -> Finding:
    return Finding.objects.get(rule_id=ROTATION, resource_id=key.arn)


def future(days: int = 10) -> str:
    return (timezone.now() + timedelta(days=days)).date().isoformat()


@pytest.mark.parametrize("who", ["viewer_user", "auditor_user", "approver_user", "key_admin_user"])
def test_it_shows_the_compliance_page_to_every_role(
    who: str, request: Any, signed_in: Callable[..., Client], open_finding: Finding
) -> None:
    client = signed_in(request.getfixturevalue(who))
    page = html(client.get("/compliance/"))
    assert 'id="nav-compliance"' in page and 'id="compliance-frameworks"' in page
    assert f'data-finding="{open_finding.pk}"' in page
    detail = html(client.get(f"/compliance/findings/{open_finding.pk}/"))
    assert "EnableKeyRotation" in detail and "rotationEnabled" in detail
    can_suppress = who == "approver_user"
    assert ('id="finding-suppress-form"' in detail) is can_suppress


def test_it_sends_anonymous_visitors_to_sign_in(client: Client, open_finding: Finding) -> None:
    for url in (
        "/compliance/",
        f"/compliance/findings/{open_finding.pk}/",
        f"/compliance/keys/{open_finding.key_id}/panel/",
    ):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    response = client.post(
        f"/compliance/findings/{open_finding.pk}/suppress/", {"justification": "x", "until": future()}
    )
    assert response.status_code == 302
    assert Finding.objects.get(pk=open_finding.pk).status == FindingStatus.NON_COMPLIANT


def test_a_user_without_a_role_is_refused(
    make_dashboard_user: Callable[..., DashboardUser], signed_in: Callable[..., Client], open_finding: Finding
) -> None:
    client = signed_in(make_dashboard_user("nobody"))
    response = client.get("/compliance/")
    assert response.status_code in (302, 200)
    assert f'data-finding="{open_finding.pk}"' not in response.content.decode()
    assert AuditEvent.objects.filter(event_name="ListFindings", error_code="AccessDeniedException").exists()


def test_it_filters_with_htmx_and_returns_the_table_only(
    viewer_user: DashboardUser, signed_in: Callable[..., Client], open_finding: Finding
) -> None:
    client = signed_in(viewer_user)
    part = html(client.get(f"/compliance/?severity=MEDIUM&rule={ROTATION}", **HX))
    assert "<html" not in part and f'data-finding="{open_finding.pk}"' in part
    none = html(client.get("/compliance/?severity=CRITICAL", **HX))
    assert f'data-finding="{open_finding.pk}"' not in none and "No finding matches." in none
    by_key = html(client.get(f"/compliance/?key={open_finding.key_id}&status=any", **HX))
    assert f'data-finding="{open_finding.pk}"' in by_key
    other_key = html(client.get("/compliance/?key=00000000-0000-0000-0000-000000000000", **HX))
    assert f'data-finding="{open_finding.pk}"' not in other_key
    # Malformed filters fall back to defaults, never a 500.
    assert html(client.get("/compliance/?severity=%00&status=nope&page=x&per_page=7&key=%00"))


def test_it_lists_the_page_under_a_bounded_number_of_queries(
    viewer_user: DashboardUser,
    signed_in: Callable[..., Client],
    open_finding: Finding,
    django_assert_max_num_queries: Any,
) -> None:
    client = signed_in(viewer_user)
    with django_assert_max_num_queries(25):
        html(client.get("/compliance/?status=any"))


def test_an_approver_suppresses_with_a_justification(
    approver_user: DashboardUser, signed_in: Callable[..., Client], open_finding: Finding
) -> None:
    client = signed_in(approver_user)
    url = f"/compliance/findings/{open_finding.pk}/suppress/"
    response = client.post(url, {"justification": "Rotation handled by the HSM team", "until": future()}, **HX)
    assert response.status_code == 200 and response["HX-Redirect"] == f"/compliance/findings/{open_finding.pk}/"
    f = Finding.objects.get(pk=open_finding.pk)
    assert f.status == FindingStatus.SUPPRESSED and f.suppressed_by == approver_user.arn
    detail = html(client.get(f"/compliance/findings/{open_finding.pk}/"))
    assert "Rotation handled by the HSM team" in detail and 'id="finding-unsuppress"' in detail
    response = client.post(f"/compliance/findings/{open_finding.pk}/unsuppress/", **HX)
    assert Finding.objects.get(pk=open_finding.pk).status == FindingStatus.NON_COMPLIANT


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"justification": "", "until": "2099-01-01"}, "A suppression needs a justification."),
        ({"justification": "   ", "until": "2099-01-01"}, "A suppression needs a justification."),
        ({"justification": "accepted", "until": ""}, "A suppression needs an expiry date."),
        ({"justification": "accepted", "until": "2020-01-01"}, "The expiry must be in the future."),
        ({"justification": "accepted", "until": "not-a-date"}, "Enter a date (YYYY-MM-DD)."),
        ({"justification": "accepted", "until": "2099-01-01"}, "A suppression can last at most one year"),
    ],
)
def test_it_shows_bad_suppressions_inline_and_keeps_the_input(
    approver_user: DashboardUser,
    signed_in: Callable[..., Client],
    open_finding: Finding,
    data: dict[str, str],
    error: str,
) -> None:
    client = signed_in(approver_user)
    part = html(client.post(f"/compliance/findings/{open_finding.pk}/suppress/", data, **HX))
    assert "<html" not in part and error in part
    if data["justification"].strip():
        assert data["justification"] in part
    assert Finding.objects.get(pk=open_finding.pk).status == FindingStatus.NON_COMPLIANT


def test_a_viewers_forged_suppression_is_refused_and_audited(
    viewer_user: DashboardUser, signed_in: Callable[..., Client], open_finding: Finding
) -> None:
    client = signed_in(viewer_user)
    response = client.post(
        f"/compliance/findings/{open_finding.pk}/suppress/", {"justification": "me", "until": future()}, **HX
    )
    assert response.status_code == 200 and "AccessDeniedException" in response.content.decode()
    assert Finding.objects.get(pk=open_finding.pk).status == FindingStatus.NON_COMPLIANT
    (event,) = AuditEvent.objects.filter(event_name="SuppressFinding")
    assert event.error_code == "AccessDeniedException" and event.user_identity["arn"] == viewer_user.arn


def test_another_accounts_finding_is_not_found(
    approver_user: DashboardUser, signed_in: Callable[..., Client], outsider: Persona
) -> None:
    theirs = key_services.key_create(caller=outsider.caller())
    compliance_evaluate(caller=Caller.system("evaluate_compliance"), now=timezone.now())
    f = Finding.objects.get(rule_id=ROTATION, resource_id=theirs.arn)
    client = signed_in(approver_user)
    assert client.get(f"/compliance/findings/{f.pk}/").status_code == 404
    assert client.get("/compliance/findings/not-a-number/").status_code == 404
    client.post(f"/compliance/findings/{f.pk}/suppress/", {"justification": "x", "until": future()}, **HX)
    assert Finding.objects.get(pk=f.pk).status == FindingStatus.NON_COMPLIANT


def test_the_key_page_loads_its_compliance_panel(
    viewer_user: DashboardUser, signed_in: Callable[..., Client], open_finding: Finding
) -> None:
    client = signed_in(viewer_user)
    page = html(client.get(f"/keys/{open_finding.key_id}/"))
    assert f'hx-get="/compliance/keys/{open_finding.key_id}/panel/"' in page
    panel = html(client.get(f"/compliance/keys/{open_finding.key_id}/panel/", **HX))
    assert f'data-finding="{open_finding.pk}"' in panel and "<html" not in panel
    empty = html(client.get("/compliance/keys/00000000-0000-0000-0000-000000000000/panel/", **HX))
    assert "No open compliance finding" in empty


def test_the_principal_page_loads_its_compliance_panel(
    viewer_user: DashboardUser, signed_in: Callable[..., Client], key_admin: Persona, key: Key
) -> None:
    # key-admin's kms:* on every key is a finding about that principal (KMS.1/KMS.2).
    f = Finding.objects.get(rule_id="iam-policy-blocked-kms-actions", resource_id=key_admin.principal.arn)
    client = signed_in(viewer_user)
    page = html(client.get(f"/principals/{key_admin.principal.pk}/"))
    assert f'hx-get="/compliance/principals/{key_admin.principal.pk}/panel/"' in page
    panel = html(client.get(f"/compliance/principals/{key_admin.principal.pk}/panel/", **HX))
    assert f'data-finding="{f.pk}"' in panel and "<html" not in panel
    assert client.get("/compliance/principals/999999/panel/", **HX).status_code == 200  # NotFound as a flash
