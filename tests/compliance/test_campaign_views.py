"""The campaign pages and the report and trend views: who sees what, starting a
campaign, HTMX decisions (the reviewer's, another user's refused inline with
nothing changed, a confirmation without comment kept), the signed report
download, and the trend chart's data (its total is the data's last column)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client

from audit.models import AuditEvent
from compliance.campaigns import campaign_start
from compliance.models import Campaign, CampaignItem, Finding, ItemStatus
from compliance.services import compliance_evaluate
from keys.models import Key
from keys.services.tags import key_tag
from kmsweb.lib.caller import Caller
from policies.models import Grant
from policies.services.grants import grant_create
from tests.compliance.test_campaigns import caller_of
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser

HX = {"HTTP_HX_REQUEST": "true"}


def html(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


@pytest.fixture
def people(make_dashboard_user: Callable[..., DashboardUser]) -> dict[str, DashboardUser]:
    return {
        "olga": make_dashboard_user("olga", "viewer"),
        "eve": make_dashboard_user("eve", "viewer"),
        "ada": make_dashboard_user("ada", "administrator"),
        "otto": make_dashboard_user("otto", "auditor"),
    }


@pytest.fixture
def campaign(people: dict[str, DashboardUser], key_admin: Persona, make_key: Callable[..., Key]) -> Campaign:
    key = make_key(description="payments")
    key_tag(caller=key_admin.caller(), key=key, tags=[{"TagKey": "owner", "TagValue": "olga"}])
    grant_create(caller=key_admin.caller(), key=key, grantee_principal=key_admin.principal.arn, operations=["Decrypt"])
    return campaign_start(caller=caller_of(people["ada"]), name="Q2 review")


def grant_item(campaign: Campaign) -> CampaignItem:
    return CampaignItem.objects.get(campaign=campaign, kind="grant")


def test_the_list_shows_progress_and_only_administrators_may_start(
    people: dict[str, DashboardUser], campaign: Campaign, signed_in: Callable[..., Client]
) -> None:
    page = html(signed_in(people["olga"]).get("/compliance/campaigns/"))
    assert "Q2 review" in page and "0 of" in page and 'id="campaign-start"' not in page
    assert 'id="campaign-start"' in html(signed_in(people["ada"]).get("/compliance/campaigns/"))
    refused = signed_in(people["olga"]).post("/compliance/campaigns/start/", {"name": "mine"})
    assert "not authorized to perform: kmsweb:StartCampaign" in html(refused) and Campaign.objects.count() == 1


def test_an_administrator_starts_a_campaign_and_a_bad_name_stays_inline(
    people: dict[str, DashboardUser], campaign: Campaign, signed_in: Callable[..., Client]
) -> None:
    client = signed_in(people["ada"])
    bad = html(client.post("/compliance/campaigns/start/", {"name": "x" * 201}))
    assert "at most 200 characters" in bad and Campaign.objects.count() == 1
    started = client.post("/compliance/campaigns/start/", {"name": "Extra review"})
    new = Campaign.objects.get(name="Extra review")
    assert started.status_code == 302 and started["Location"] == f"/compliance/campaigns/{new.pk}/"


def test_the_reviewer_decides_over_htmx(
    people: dict[str, DashboardUser], campaign: Campaign, signed_in: Callable[..., Client]
) -> None:
    item = grant_item(campaign)
    client = signed_in(people["olga"])
    page = html(client.get(f"/compliance/campaigns/{campaign.pk}/?mine=1"))
    assert f'id="campaign-item-{item.pk}"' in page and 'value="revoke"' in page
    row = html(client.post(f"/compliance/campaign-items/{item.pk}/decide/", {"decision": "revoke"}, **HX))
    assert "<html" not in row and 'data-status="REVOKED"' in row and 'id="campaign-progress" hx-swap-oob="true"' in row
    assert Grant.objects.get(grant_id=item.grant_id).retired_how == "revoked"


def test_a_confirmation_without_comment_is_refused_inline_and_keeps_nothing(
    people: dict[str, DashboardUser], campaign: Campaign, signed_in: Callable[..., Client]
) -> None:
    item = grant_item(campaign)
    row = html(
        signed_in(people["olga"]).post(f"/compliance/campaign-items/{item.pk}/decide/", {"decision": "confirm"}, **HX)
    )
    assert "Confirming needs a comment" in row and 'role="alert"' in row
    assert CampaignItem.objects.get(pk=item.pk).status == ItemStatus.PENDING


def test_another_user_cannot_decide_and_nothing_changes(
    people: dict[str, DashboardUser], campaign: Campaign, signed_in: Callable[..., Client]
) -> None:
    item = grant_item(campaign)
    client = signed_in(people["eve"])
    page = html(client.get(f"/compliance/campaigns/{campaign.pk}/"))
    assert f'action="/compliance/campaign-items/{item.pk}/decide/"' not in page  # no form for her
    row = html(
        client.post(f"/compliance/campaign-items/{item.pk}/decide/", {"decision": "revoke", "comment": "x"}, **HX)
    )
    assert "is not a reviewer" in row and 'data-status="PENDING"' in row
    assert CampaignItem.objects.get(pk=item.pk).status == ItemStatus.PENDING
    assert Grant.objects.get(grant_id=item.grant_id).retired_at is None
    assert AuditEvent.objects.get(event_name="DecideCampaignItem").error_code == "AccessDeniedException"


def test_unknown_campaigns_and_items_are_not_found(
    people: dict[str, DashboardUser], campaign: Campaign, signed_in: Callable[..., Client]
) -> None:
    client = signed_in(people["ada"])
    assert client.get("/compliance/campaigns/999999/").status_code == 404
    assert client.get("/compliance/campaigns/nope/").status_code == 404
    missing = client.post("/compliance/campaign-items/nope/decide/", {"decision": "revoke"}, **HX)
    assert missing.status_code != 500


def test_an_auditor_downloads_the_signed_report_and_a_viewer_cannot(
    people: dict[str, DashboardUser], campaign: Campaign, signed_in: Callable[..., Client]
) -> None:
    response = signed_in(people["otto"]).post("/compliance/report/")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    names = set(zipfile.ZipFile(io.BytesIO(response.content)).namelist())
    assert {"report.pdf", "findings.csv", "manifest.json", "manifest.sig"} <= names
    refused = signed_in(people["olga"]).post("/compliance/report/")
    assert refused.status_code == 302
    assert (
        AuditEvent.objects.filter(event_name="ExportComplianceReport", error_code="AccessDeniedException").count() == 1
    )


def test_the_trend_data_counts_open_findings_per_day(
    people: dict[str, DashboardUser], make_key: Callable[..., Key], signed_in: Callable[..., Client]
) -> None:
    day1 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    with time_machine.travel(day1 - timedelta(days=1), tick=False):
        make_key(description="one")
    job = Caller.system("evaluate_compliance")
    with time_machine.travel(day1, tick=False):
        compliance_evaluate(caller=job, now=day1)
        compliance_evaluate(caller=job, now=day1 + timedelta(hours=1))  # the day's last run counts
    with time_machine.travel(day1 + timedelta(days=1), tick=False):
        make_key(description="two")
        compliance_evaluate(caller=job, now=day1 + timedelta(days=1))
    with time_machine.travel(day1 + timedelta(days=1, hours=2), tick=False):
        data = signed_in(people["olga"]).get("/compliance/trend/").json()
    open_now = Finding.objects.open().filter(account_id=people["olga"].principal.account_id).count()
    assert data["labels"] == ["2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z"]
    columns = [sum(ds["data"][i] for ds in data["datasets"]) for i in range(2)]
    assert columns[-1] == data["total"] == open_now > columns[0] > 0
    assert data["totalText"].startswith(f"{open_now} open findings")


def test_the_compliance_page_has_the_trend_chart_and_the_export_for_auditors(
    people: dict[str, DashboardUser], signed_in: Callable[..., Client]
) -> None:
    page = html(signed_in(people["otto"]).get("/compliance/"))
    assert 'id="compliance-trend" data-url="/compliance/trend/"' in page and 'id="compliance-report"' in page
    assert 'id="compliance-report"' not in html(signed_in(people["olga"]).get("/compliance/"))


def test_a_widening_narrowing_is_refused_inline_with_the_document_kept(
    people: dict[str, DashboardUser], campaign: Campaign, signed_in: Callable[..., Client]
) -> None:
    item = CampaignItem.objects.filter(campaign=campaign, kind="policy", policy_name="FullKmsAccess").first()
    assert item is not None
    client = signed_in(people["ada"])
    assert 'name="document"' in html(client.get(f"/compliance/campaigns/{campaign.pk}/"))
    wider = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]}'
    url = f"/compliance/campaign-items/{item.pk}/decide/"
    row = html(client.post(url, {"decision": "narrow", "comment": "x", "document": wider}, **HX))
    assert "allows something the reviewed policy does not" in row and "iam:*" in row
    assert CampaignItem.objects.get(pk=item.pk).status == ItemStatus.PENDING
    narrower = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]}'
    row = html(client.post(url, {"decision": "narrow", "comment": "decrypt only", "document": narrower}, **HX))
    assert 'data-status="NARROWED"' in row


def test_an_administrator_saves_the_settings_and_bad_days_stay_inline(
    people: dict[str, DashboardUser], signed_in: Callable[..., Client]
) -> None:
    from compliance.models import CampaignSettings

    client = signed_in(people["ada"])
    bad = html(client.post("/compliance/campaigns/settings/", {"review_days": "0", "auto_revoke": "on"}))
    assert "greater than or equal to 1" in bad and not CampaignSettings.objects.exists()
    saved = client.post("/compliance/campaigns/settings/", {"review_days": "30", "auto_revoke": "on"})
    assert saved.status_code == 302
    row = CampaignSettings.objects.get()
    assert (row.review_days, row.auto_revoke, row.updated_by) == (30, True, people["ada"].arn)
    refused = html(signed_in(people["olga"]).post("/compliance/campaigns/settings/", {"review_days": "7"}))
    assert "not authorized to perform: kmsweb:UpdateCampaignSettings" in refused
    assert CampaignSettings.objects.get().review_days == 30
