"""The principal page's MFA device and trust policy panels.

Administrators enrol and remove API principals' virtual MFA devices (the QR
code and secret shown once) and edit roles' trust policies; anyone else's
forged POST is refused by ``authorize`` and audited, and changes nothing.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from audit.models import AuditEvent
from policies.models import MfaDevice, Principal
from tests.dashboard_fixtures import DashboardUser
from tests.factories import AccountFactory, PrincipalFactory

pytestmark = pytest.mark.django_db

A = settings.KMSWEB_ACCOUNT_ID
HX = {"HTTP_HX_REQUEST": "true"}
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{A}:root"}, "Action": "sts:AssumeRole"}],
    }
)


@pytest.fixture
def app(db: None) -> Principal:
    return PrincipalFactory(account=AccountFactory(id=A), name="ci-bot", type="user")


@pytest.fixture
def role(app: Principal) -> Principal:
    return PrincipalFactory(account=app.account, name="deployer", type="role")


@pytest.fixture
def admin_client(make_dashboard_user: Callable[..., DashboardUser], signed_in: Callable[..., Client]) -> Client:
    return signed_in(make_dashboard_user("ada", "administrator"))


def test_it_enrols_an_mfa_device_with_a_qr_code_shown_once(admin_client: Client, app: Principal) -> None:
    response = admin_client.post(f"/principals/{app.pk}/mfa-devices/", {"name": "ci-bot-phone"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    assert f"arn:aws:iam::{A}:mfa/ci-bot-phone" in page
    assert 'src="data:image/svg+xml;base64,' in page
    secret = re.search(r'<code id="new-mfa-secret">([A-Z2-7]+)</code>', page).group(1)
    device = MfaDevice.objects.get(principal=app)
    raw = base64.b32decode(secret + "=" * (-len(secret) % 8))
    assert raw not in bytes(device.secret_ciphertext)
    event = AuditEvent.objects.get(event_name="EnableMFADevice", event_source="iam.amazonaws.com")
    assert event.error_code == "" and event.origin == "dashboard"
    assert secret not in json.dumps([event.request_parameters, event.response_elements])

    again = admin_client.get(f"/principals/{app.pk}/").content.decode()
    assert f"arn:aws:iam::{A}:mfa/ci-bot-phone" in again and secret not in again

    # A bad name stays on the page with the reason; nothing is created.
    bad = admin_client.post(f"/principals/{app.pk}/mfa-devices/", {"name": "no spaces"})
    assert bad.status_code == 200 and "An MFA device name is" in bad.content.decode()
    assert MfaDevice.objects.count() == 1

    removed = admin_client.post(f"/principals/{app.pk}/mfa-devices/delete/", {"name": "ci-bot-phone"})
    assert removed.status_code == 302
    assert not MfaDevice.objects.exists()
    assert AuditEvent.objects.filter(event_name="DeactivateMFADevice", error_code="").count() == 1


def test_it_edits_a_roles_trust_policy_and_keeps_a_bad_one_inline(admin_client: Client, role: Principal) -> None:
    page = admin_client.get(f"/principals/{role.pk}/").content.decode()
    assert 'id="principal-trust-policy"' in page and 'id="principal-mfa-devices"' not in page
    bad = admin_client.post(f"/principals/{role.pk}/trust-policy/", {"document": '{"Statement": []}'})
    assert bad.status_code == 200
    assert "no statements" in bad.content.decode() and "{&quot;Statement&quot;: []}" in bad.content.decode()
    role.refresh_from_db()
    assert role.trust_policy == ""
    ok = admin_client.post(f"/principals/{role.pk}/trust-policy/", {"document": TRUST})
    assert ok.status_code == 302
    role.refresh_from_db()
    assert role.trust_policy == TRUST
    assert AuditEvent.objects.filter(event_name="UpdateAssumeRolePolicy", error_code="").count() == 1


@pytest.mark.parametrize("persona", ["viewer", "key-admin"])
def test_it_refuses_and_audits_forged_changes(
    make_dashboard_user: Callable[..., DashboardUser],
    signed_in: Callable[..., Client],
    app: Principal,
    role: Principal,
    persona: str,
) -> None:
    who = make_dashboard_user("mallory", persona)
    client = signed_in(who)
    page = client.get(f"/principals/{app.pk}/").content.decode()
    assert 'id="principal-mfa-devices"' in page and 'id="mfa-device-form"' not in page
    role_page = client.get(f"/principals/{role.pk}/").content.decode()
    assert 'id="principal-trust-policy"' in role_page and 'id="trust-policy-form"' not in role_page
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        (f"/principals/{app.pk}/mfa-devices/", {"name": "sneaky"}, "EnableMFADevice", "iam:EnableMFADevice"),
        (
            f"/principals/{role.pk}/trust-policy/",
            {"document": TRUST},
            "UpdateAssumeRolePolicy",
            "iam:UpdateAssumeRolePolicy",
        ),
    ]
    for url, form, event_name, action in cases:
        response = client.post(url, form, **HX)
        assert response.status_code == 200 and response["HX-Retarget"] == "#flash", url
        assert f"User: {who.arn} is not authorized to perform: {action}" in response.content.decode()
        denial = AuditEvent.objects.get(
            event_name=event_name, error_code="AccessDeniedException", event_source="iam.amazonaws.com"
        )
        assert denial.principal_arn == who.arn
    assert not MfaDevice.objects.exists()
    role.refresh_from_db()
    assert role.trust_policy == ""
