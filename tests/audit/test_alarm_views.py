"""The Alarms pages: the permission matrix, the create/edit form's inline
errors, the banner, the detail page (chart data, history, delivery log),
delete, and the audit rows of dashboard changes."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audit.alarm_rules import AlarmSpec
from audit.models import Alarm, AlarmHistory, AlarmState, AuditEvent, DeliveryAttempt, Notification
from audit.services.alarms import alarm_create, alarms_ensure_builtin
from keys.models import Key
from tests.dashboard_fixtures import DashboardUser

HX = {"HTTP_HX_REQUEST": "true"}

GOOD = {
    "name": "Decrypt errors",
    "metric": "errors",
    "operation": "Decrypt",
    "period": "300",
    "comparison": "GreaterThanThreshold",
    "threshold": "5",
    "evaluation_periods": "3",
    "datapoints_to_alarm": "2",
    "treat_missing_data": "notBreaching",
    "actions_enabled": "on",
    "emails": "ops@example.com\nsecurity@example.com",
    "webhook_url": "",
    "webhook_secret": "",
}


def html(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


@pytest.fixture
def viewer_client(viewer_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(viewer_user)


@pytest.fixture
def admin_client(key_admin_user: DashboardUser, signed_in: Callable[..., Client]) -> Client:
    return signed_in(key_admin_user)


def an_alarm(account_id: str, **overrides: Any) -> Alarm:
    from kmsweb.lib.caller import Caller

    values: dict[str, Any] = {
        "name": "denials",
        "metric": "denials",
        "period": 60,
        "comparison": "GreaterThanOrEqualToThreshold",
        "threshold": 1,
    }
    values.update(overrides)
    return alarm_create(caller=Caller.system("tests", account_id=account_id), spec=AlarmSpec(**values))


# -- the permission matrix ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "approver", "auditor"])
def test_it_lets_a_read_only_role_read_alarms_but_not_change_them(
    role: str, make_dashboard_user: Callable[..., DashboardUser], signed_in: Callable[..., Client]
) -> None:
    user = make_dashboard_user("reader", role)
    alarm = an_alarm(user.principal.account_id)
    client = signed_in(user)
    listing = html(client.get("/alarms/"))
    assert f'href="/alarms/{alarm.pk}/"' in listing and 'id="alarms-create"' not in listing
    detail = html(client.get(f"/alarms/{alarm.pk}/"))
    assert "denials" in detail
    assert f"/alarms/{alarm.pk}/edit/" not in detail and f"/alarms/{alarm.pk}/delete/" not in detail
    refused = client.get("/alarms/new/")
    assert refused.status_code == 403 and "cannot create alarms" in refused.content.decode()
    assert client.get(f"/alarms/{alarm.pk}/edit/").status_code == 403


def test_it_refuses_and_audits_a_forged_create_from_a_viewer(viewer_client: Client, viewer_user: DashboardUser) -> None:
    response = viewer_client.post("/alarms/new/", GOOD, **HX)
    assert response.status_code == 200 and response["HX-Retarget"] == "#flash"
    assert "AccessDeniedException" in response.content.decode()
    assert not Alarm.objects.exists()
    event = AuditEvent.objects.get(event_name="CreateAlarm")
    assert (event.error_code, event.principal_arn, event.origin) == (
        "AccessDeniedException",
        viewer_user.arn,
        "dashboard",
    )


def test_it_refuses_a_forged_delete_and_edit_from_a_viewer(viewer_client: Client, viewer_user: DashboardUser) -> None:
    alarm = an_alarm(viewer_user.principal.account_id)
    viewer_client.post(f"/alarms/{alarm.pk}/delete/", {}, **HX)
    viewer_client.post(f"/alarms/{alarm.pk}/edit/", {**GOOD, "name": "hijacked"}, **HX)
    alarm.refresh_from_db()
    assert alarm.name == "denials"
    assert set(
        AuditEvent.objects.filter(event_name__in=["DeleteAlarm", "UpdateAlarm"]).values_list("event_name", "error_code")
    ) == {("DeleteAlarm", "AccessDeniedException"), ("UpdateAlarm", "AccessDeniedException")}


def test_it_hides_other_accounts_alarms(admin_client: Client) -> None:
    theirs = an_alarm("444455556666", name="not yours")
    assert "not yours" not in html(admin_client.get("/alarms/"))
    response = admin_client.get(f"/alarms/{theirs.pk}/")
    assert response.status_code == 302  # NotFound: back with a message, nothing shown
    assert "not yours" not in admin_client.get(f"/alarms/{theirs.pk}/data/").content.decode()


# -- create, edit, delete as a key administrator --------------------------------------------------


def test_it_creates_an_alarm_from_the_form_and_audits_it(admin_client: Client, key_admin_user: DashboardUser) -> None:
    response = admin_client.post("/alarms/new/", GOOD)
    alarm = Alarm.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/alarms/{alarm.pk}/"
    assert (alarm.metric, alarm.operation, alarm.period, alarm.comparison, alarm.threshold) == (
        "errors",
        "Decrypt",
        300,
        "GreaterThanThreshold",
        5.0,
    )
    assert (alarm.evaluation_periods, alarm.datapoints_to_alarm, alarm.treat_missing_data) == (3, 2, "notBreaching")
    assert alarm.emails == ["ops@example.com", "security@example.com"]
    assert alarm.account_id == key_admin_user.principal.account_id and alarm.created_by == key_admin_user.arn
    event = AuditEvent.objects.get(event_name="CreateAlarm")
    assert (event.event_source, event.error_code, event.origin) == ("kmsweb.alarms", "", "dashboard")
    assert event.request_parameters["alarmName"] == "Decrypt errors"
    assert event.response_elements == {"alarmId": alarm.pk, "alarmName": "Decrypt errors"}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"period": "-60"}, "period", "The period must be positive."),
        ({"period": "90"}, "period", "whole number of minutes"),
        ({"metric": "bogus"}, "metric", "Select a valid choice"),
        ({"emails": "ops@example.com\nnot-an-address"}, "emails", "is not a valid email address"),
        ({"webhook_url": "http://127.0.0.1:9000/hook", "webhook_secret": "x" * 20}, "webhook_url", "loopback"),
        ({"webhook_url": "javascript:alert(1)", "webhook_secret": "x" * 20}, "webhook_url", "http://"),
        ({"webhook_url": "https://example.com/hook"}, "webhook_secret", "needs a signing secret"),
        ({"datapoints_to_alarm": "4"}, "datapoints_to_alarm", "cannot exceed the evaluation periods"),
        ({"operation": "Decrypted"}, "operation", "is not a KMS operation"),
        ({"key_id": "not-a-key"}, "key_id", "is not an alias, alias ARN, key id or key ARN"),
        ({"key_id": "1234abcd-12ab-34cd-56ef-1234567890ab"}, "key_id", "No key"),
        ({"key_id": "alias/nothing-here"}, "key_id", "No alias &#x27;alias/nothing-here&#x27; in this account."),
        ({"threshold": "lots"}, "threshold", "Enter a number"),
        ({"name": "  "}, "name", "This field is required"),
    ],
)
def test_it_shows_inline_errors_for_bad_input_and_saves_nothing(
    admin_client: Client, settings: Any, change: dict[str, str], field: str, message: str
) -> None:
    settings.KMSWEB_WEBHOOK_ALLOW_PRIVATE = False
    page = html(admin_client.post("/alarms/new/", {**GOOD, **change}))
    row = page.split(f'id="row-{field}"', 1)[1].split('<div class="form-row"', 1)[0]
    assert message in row, row
    assert 'class="errorlist' in row
    assert not Alarm.objects.exists()
    assert not AuditEvent.objects.filter(event_name="CreateAlarm").exists()
    # The user's input is kept (except the secret, never echoed back).
    assert 'value="Decrypt errors"' in page or change.get("name")
    assert "x" * 20 not in page


@pytest.mark.parametrize("form", ["alias", "alias ARN", "key id", "key ARN"])
def test_it_accepts_a_key_by_alias_alias_arn_id_or_arn(
    form: str, admin_client: Client, make_key: Callable[..., Key]
) -> None:
    key = make_key(description="orders", alias="alias/orders")
    typed = {
        "alias": "alias/orders",
        "alias ARN": f"arn:aws:kms:{key.region}:{key.account_id}:alias/orders",
        "key id": str(key.id),
        "key ARN": key.arn,
    }[form]

    response = admin_client.post("/alarms/new/", {**GOOD, "key_id": typed})

    assert response.status_code == 302, html(response)
    assert Alarm.objects.get().key_id == str(key.id)


def test_it_refuses_a_duplicate_name_inline(admin_client: Client, key_admin_user: DashboardUser) -> None:
    an_alarm(key_admin_user.principal.account_id, name="Decrypt errors")
    page = html(admin_client.post("/alarms/new/", GOOD))
    assert "already exists" in page.split('id="row-name"', 1)[1].split('<div class="form-row"', 1)[0]
    assert Alarm.objects.count() == 1


def test_it_edits_an_alarm_keeping_its_state(admin_client: Client, key_admin_user: DashboardUser) -> None:
    alarm = an_alarm(key_admin_user.principal.account_id)
    Alarm.objects.filter(pk=alarm.pk).update(state=AlarmState.ALARM)
    form = html(admin_client.get(f"/alarms/{alarm.pk}/edit/"))
    assert 'value="denials"' in form
    response = admin_client.post(f"/alarms/{alarm.pk}/edit/", {**GOOD, "name": "renamed", "threshold": "7"})
    assert response.status_code == 302
    alarm.refresh_from_db()
    assert (alarm.name, alarm.threshold, alarm.state) == ("renamed", 7.0, AlarmState.ALARM)
    assert AuditEvent.objects.get(event_name="UpdateAlarm").request_parameters["alarmName"] == "renamed"


def test_it_lets_a_key_admin_delete_a_built_in_alarm(admin_client: Client, key_admin_user: DashboardUser) -> None:
    alarms_ensure_builtin(account_ids=[key_admin_user.principal.account_id])
    builtin = Alarm.objects.get(builtin="access-denied-spike")
    assert f"/alarms/{builtin.pk}/delete/" in html(admin_client.get(f"/alarms/{builtin.pk}/"))
    response = admin_client.post(f"/alarms/{builtin.pk}/delete/")
    assert response.status_code == 302 and response["Location"] == "/alarms/"
    assert not Alarm.objects.filter(pk=builtin.pk).exists()
    event = AuditEvent.objects.get(event_name="DeleteAlarm")
    assert event.error_code == "" and event.request_parameters["builtIn"] == "access-denied-spike"


# -- list, detail, banner -----------------------------------------------------------------------


def test_it_filters_the_list_by_state_with_htmx(admin_client: Client, key_admin_user: DashboardUser) -> None:
    account = key_admin_user.principal.account_id
    firing = an_alarm(account, name="firing")
    an_alarm(account, name="quiet")
    Alarm.objects.filter(pk=firing.pk).update(state=AlarmState.ALARM)
    fragment = html(admin_client.get("/alarms/?state=ALARM", **HX))
    assert "<html" not in fragment
    assert "firing" in fragment and "quiet" not in fragment
    assert 'class="badge alarm-ALARM"' in fragment


def test_it_lists_alarms_in_a_bounded_number_of_queries(
    admin_client: Client, key_admin_user: DashboardUser, django_assert_max_num_queries: Any
) -> None:
    for i in range(30):
        an_alarm(key_admin_user.principal.account_id, name=f"alarm {i}")
    with django_assert_max_num_queries(20):
        page = html(admin_client.get("/alarms/"))
    assert page.count('data-alarm="') == 30


def test_it_shows_a_banner_on_every_page_while_an_alarm_is_in_alarm(
    admin_client: Client, key_admin_user: DashboardUser
) -> None:
    alarm = an_alarm(key_admin_user.principal.account_id, name="Use of a doomed key")
    assert 'id="alarm-banner"' not in html(admin_client.get("/"))
    Alarm.objects.filter(pk=alarm.pk).update(state=AlarmState.ALARM)
    for url in ("/", "/keys/", "/alarms/"):
        page = html(admin_client.get(url))
        banner = page.split('id="alarm-banner"', 1)[1].split("</div>", 1)[0]
        assert "1 alarm in ALARM" in banner and "Use of a doomed key" in banner
    an_alarm("444455556666", name="someone else's")
    Alarm.objects.filter(name="someone else's").update(state=AlarmState.ALARM)
    assert "someone else" not in html(admin_client.get("/"))
    Alarm.objects.filter(pk=alarm.pk).update(state=AlarmState.OK)
    assert 'id="alarm-banner"' not in html(admin_client.get("/"))


def test_it_shows_history_and_the_delivery_log_on_the_detail_page(
    viewer_client: Client, viewer_user: DashboardUser
) -> None:
    alarm = an_alarm(viewer_user.principal.account_id)
    now = timezone.now()
    entry = AlarmHistory.objects.create(
        alarm=alarm, timestamp=now, old_state="OK", new_state="ALARM", reason="Threshold Crossed: 1 out of the last 1"
    )
    notification = Notification.objects.create(
        alarm=alarm,
        transition=entry,
        channel="webhook",
        target="https://hooks.example.com/kms",
        payload={},
        status="retrying",
        attempts=1,
        created_at=now,
    )
    DeliveryAttempt.objects.create(
        notification=notification,
        number=1,
        attempted_at=now + timedelta(seconds=1),
        ok=False,
        response_code=500,
        error="HTTP 500",
        duration_ms=42,
    )
    page = html(viewer_client.get(f"/alarms/{alarm.pk}/"))
    history = page.split('id="alarm-history"', 1)[1].split('id="alarm-deliveries"', 1)[0]
    assert "Threshold Crossed: 1 out of the last 1" in history and "alarm-ALARM" in history
    log = page.split('id="alarm-deliveries"', 1)[1]
    assert "https://hooks.example.com/kms" in log and "HTTP 500" in log and "42 ms" in log and "retrying" in log
    assert f'data-url="/alarms/{alarm.pk}/data/"' in page


def test_it_serves_the_chart_data_with_the_threshold(viewer_client: Client, viewer_user: DashboardUser) -> None:
    alarm = an_alarm(viewer_user.principal.account_id, threshold=3)
    data = viewer_client.get(f"/alarms/{alarm.pk}/data/").json()
    assert len(data["labels"]) == 60
    metric, threshold = data["datasets"]
    assert metric["kind"] == "operation" and metric["data"] == [None] * 60
    assert threshold["kind"] == "threshold" and threshold["data"] == [3.0] * 60
    assert threshold["label"] == "Threshold (>= 3)"


# -- context and acknowledgement -----------------------------------------------------------------


def test_it_names_what_made_an_alarm_fire_and_waits_for_an_acknowledgement(
    signed_in: Callable[..., Client],
    auditor_user: DashboardUser,
    viewer_client: Client,
    key_admin: Any,
    make_key: Callable[..., Key],
) -> None:
    from audit.services.alarm_evaluation import alarms_evaluate
    from audit.services.recording import audit_record
    from kmsweb.lib.caller import Caller
    from kmsweb.lib.errors import AccessDenied

    auditor = signed_in(auditor_user)
    key = make_key(description="payroll", alias="alias/payroll")
    alarm = an_alarm(
        key_admin.account_id, name="Denied decrypts", period=60, threshold=2, treat_missing_data="notBreaching"
    )
    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=5)
    for _ in range(3):
        audit_record(
            caller=key_admin.caller(), event_name="Decrypt", keys=[key], error=AccessDenied("no"), event_time=minute
        )
    system = Caller.system("evaluate_alarms")
    alarms_evaluate(caller=system, now=minute + timedelta(minutes=1), alarm_ids=[alarm.pk])
    assert Alarm.objects.get(pk=alarm.pk).state == AlarmState.ALARM

    page = html(auditor.get(f"/alarms/{alarm.pk}/"))

    context = page.split('id="alarm-context"')[1]
    assert "alias/payroll" in context.split('id="alarm-context-principals"')[0]
    assert key_admin.principal.arn in context and 'Decrypt <span class="muted">× 3</span>' in context
    link = re.search(r'id="alarm-context-search" href="([^"]+)"', context).group(1).replace("&amp;", "&")
    found = html(auditor.get(link, HTTP_HX_REQUEST="true"))
    assert found.count("<tr") - 1 == 3  # the three denials, nothing else
    # ISO dates in the reason, not dd/mm/yy.
    assert re.search(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", Alarm.objects.get(pk=alarm.pk).state_reason)

    # Back to OK a minute later: still on the banner until someone acknowledges it.
    alarms_evaluate(caller=system, now=minute + timedelta(minutes=3), alarm_ids=[alarm.pk])
    assert Alarm.objects.get(pk=alarm.pk).state == AlarmState.OK
    banner = html(auditor.get("/")).split('id="alarm-banner"', 1)[1].split("</div>", 1)[0]
    assert "No longer in ALARM, not acknowledged:</strong> Denied decrypts" in banner

    # A viewer may not acknowledge; the refusal is audited and changes nothing.
    viewer_client.post(f"/alarms/{alarm.pk}/acknowledge/", {"comment": "me"})
    denied = AuditEvent.objects.get(event_name="AcknowledgeAlarm")
    assert denied.error_code == "AccessDeniedException"
    assert not AlarmHistory.objects.filter(alarm=alarm, reason_data__has_key="acknowledged").exists()

    response = auditor.post(f"/alarms/{alarm.pk}/acknowledge/", {"comment": "Payroll job retried with old role."})

    assert response.status_code == 302
    ack = AlarmHistory.objects.get(alarm=alarm, reason_data__has_key="acknowledged")
    assert ack.reason_data["acknowledged"] == {"by": auditor_user.arn, "comment": "Payroll job retried with old role."}
    event = AuditEvent.objects.get(event_name="AcknowledgeAlarm", error_code="")
    assert event.principal_arn == auditor_user.arn and event.request_parameters["comment"].startswith("Payroll")
    assert 'id="alarm-banner"' not in html(auditor.get("/"))
    detail = html(auditor.get(f"/alarms/{alarm.pk}/"))
    assert 'id="alarm-acknowledge"' not in detail and "Acknowledged</span>" in detail
    # Nothing left to acknowledge: a second one is refused inline.
    again = auditor.post(f"/alarms/{alarm.pk}/acknowledge/", {"comment": ""}, follow=True)
    assert "no unacknowledged trip to ALARM" in html(again)
    assert AlarmHistory.objects.filter(alarm=alarm, reason_data__has_key="acknowledged").count() == 1
