"""Every dashboard page fits its window: no sideways scrolling at 1,440 px nor at 390 px.

A page that is wider than the viewport hides its right edge (buttons, the end
of a table row) on a phone and makes a desktop reader scroll sideways; the
test walks every page, list and detail, at both widths and compares
``document.scrollingElement.scrollWidth`` with the viewport's width.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from audit.alarm_rules import AlarmSpec
from audit.models import AuditEvent
from audit.services.alarms import alarm_create
from compliance.campaigns import campaign_start
from keys import services
from keys.models import Key
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied
from policies.services.grant_requests import grant_request_create
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser
from tests.e2e.test_dashboard import inventory, screenshot, sign_in  # noqa: F401  (inventory is a fixture)
from tests.factories import PrincipalFactory
from tests.live_server import wait_idle_after
from tests.policies.test_grant_requests_views import caller_of

pytestmark = pytest.mark.usefixtures("transactional_db")

WIDTHS = {"desktop": (1440, 900), "phone": (390, 844)}


@pytest.fixture
def everything(outsider: Persona, key_admin_user: DashboardUser, inventory: list[Key]) -> dict[str, str]:  # noqa: F811
    """One of each thing a page shows: keys, events, an alarm, a grant request."""
    caller = caller_of(key_admin_user, "key-admin")
    grantee = PrincipalFactory(account=key_admin_user.principal.account, name="billing-app", type="role")
    request = grant_request_create(
        caller=caller,
        key=inventory[0],
        grantee_principal=grantee.arn,
        operations=["Decrypt", "Encrypt", "GenerateDataKey"],
        constraints=None,
        justification="The billing application decrypts invoices at night; " * 4,
        duration=timedelta(days=30),
    )
    alarm = alarm_create(
        caller=caller,
        spec=AlarmSpec(
            name="Denied decrypts on the invoice key",
            metric="denials",
            period=300,
            comparison="GreaterThanOrEqualToThreshold",
            threshold=1,
            key_id=str(inventory[0].id),
        ),
    )
    # A denial: the longest message and a policy decision's JSON on the event page.
    with pytest.raises(AccessDenied):
        services.key_encrypt(caller=outsider.caller(), key=inventory[0], plaintext=b"x")
    denial = AuditEvent.objects.get(error_code="AccessDeniedException", event_name="Encrypt")
    # An explicit deny whose statement has a long Sid: the decision's explanation is one long line.
    sid = "DenyEncryptionOutsideTheNightlyBillingWindowForEveryPrincipalOfEveryAccountUntilReviewed" * 3
    fenced = services.key_create(
        caller=caller,
        description="fenced",
        policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "Root",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{caller.account_id}:root"},
                        "Action": "kms:*",
                        "Resource": "*",
                    },
                    {"Sid": sid, "Effect": "Deny", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*"},
                ],
            }
        ),
    )
    with pytest.raises(AccessDenied):
        services.key_encrypt(caller=caller, key=fenced, plaintext=b"x")
    long_denial = AuditEvent.objects.get(
        error_code="AccessDeniedException", event_name="Encrypt", key_id=str(fenced.id)
    )
    # A record with a long unbroken value (a description without spaces, a long ARN).
    services.key_create(caller=caller, description="invoice-archive-" * 40)
    event = AuditEvent.objects.filter(event_name="CreateKey").order_by("-event_time", "-pk").first()
    campaign = campaign_start(caller=Caller.system("tests", account_id=grantee.account_id), name="Q2 access review")
    return {
        "key": str(inventory[0].id),
        "request": str(request.pk),
        "alarm": str(alarm.pk),
        "event": str(event.event_id),
        "denial": str(denial.event_id),
        "long_denial": str(long_denial.event_id),
        "principal": str(grantee.pk),
        "campaign": str(campaign.pk),
    }


def pages(ids: dict[str, str]) -> list[str]:
    return [
        "/",
        "/keys/",
        "/keys/?tab=aws",
        "/keys/new/",
        f"/keys/{ids['key']}/",
        "/usage/",
        "/audit/",
        f"/audit/events/{ids['event']}/",
        f"/audit/events/{ids['denial']}/",
        f"/audit/events/{ids['long_denial']}/",
        "/jobs/",
        "/jobs/alarms_evaluate/",
        "/alarms/",
        "/alarms/new/",
        f"/alarms/{ids['alarm']}/",
        "/principals/",
        f"/principals/{ids['principal']}/",
        "/grant-requests/",
        f"/grant-requests/new/?key={ids['key']}",
        f"/grant-requests/{ids['request']}/",
        "/compliance/campaigns/",
        f"/compliance/campaigns/{ids['campaign']}/",
    ]


OVERFLOW_JS = """() => {
  const root = document.scrollingElement;
  const over = (e) => e.getBoundingClientRect().right > root.clientWidth + 1;
  const wide = [...document.querySelectorAll("body *")]
    .filter((e) => over(e) && ![...e.children].some(over))
    .slice(0, 4).map((e) => e.tagName + (e.id ? "#" + e.id : "") + "." + e.className);
  return [root.scrollWidth, root.clientWidth, wide];
}"""


@pytest.fixture(params=list(WIDTHS))
def sized_page(request: Any, browser: Any, live_server: Any) -> Iterator[Any]:
    width, height = WIDTHS[request.param]
    context = browser.new_context(base_url=live_server.url, viewport={"width": width, "height": height})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    tab.width_name = request.param
    yield tab
    context.close()
    assert wait_idle_after(live_server.url)


def test_it_fits_every_page_in_the_window_at_desktop_and_phone_widths(
    sized_page: Any, make_dashboard_user: Callable[..., DashboardUser], everything: dict[str, str]
) -> None:
    page = sized_page
    # Every page shows its content, not a refusal: audit pages need the auditor, grant requests an approver.
    sign_in(page, make_dashboard_user("lee", "key-admin", "auditor", "approver"))
    too_wide = {}
    # KMSWEB_SCREENSHOTS=1 also refreshes the README's pictures, at both widths.
    shots = {
        "/": "overview",
        "/keys/": "key-list",
        f"/keys/{everything['key']}/": "key-detail",
        "/usage/": "usage",
        f"/alarms/{everything['alarm']}/": "alarm-detail",
        f"/grant-requests/{everything['request']}/": "grant-request",
    }
    for url in pages(everything):
        response = page.goto(url)
        assert response.status == 200, url
        expect(page.locator("h1")).to_have_count(1)
        expect(page.locator("[role=alert]")).to_have_count(0)
        if url in shots:
            page.wait_for_load_state("networkidle")
            screenshot(page, f"{shots[url]}-{page.width_name}")
        scroll_width, client_width, culprits = page.evaluate(OVERFLOW_JS)
        if scroll_width != client_width:
            too_wide[url] = (scroll_width, client_width, culprits)
    assert not too_wide, f"pages wider than the {page.width_name} window: {too_wide}"


def test_it_folds_the_sidebar_into_a_menu_on_a_phone(
    browser: Any, live_server: Any, key_admin_user: DashboardUser
) -> None:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        sign_in(page, key_admin_user)
        nav = page.locator("#sidebar-nav")
        expect(nav).to_be_hidden()
        # The page's content starts at the left edge, not beside a sidebar.
        assert page.locator("main").bounding_box()["x"] == 0
        page.click("#nav-toggle")
        expect(nav).to_be_visible()
        expect(page.locator("#nav-toggle")).to_have_attribute("aria-expanded", "true")
        nav.locator("text=Keys").click()
        expect(page.locator("h1")).to_have_text("Keys")
        expect(page.locator("#sidebar-nav")).to_be_hidden()
    finally:
        context.close()
        assert wait_idle_after(live_server.url)
