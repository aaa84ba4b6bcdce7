"""The People pages in Chromium: an administrator adds a user, fixes a typo inline, and deactivates them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from audit.models import AuditEvent
from tests.dashboard_fixtures import DashboardUser
from tests.e2e.test_dashboard import sign_in

pytestmark = pytest.mark.usefixtures("transactional_db")


def test_an_administrator_adds_edits_and_deactivates_a_user(
    page: Any, make_dashboard_user: Callable[..., DashboardUser]
) -> None:
    admin = make_dashboard_user("ada", "administrator")
    sign_in(page, admin)
    page.click("#nav-people")
    expect(page.locator("#people-table")).to_contain_text("ada")
    page.fill("#id_username", "nina")
    page.fill("#id_first_name", "Nina")
    page.fill("#id_email", "nina@example")
    page.check("#person-create-roles input[value=auditor]")
    page.fill("#id_password", "a-long-password-1")
    page.click("#person-create-form button[type=submit]")
    # Inline error, input kept.
    expect(page.locator("#person-create-form")).to_contain_text("valid email")
    expect(page.locator("#id_first_name")).to_have_value("Nina")
    page.fill("#id_email", "nina@example.org")
    page.fill("#id_password", "a-long-password-1")
    page.click("#person-create-form button[type=submit]")
    expect(page.locator("h1")).to_have_text("nina")
    expect(page.locator("#person-policies")).to_contain_text("kmsweb:SearchAudit")
    page.click("#person-state summary:has-text('Deactivate')")
    page.click("#person-deactivate-form button")
    expect(page.locator("#person-active")).to_contain_text("deactivated")
    expect(page).to_have_url(re.compile(r"/people/\d+/$"))
    assert not get_user_model().objects.get(username="nina").is_active
    assert AuditEvent.objects.filter(event_name="DeactivateUser", error_code="").count() == 1
