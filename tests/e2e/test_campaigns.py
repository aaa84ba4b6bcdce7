"""Re-certification campaigns and the compliance report in a real browser: a key's owner
completes a campaign item (a confirmation without comment refused inline, then
confirmed; the progress bar follows); an auditor sees the trend chart drawn
with the data's total and downloads the signed report, which verifies."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from audit import exports
from compliance.campaigns import campaign_start
from compliance.models import CampaignItem, Finding, ItemStatus
from compliance.services import compliance_evaluate
from keys.models import Key
from keys.services.tags import key_tag
from kmsweb.lib.caller import Caller
from policies.services.grants import grant_create
from tests.compliance.test_campaigns import caller_of
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser
from tests.e2e.test_dashboard import screenshot, sign_in, wait_for_chart

pytestmark = pytest.mark.usefixtures("transactional_db")


def test_a_reviewer_completes_a_campaign_item(
    page: Any,
    make_dashboard_user: Callable[..., DashboardUser],
    key_admin: Persona,
    make_key: Callable[..., Key],
) -> None:
    olga = make_dashboard_user("olga", "viewer")
    ada = make_dashboard_user("ada", "administrator")
    key = make_key(description="card vault")
    key_tag(caller=key_admin.caller(), key=key, tags=[{"TagKey": "owner", "TagValue": "olga"}])
    grant_create(caller=key_admin.caller(), key=key, grantee_principal=key_admin.principal.arn, operations=["Decrypt"])
    campaign = campaign_start(caller=caller_of(ada), name="Q2 access review")
    item = CampaignItem.objects.get(campaign=campaign, kind="grant")
    total = CampaignItem.objects.filter(campaign=campaign).count()

    sign_in(page, olga)
    page.click("#nav-campaigns")
    expect(page.locator("#campaigns-table")).to_contain_text("Q2 access review")
    page.click("#campaigns-table >> text=Q2 access review")
    page.check("input[name=mine]")
    page.click("form.filters button[type=submit]")
    row = page.locator(f"#campaign-item-{item.pk}")
    expect(page.locator("#campaign-items tbody tr")).to_have_count(1)
    row.locator("button[value=confirm]").click()
    expect(row.locator(".error")).to_contain_text("Confirming needs a comment")
    assert CampaignItem.objects.get(pk=item.pk).status == ItemStatus.PENDING
    row.locator("textarea").fill("Card vault decrypts settlements nightly (OPS-12).")
    row.locator("button[value=confirm]").click()
    expect(row).to_have_attribute("data-status", "CONFIRMED")
    expect(row).to_contain_text("Card vault decrypts settlements nightly")
    expect(page.locator("#campaign-progress-text")).to_contain_text(f"1 of {total} decided")
    screenshot(page, "campaign")
    done = CampaignItem.objects.get(pk=item.pk)
    assert done.status == ItemStatus.CONFIRMED and done.decided_by == olga.arn


def test_an_auditor_sees_the_trend_and_exports_the_signed_report(
    page: Any, auditor_user: DashboardUser, make_key: Callable[..., Key], tmp_path: Path
) -> None:
    make_key(description="card vault")
    compliance_evaluate(caller=Caller.system("evaluate_compliance"), now=timezone.now())
    open_now = Finding.objects.open().count()

    sign_in(page, auditor_user)
    page.click("#nav-compliance")
    assert wait_for_chart(page, "compliance-trend") == open_now > 0
    expect(page.locator('[data-chart-total="compliance-trend"]')).to_contain_text(f"{open_now} open finding")
    with page.expect_download() as info:
        page.click("#compliance-report")
    zipped = tmp_path / "report.zip"
    info.value.save_as(zipped)
    bundle = tmp_path / "bundle"
    zipfile.ZipFile(zipped).extractall(bundle)
    check = exports.verify_bundle(bundle)
    assert check.ok, check.problems
    assert check.manifest["requestedBy"] == auditor_user.arn
    assert (bundle / "report.pdf").read_bytes().startswith(b"%PDF")
