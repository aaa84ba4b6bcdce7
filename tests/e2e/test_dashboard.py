"""The dashboard in a real browser (system Chromium via Playwright) against the live server.

Sign in with password and a TOTP code computed from the enrolled secret,
browse the three tabs, filter and page the table, create a key, disable it,
schedule and cancel its deletion, see the usage chart drawn with data; a
Viewer sees no action and a forged POST is refused.

``KMSWEB_SCREENSHOTS=1`` also saves the main pages to docs/screenshots/.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from audit.models import AuditEvent
from keys import services
from keys.models import Alias, Key, KeyManager, KeyState
from keys.services.common import default_key_policy
from keys.services.material import material_create
from kmsweb.lib.errors import KmsError
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser

pytestmark = pytest.mark.usefixtures("transactional_db")

SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"


def screenshot(page: Any, name: str) -> None:
    """Save docs/screenshots/<name>.png when KMSWEB_SCREENSHOTS=1 (so CI does not rewrite them)."""
    if os.environ.get("KMSWEB_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # caret="initial": hiding the caret injects an inline <style>, which the CSP (rightly) blocks.
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True, caret="initial")


def sign_in(page: Any, who: DashboardUser, *, shot: bool = False) -> None:
    """Password, then the TOTP code of the current 30-second step."""
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    page.fill("#id_username", who.username)
    page.fill("#id_password", who.password)
    if shot:
        screenshot(page, "login")
    page.click("#login-form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/mfa/verify/"))
    page.fill("#id_token", who.code())
    page.click("#mfa-form button[type=submit]")
    expect(page.locator("h1")).to_have_text("Overview")


def wait_for_chart(page: Any, canvas_id: str) -> int:
    canvas = page.locator(f"canvas#{canvas_id}[data-rendered=true]")
    expect(canvas).to_have_count(1)
    return int(canvas.get_attribute("data-total"))


def rows(page: Any) -> Any:
    return page.locator("#keys-table tbody tr")


def aws_managed_key(account_id: str) -> Key:
    now = timezone.now()
    key = Key.objects.create(
        account_id=account_id,
        region=settings.KMSWEB_DEFAULT_REGION,
        description="Default key that protects my EBS volumes",
        manager=KeyManager.AWS,
        policy=default_key_policy(account_id),
        created_at=now,
    )
    key.current_material = material_create(key=key, version=1, now=now)
    key.save(update_fields=["current_material"])
    Alias.objects.create(
        account_id=account_id, region=key.region, name="alias/aws/ebs", key=key, created_at=now, updated_at=now
    )
    return key


@pytest.fixture
def inventory(key_admin: Persona) -> list[Key]:
    """31 customer keys (11 "database", 20 "service"), a few disabled, one pending
    deletion; one service managed key; some traffic for the charts."""
    caller = key_admin.caller()
    keys = []
    for i in range(31):
        kind = "database" if i % 3 == 0 else "service"
        keys.append(
            services.key_create(
                caller=caller,
                description=f"{kind} {i:02d}",
                tags=[{"TagKey": "team", "TagValue": "payments" if i % 2 else "search"}],
                alias=f"alias/{kind}/{i:02d}",
                rotation_period_days=365 if i % 4 else None,
            )
        )
    for key in keys[1:4]:
        services.key_disable(caller=caller, key=key)
    services.key_schedule_deletion(caller=caller, key=keys[4], pending_window_days=14)
    for _ in range(5):
        blob = services.key_encrypt(caller=caller, key=keys[0], plaintext=b"hello").ciphertext
        services.key_decrypt(caller=caller, ciphertext=blob)
    aws_managed_key(key_admin.account_id)
    return keys


def test_it_signs_in_and_browses_filters_and_pages_the_keys(
    page: Any,
    key_admin_user: DashboardUser,
    inventory: list[Key],
) -> None:
    sign_in(page, key_admin_user, shot=True)
    expect(page.locator("#overview-counts")).to_contain_text("31")
    expect(page.locator("#overview-pending-deletion")).to_contain_text(str(inventory[4].id))
    assert wait_for_chart(page, "overview-chart") > 0
    screenshot(page, "overview")

    # The three tabs.
    page.click("nav >> text=Keys")
    expect(page.locator("#keys-tabs a.active")).to_contain_text("Customer managed")
    expect(page.locator("#keys-pager")).to_contain_text("1–25 of 31")
    expect(rows(page)).to_have_count(25)
    screenshot(page, "key-list")
    page.click("#keys-tabs >> text=Service managed")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_contain_text("alias/aws/ebs")
    page.click("#keys-tabs >> text=Platform owned")
    expect(page.locator("#keys-owned")).to_contain_text("totp-secrets")
    assert "/keys/" not in page.locator("#keys-owned").inner_html()  # no key ids, no links
    page.click("#keys-tabs >> text=Customer managed")

    # Search as you type: an HTMX swap, the URL follows.
    page.fill("input[name=q]", "database")
    expect(page.locator("#keys-pager")).to_contain_text("of 11")
    expect(page).to_have_url(re.compile(r"q=database"))
    expect(rows(page)).to_have_count(11)
    # A state filter on top.
    page.select_option("select[name=state]", "Disabled")
    expect(page.locator("#keys-pager")).to_contain_text("1–1 of 1")
    expect(rows(page).first).to_contain_text("database 03")
    # Reloading the URL shows the same view.
    page.reload()
    expect(rows(page)).to_have_count(1)
    expect(page.locator("input[name=q]")).to_have_value("database")
    expect(page.locator("select[name=state]")).to_have_value("Disabled")

    # Tag filter, then paging and sorting without a reload.
    page.goto("/keys/")
    page.fill("input[name=tag]", "team=search")
    page.click("#keys-filters button[type=submit]")
    expect(page.locator("#keys-pager")).to_contain_text("of 16")
    page.goto("/keys/")
    marker = page.evaluate("() => (window.__kmswebMarker = Math.random())")
    page.click("#keys-pager >> text=Next")
    expect(page.locator("#keys-pager")).to_contain_text("26–31 of 31")
    expect(page).to_have_url(re.compile(r"page=2"))
    expect(rows(page)).to_have_count(6)
    page.click("#keys-table th >> text=Description")
    expect(page).to_have_url(re.compile(r"sort=description"))
    expect(rows(page).first).to_contain_text("database 00")
    page.click("#keys-table th >> text=Description")
    expect(page).to_have_url(re.compile(r"sort=-description"))
    expect(rows(page).first).to_contain_text("service 29")
    assert page.evaluate("() => window.__kmswebMarker") == marker, "paging and sorting reloaded the page"


def test_it_creates_disables_and_schedules_then_cancels_deletion(
    page: Any,
    key_admin_user: DashboardUser,
    inventory: list[Key],
) -> None:
    sign_in(page, key_admin_user)
    page.click("nav >> text=Keys")
    page.click("#keys-create")
    expect(page.locator("h1")).to_have_text("Create a customer managed key")
    page.fill("#id_description", "Orders database")
    page.fill("#id_alias", "orders/db")
    page.fill("#id_tags", "team=orders\ncost-center=42")
    page.fill("#id_rotation_period_days", "180")
    screenshot(page, "key-create")
    page.click("#key-create-form button[type=submit]")

    expect(page.locator("#flash")).to_contain_text("Created key")
    key = Key.objects.get(description="Orders database")
    expect(page).to_have_url(re.compile(f"/keys/{key.id}/$"))
    expect(page.locator("#key-aliases")).to_contain_text("alias/orders/db")
    expect(page.locator("#key-tags")).to_contain_text("cost-center")
    expect(page.locator("#key-rotation")).to_contain_text("Automatic every 180 days")
    assert wait_for_chart(page, "key-chart") > 0  # CreateKey, CreateAlias, EnableKeyRotation, DescribeKey
    screenshot(page, "key-detail")

    # Disable, with a confirmation; the result is said next to the actions.
    page.click("#key-actions summary >> text=Disable")
    page.click("#key-disable-confirm")
    expect(page.locator("#key-state")).to_have_text("Disabled")
    expect(page.locator("#key-done")).to_contain_text("Key disabled")

    # Schedule deletion: the popover is wholly on screen; a wrong id is refused inline, the right one goes through.
    page.click("#key-actions summary >> text=Schedule deletion")
    box = page.locator("#key-deletion-form").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"], box
    page.fill("#key-deletion-form input[name=pending_window_days]", "7")
    page.fill("#key-deletion-form input[name=confirm]", "not the id")
    page.click("#key-deletion-form button[type=submit]")
    expect(page.locator("#key-deletion-form")).to_contain_text("That is not this key's id.")
    expect(page.locator("#key-deletion-form input[name=confirm]")).to_have_value("not the id")
    assert Key.objects.get(pk=key.pk).state == KeyState.DISABLED
    page.fill("#key-deletion-form input[name=confirm]", str(key.id))
    page.click("#key-deletion-form button[type=submit]")
    expect(page.locator("#key-state")).to_have_attribute("data-state", "PendingDeletion")
    deletion_date = Key.objects.get(pk=key.pk).deletion_date
    assert timedelta(days=6, hours=23) < deletion_date - timezone.now() <= timedelta(days=7)
    expect(page.locator("#key-config")).to_contain_text(deletion_date.strftime("%Y-%m-%d"))

    # Cancel it: the key comes back disabled, as in AWS.
    page.click("#key-cancel-deletion")
    expect(page.locator("#key-state")).to_have_text("Disabled")
    expect(page.locator("#key-done")).to_contain_text("Deletion cancelled")
    page.click("#key-enable")
    expect(page.locator("#key-state")).to_have_text("Enabled")
    expect(page.locator("#key-done")).to_contain_text("Key enabled")
    key.refresh_from_db()
    assert key.state == KeyState.ENABLED and key.deletion_date is None
    events = AuditEvent.objects.filter(key_id=str(key.id), principal_arn=key_admin_user.arn, error_code="")
    assert {"CreateKey", "DisableKey", "ScheduleKeyDeletion", "CancelKeyDeletion", "EnableKey"} <= set(
        events.values_list("event_name", flat=True)
    )
    assert set(events.values_list("origin", flat=True)) == {"dashboard"}


def test_it_draws_the_usage_chart_and_switches_range(
    page: Any,
    key_admin_user: DashboardUser,
    inventory: list[Key],
) -> None:
    sign_in(page, key_admin_user)
    page.goto(f"/keys/{inventory[0].id}/")

    total = wait_for_chart(page, "key-chart")

    assert total >= 11  # CreateKey and friends, 5 Encrypt, 5 Decrypt
    expect(page.locator('[data-chart-total="key-chart"]')).to_contain_text(f"{total} requests in this range.")
    page.click('button[data-chart="key-chart"][data-chart-range="hour"]')
    expect(page.locator("canvas#key-chart")).to_have_attribute("data-range", "hour")
    expect(page.locator('button[data-chart-range="hour"]')).to_have_class(re.compile(r"\bprimary\b"))
    page.goto("/usage/")
    assert wait_for_chart(page, "usage-chart") > 0


def test_it_shows_a_viewer_no_action_and_refuses_a_forged_post(
    page: Any,
    viewer_user: DashboardUser,
    inventory: list[Key],
) -> None:
    key = inventory[0]
    sign_in(page, viewer_user)
    expect(page.locator("a >> text=Create key")).to_have_count(0)
    page.click("nav >> text=Keys")
    expect(page.locator("#keys-create")).to_have_count(0)
    page.goto(f"/keys/{key.id}/")
    expect(page.locator("#key-state")).to_have_text("Enabled")
    expect(page.locator("#key-actions button, #key-actions summary")).to_have_count(0)
    expect(page.locator("#key-body form[method=post]")).to_have_count(0)
    expect(page.locator("#key-policy pre.json")).to_contain_text('"Statement"')

    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(
        f"/keys/{key.id}/disable/", headers={"X-CSRFToken": token, "HX-Request": "true"}, form={}
    )

    assert response.status == 200
    assert "AccessDeniedException" in response.text()
    assert f"{viewer_user.arn} is not authorized to perform: kms:DisableKey" in response.text()
    assert Key.objects.get(pk=key.pk).state == KeyState.ENABLED
    denial = AuditEvent.objects.get(event_name="DisableKey", error_code="AccessDeniedException")
    assert denial.principal_arn == viewer_user.arn and denial.origin == "dashboard"
    # Without the token the same POST does not get past CSRF.
    assert page.request.post(f"/keys/{key.id}/disable/", form={}).status == 403


def test_it_keeps_the_session_cookie_secure_and_http_only(
    page: Any,
    viewer_user: DashboardUser,
    inventory: list[Key],
) -> None:

    sign_in(page, viewer_user)
    session = next(c for c in page.context.cookies() if c["name"] == "sessionid")
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Lax"
    assert page.evaluate("() => document.cookie").find("sessionid") == -1
    page.click("text=Sign out")
    expect(page).to_have_url(re.compile(r"/login/$"))
    page.goto("/keys/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/keys/$"))


# What the chart shows: for each column, the value at the top of its highest
# drawn bar (read back through the y scale), summed over the columns.
VISIBLE_TOTAL_JS = """(id) => {
  const chart = Chart.getChart(document.getElementById(id));
  const y = chart.scales.y;
  const bars = chart.data.datasets.map((d, k) => [d, k]).filter(([d]) => d.type === "bar");
  let visible = 0;
  for (let i = 0; i < chart.data.labels.length; i++) {
    let top = y.getPixelForValue(0);
    for (const [d, k] of bars) {
      if (d.data[i]) top = Math.min(top, chart.getDatasetMeta(k).data[i].y);
    }
    visible += Math.round(y.getValueForPixel(top));
  }
  return visible;
}"""


def printed_total(page: Any, canvas_id: str) -> int:
    text = page.locator(f'[data-chart-total="{canvas_id}"]').inner_text()
    return int(re.match(r"([\d,]+) requests", text).group(1).replace(",", ""))


def test_it_stacks_the_bars_so_the_visible_total_is_the_printed_total(
    page: Any,
    key_admin_user: DashboardUser,
    inventory: list[Key],
    key_admin: Persona,
    outsider: Persona,
) -> None:
    # A denial (another account's principal) and an error (a disabled key) beside the successes.
    with pytest.raises(KmsError):
        services.key_encrypt(caller=outsider.caller(), key=inventory[0], plaintext=b"x")
    with pytest.raises(KmsError):
        services.key_encrypt(caller=key_admin.caller(), key=Key.objects.get(pk=inventory[1].pk), plaintext=b"x")
    assert AuditEvent.objects.filter(error_code="AccessDeniedException").exists()
    sign_in(page, key_admin_user)
    overview_total = wait_for_chart(page, "overview-chart")
    assert overview_total > 60  # 31 keys with aliases, 5 Encrypt, 5 Decrypt, ...
    assert page.evaluate(VISIBLE_TOTAL_JS, "overview-chart") == overview_total == printed_total(page, "overview-chart")

    page.goto("/usage/")
    wait_for_chart(page, "usage-chart")
    page.click('button[data-chart="usage-chart"][data-chart-range="month"]')
    expect(page.locator("canvas#usage-chart")).to_have_attribute("data-range", "month")
    month_total = int(page.locator("canvas#usage-chart").get_attribute("data-total"))
    assert page.evaluate(VISIBLE_TOTAL_JS, "usage-chart") == month_total == printed_total(page, "usage-chart")
