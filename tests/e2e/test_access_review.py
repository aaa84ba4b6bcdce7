"""The access review in a real browser: an administrator opens a principal's access
review from its page, sees the generated policy, previews a malformed edit (inline
error, nothing saved), previews the generated policy (HTMX) and applies it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from keys import services as key_services
from keys.models import Key
from policies.models import IdentityPolicy
from tests import dashboard_fixtures
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser
from tests.e2e.test_accessibility import serious_violations
from tests.e2e.test_dashboard import screenshot, sign_in

make_dashboard_user = dashboard_fixtures.make_dashboard_user
pytestmark = pytest.mark.usefixtures("transactional_db")
BROAD = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})


def test_an_administrator_reviews_previews_and_applies_a_least_privilege_policy(
    page: Any,
    make_dashboard_user: Callable[..., DashboardUser],
    make_persona: Callable[..., Persona],
    make_key: Callable[..., Key],
) -> None:
    key = make_key(description="payroll")
    app = make_persona("app", policy=BROAD)
    key_services.key_encrypt(caller=app.caller(), key=key, plaintext=b"x", context={"purpose": "payroll"})
    (name,) = app.principal.inline_policies.values_list("name", flat=True)

    sign_in(page, make_dashboard_user("ada", "administrator"))
    page.goto(f"/principals/{app.principal.pk}/")
    page.click("#principal-access-review")
    expect(page).to_have_url(re.compile(rf"/compliance/principals/{app.principal.pk}/access-review/$"))
    expect(page.locator(f'#access-review-keys tr[data-key="{key.id}"]')).to_contain_text("kms:Encrypt")
    generated = page.locator("#access-review-policy")
    expect(generated).to_contain_text(key.arn)
    expect(generated).to_contain_text('"kms:EncryptionContext:purpose": "payroll"')
    assert not serious_violations(page)

    document = page.locator("#access-review-document")
    good = document.input_value()
    document.fill('{"Statement": [')
    page.click("#access-review-apply button[type=submit]")
    expect(page.locator("#policy-preview-error")).to_contain_text("not valid JSON")
    expect(page.locator("#policy-preview-apply")).to_have_count(0)

    document.fill(good)
    page.click("#access-review-apply button[type=submit]")
    expect(page.locator("#policy-preview-narrowed")).to_contain_text("kms:Encrypt")
    expect(page.locator("#policy-preview-losses")).to_contain_text("kms:ScheduleKeyDeletion")
    expect(page.locator("#policy-preview-resolved")).to_contain_text("iam-policy-blocked-kms-actions")
    screenshot(page, "access-review")
    assert IdentityPolicy.objects.get(principal=app.principal, name=name).document == BROAD
    page.click("#policy-preview-apply button[type=submit]")
    expect(page).to_have_url(re.compile(rf"/principals/{app.principal.pk}/$"))
    assert json.loads(IdentityPolicy.objects.get(principal=app.principal, name=name).document) == json.loads(good)
