"""A grant request in a real browser: a key administrator asks on the key page, an approver approves.

Two browser contexts (two people, two sessions) against one live server;
both fail on any console error (CSP violations included).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from keys.models import Key
from policies.models import Grant, Principal
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser
from tests.e2e.test_dashboard import screenshot, sign_in
from tests.factories import PrincipalFactory

pytestmark = pytest.mark.usefixtures("transactional_db")


@pytest.fixture
def second_page(browser: Any, live_server: Any) -> Iterator[Any]:
    """Another person's browser: a context of its own, also failing on console errors."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1440, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not [e for e in errors if "status of 4" not in e], f"browser console errors: {errors}"


def settle(tab: Any, *, chart: bool = False) -> None:
    """Wait for the page's own requests (the sidebar badge, the usage chart) to finish.

    The live server shares one in-memory SQLite connection between its
    request threads and this test's thread; queries from both at once can
    stall, so the test touches the database only when the browser is idle.
    """
    expect(tab.locator("#nav-grant-requests-count[data-waiting]")).to_have_count(1)
    if chart:
        expect(tab.locator("canvas[data-rendered=true]")).to_have_count(1)


@pytest.fixture
def key(make_key: Callable[..., Key]) -> Key:
    return make_key(description="invoice archive", alias="alias/invoices")


@pytest.fixture
def grantee(key_admin: Persona) -> Principal:
    return PrincipalFactory(account=key_admin.principal.account, name="billing-app", type="role")


def test_it_requests_on_the_key_page_and_another_user_approves(
    page: Any,
    second_page: Any,
    key_admin_user: DashboardUser,
    approver_user: DashboardUser,
    key: Key,
    grantee: Principal,
) -> None:
    # The key administrator asks, from the key page.
    sign_in(page, key_admin_user)
    settle(page, chart=True)
    page.goto(f"/keys/{key.id}/")
    settle(page, chart=True)
    expect(page.locator("#key-grants-table")).to_contain_text("This key has no grants.")
    expect(page.locator("#key-grant-approvals")).to_have_attribute("data-required", "1")
    page.click("#key-request-grant")
    expect(page.locator("h1")).to_have_text("Request a grant")
    page.fill("#id_grantee_principal", "arn:aws:iam::111122223333:role/billing-ap")  # a typo
    page.check("input[name=operations][value=Decrypt]")
    page.check("input[name=operations][value=GenerateDataKey]")
    page.select_option("#id_constraint", "EncryptionContextSubset")
    page.fill("#id_encryption_context", "app=billing")
    page.fill("#id_justification", "Billing exports invoices nightly (CHG-7).")
    page.fill("#id_duration", "8")
    page.click("#grant-request-submit")
    # The service's refusal is shown at the field, and nothing typed is lost.
    expect(page.locator("#grant-request-form .errorlist")).to_contain_text("does not name an existing principal")
    expect(page.locator("input[name=operations][value=GenerateDataKey]")).to_be_checked()
    expect(page.locator("#id_justification")).to_have_value("Billing exports invoices nightly (CHG-7).")
    expect(page.locator("#id_encryption_context")).to_have_value("app=billing")
    settle(page)
    page.fill("#id_grantee_principal", grantee.arn)
    screenshot(page, "grant-request-form")
    page.click("#grant-request-submit")

    expect(page).to_have_url(re.compile(r"/grant-requests/\d+/$"))
    request_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    expect(page.locator("#grant-request-state")).to_have_text("Pending")
    expect(page.locator("#grant-request-decision")).to_contain_text("You asked for this grant")
    expect(page.locator("#grant-request-approve")).to_have_count(0)
    settle(page)
    expect(page.locator("#nav-grant-requests-count")).to_have_text("1")

    # The approver finds it in the inbox, sees what it would add, and approves.
    sign_in(second_page, approver_user)
    settle(second_page, chart=True)
    expect(second_page.locator("#nav-grant-requests-count")).to_have_text("1")
    second_page.click("#nav-grant-requests")
    settle(second_page)
    expect(second_page.locator("#grant-requests-tabs a.active")).to_contain_text("Pending")
    second_page.click(f"#grant-requests-table a[href='/grant-requests/{request_id}/']")
    settle(second_page)
    expect(second_page.locator("#grant-request-preview tr[data-operation=Decrypt]")).to_have_count(1)
    expect(second_page.locator("#grant-request-summary")).to_contain_text("CHG-7")
    second_page.fill("#id_comment", "Checked CHG-7 with the billing team.")
    screenshot(second_page, "grant-request-detail")
    second_page.click("#grant-request-approve")

    expect(second_page.locator("#grant-request-state")).to_have_text("Approved")
    expect(second_page.locator("#grant-request-timeline li[data-kind=grant-created]")).to_have_count(1)
    expect(second_page.locator("#grant-request-timeline")).to_contain_text("Checked CHG-7 with the billing team.")
    # The badge listened for the change and emptied itself.
    expect(second_page.locator("#nav-grant-requests-count[data-waiting='0']")).to_have_text("")
    grant = Grant.objects.get()
    assert grant.grantee_principal == grantee.arn and grant.created_by == approver_user.arn

    # The grant is on the key page, for both of them.
    for tab in (second_page, page):
        tab.goto(f"/keys/{key.id}/")
        settle(tab, chart=True)
        row = tab.locator(f"#key-grants-table tr[data-grant-id='{grant.grant_id}']")
        expect(row).to_contain_text(grantee.arn)
        expect(row).to_contain_text("Decrypt, GenerateDataKey")
        expect(row).to_contain_text("app=billing")

    # The requester sees the outcome, and can no longer withdraw.
    page.goto(f"/grant-requests/{request_id}/")
    settle(page)
    expect(page.locator("#grant-request-state")).to_have_text("Approved")
    expect(page.locator("#grant-request-withdraw")).to_have_count(0)
