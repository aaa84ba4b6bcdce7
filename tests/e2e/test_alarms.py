"""Alarms in a real browser: a key administrator fixes an invalid alarm form
and creates the alarm, sees its chart drawn against the threshold, and the
banner appears on every page once the alarm fires."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from audit.models import Alarm, AlarmState, AuditEvent
from audit.services import audit_record
from audit.services.alarm_evaluation import alarms_evaluate
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied
from tests.dashboard_fixtures import DashboardUser
from tests.e2e.test_dashboard import screenshot, sign_in, wait_for_chart

pytestmark = pytest.mark.usefixtures("transactional_db")


def test_it_creates_an_alarm_in_the_browser_and_shows_the_banner_when_it_fires(
    page: Any, key_admin_user: DashboardUser, settings: Any
) -> None:
    settings.KMSWEB_WEBHOOK_ALLOW_PRIVATE = False
    sign_in(page, key_admin_user)
    page.click("#nav-alarms")
    expect(page.locator("h1")).to_have_text("Alarms")
    page.click("#alarms-create")
    page.fill("#id_name", "Denied decrypts")
    page.select_option("#id_metric", "denials")
    page.fill("#id_operation", "Decrypt")
    page.fill("#id_period", "-60")
    page.fill("#id_threshold", "2")
    page.fill("#id_evaluation_periods", "2")
    page.fill("#id_datapoints_to_alarm", "3")
    page.fill("#id_webhook_url", "http://169.254.169.254/latest")
    page.fill("#id_webhook_secret", "a-long-enough-secret-value")
    page.click("#alarm-form button[type=submit]")
    # Inline errors, and what was typed is still there.
    expect(page.locator("#row-period .errorlist")).to_contain_text("The period must be positive.")
    expect(page.locator("#row-datapoints_to_alarm .errorlist")).to_contain_text("cannot exceed")
    expect(page.locator("#row-webhook_url .errorlist")).to_contain_text("link-local")
    expect(page.locator("#id_name")).to_have_value("Denied decrypts")
    assert not Alarm.objects.exists()

    page.fill("#id_period", "60")
    page.fill("#id_datapoints_to_alarm", "1")
    page.fill("#id_webhook_url", "")
    page.select_option("#id_treat_missing_data", "notBreaching")
    page.click("#alarm-form button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Denied decrypts")
    alarm = Alarm.objects.get(name="Denied decrypts")
    expect(page).to_have_url(re.compile(rf"/alarms/{alarm.pk}/$"))
    assert (alarm.metric, alarm.operation, alarm.period, alarm.threshold) == ("denials", "Decrypt", 60, 2.0)
    assert AuditEvent.objects.get(event_name="CreateAlarm", error_code="").origin == "dashboard"
    wait_for_chart(page, "alarm-chart")
    expect(page.locator("#alarm-state")).to_have_text("INSUFFICIENT_DATA")
    expect(page.locator("#alarm-banner")).to_have_count(0)

    # Two denied Decrypts a minute ago, and the evaluation job runs.
    now = timezone.now()
    for _ in range(2):
        audit_record(
            caller=Caller.system("tests", account_id=alarm.account_id),
            event_name="Decrypt",
            error=AccessDenied("no"),
            event_time=now - timedelta(minutes=1),
        )
    alarms_evaluate(caller=Caller.system("evaluate_alarms"), now=now, alarm_ids=[alarm.pk])
    assert Alarm.objects.get(pk=alarm.pk).state == AlarmState.ALARM
    for url in ("/", "/keys/", f"/alarms/{alarm.pk}/"):
        page.goto(url)
        expect(page.locator("#alarm-banner")).to_contain_text("1 alarm in ALARM: Denied decrypts")
    expect(page.locator("#alarm-history")).to_contain_text("Threshold Crossed: 1 out of the last 2 datapoints [2.0")
    assert wait_for_chart(page, "alarm-chart") == 2
    screenshot(page, "alarm-detail")
    page.goto("/alarms/")
    expect(page.locator("#alarms-rows")).to_contain_text("Denied decrypts")
    screenshot(page, "alarm-list")
