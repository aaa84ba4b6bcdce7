"""Compliance in a real browser: an auditor opens the Compliance page, filters the
findings (the URL follows), and opens a finding; an approver suppresses it,
first without a justification (inline error), then with one."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from compliance.models import Finding, FindingStatus
from compliance.services import compliance_evaluate
from keys.models import Key
from kmsweb.lib.caller import Caller
from tests import dashboard_fixtures
from tests.dashboard_fixtures import DashboardUser
from tests.e2e.test_dashboard import screenshot, sign_in

approver_user = dashboard_fixtures.approver_user
auditor_user = dashboard_fixtures.auditor_user
pytestmark = pytest.mark.usefixtures("transactional_db")


def test_an_auditor_filters_and_opens_a_finding_and_an_approver_suppresses_it(
    page: Any, auditor_user: DashboardUser, approver_user: DashboardUser, make_key: Callable[..., Key]
) -> None:
    key = make_key(description="card vault")
    compliance_evaluate(caller=Caller.system("evaluate_compliance"), now=timezone.now())
    finding = Finding.objects.get(rule_id="kms-rotation-enabled", resource_id=key.arn)

    sign_in(page, auditor_user)
    page.click("#nav-compliance")
    expect(page.locator("h1")).to_have_text("Compliance")
    expect(page.locator("#compliance-frameworks")).to_contain_text("Security Hub")
    expect(page.locator(f'#compliance-rows tr[data-finding="{finding.pk}"]')).to_be_visible()
    page.select_option("#compliance-filters select[name=severity]", "CRITICAL")
    expect(page).to_have_url(re.compile(r"/compliance/\?.*severity=CRITICAL"))
    expect(page.locator("#compliance-rows")).to_contain_text("No finding matches.")
    page.select_option("#compliance-filters select[name=severity]", "MEDIUM")
    page.select_option("#compliance-filters select[name=rule]", "kms-rotation-enabled")
    expect(page).to_have_url(re.compile(r"rule=kms-rotation-enabled"))
    row = page.locator(f'#compliance-rows tr[data-finding="{finding.pk}"]')
    expect(row).to_be_visible()
    screenshot(page, "compliance")
    row.locator("a").first.click()
    expect(page).to_have_url(re.compile(rf"/compliance/findings/{finding.pk}/$"))
    expect(page.locator("#finding-evidence")).to_contain_text('"rotationEnabled": false')
    expect(page.locator("#finding-remediation")).to_contain_text("EnableKeyRotation")
    expect(page.locator("#finding-suppress-form")).to_have_count(0)  # auditors cannot suppress
    page.click(".who button[type=submit]")  # sign out

    sign_in(page, approver_user)
    page.goto(f"/compliance/findings/{finding.pk}/")
    until = (timezone.now() + timedelta(days=14)).date().isoformat()
    page.fill("#id_until", until)
    page.fill("#id_justification", "   ")  # passes the browser's "required", not the server's check
    page.click("#finding-suppress")
    expect(page.locator("#row-justification .errorlist")).to_contain_text("A suppression needs a justification.")
    expect(page.locator("#id_until")).to_have_value(until)
    assert Finding.objects.get(pk=finding.pk).status == FindingStatus.NON_COMPLIANT

    page.fill("#id_justification", "Rotation is done by the HSM team (ticket SEC-42)")
    page.click("#finding-suppress")
    expect(page.locator("#finding-status")).to_have_text("Suppressed")
    expect(page.locator("#finding-history")).to_contain_text("Rotation is done by the HSM team")
    screenshot(page, "compliance-finding")
    f = Finding.objects.get(pk=finding.pk)
    assert f.status == FindingStatus.SUPPRESSED and f.suppressed_by == approver_user.arn
