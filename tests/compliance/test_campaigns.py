"""Re-certification campaigns against the database: who reviews what, confirm and
revoke through the normal services (audited), who may decide, bad input, and the
deadline job (escalation email, auto-revoke) with time moved by time-machine."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.core import mail

from audit.models import AuditEvent
from compliance.campaigns import (
    SECURITY_TEAM,
    campaign_item_decide,
    campaign_settings_update,
    campaign_start,
    campaigns_escalate,
    campaigns_start_quarterly,
    key_administrators,
    narrowing_problem,
)
from compliance.models import Campaign, CampaignItem, CampaignState, ItemKind, ItemStatus
from keys.models import Key
from keys.services.tags import key_tag
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, InvalidState, ValidationError
from policies.models import Grant, IdentityPolicy, PolicyAttachment, Principal
from policies.services.grants import grant_create
from policies.services.identity import identity_policy_put, policy_attach
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
DECRYPT_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]}
)
S3_ONLY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


@pytest.fixture
def people(make_dashboard_user: Callable[..., DashboardUser]) -> dict[str, DashboardUser]:
    return {
        "olga": make_dashboard_user("olga", "viewer"),  # the key's owner
        "mark": make_dashboard_user("mark", "viewer"),  # the app's manager
        "eve": make_dashboard_user("eve", "viewer"),  # nobody's reviewer
        "sam": make_dashboard_user("sam", "approver"),  # the security team
        "ada": make_dashboard_user("ada", "administrator"),
    }


def caller_of(who: DashboardUser) -> Caller:
    p = who.principal
    roles = tuple(who.user.groups.values_list("name", flat=True))
    return Caller(
        principal_arn=p.arn,
        account_id=p.account_id,
        region="us-east-1",
        origin="dashboard",
        principal_type=p.type,
        principal_name=p.name,
        principal_pk=p.pk,
        mfa_present=True,
        roles=roles,
    )


@pytest.fixture
def estate(
    people: dict[str, DashboardUser],
    key_admin: Persona,
    make_key: Callable[..., Key],
    make_persona: Callable[..., Persona],
) -> dict[str, object]:
    """Two keys (one tagged with its owner, one untagged), a grant on each, an app
    principal with a manager tag, an inline kms policy, an attached managed one,
    and a policy that does not reach keys."""
    system = Caller.system("tests", account_id=key_admin.account_id)
    with time_machine.travel(T0 - timedelta(days=1), tick=False):
        owned = make_key(description="payments")
        plain = make_key(description="logs")
        key_tag(caller=key_admin.caller(), key=owned, tags=[{"TagKey": "owner", "TagValue": "olga"}])
        app = make_persona("billing-app").principal
        Principal.objects.filter(pk=app.pk).update(tags={"manager": "mark"})
        owned_grant, _ = grant_create(
            caller=key_admin.caller(), key=owned, grantee_principal=app.arn, operations=["Decrypt"]
        )
        plain_grant, _ = grant_create(
            caller=key_admin.caller(), key=plain, grantee_principal=app.arn, operations=["Encrypt"]
        )
        account = app.account
        identity_policy_put(caller=system, account=account, name="AppDecrypt", document=DECRYPT_ALL, principal=app)
        identity_policy_put(caller=system, account=account, name="AppS3", document=S3_ONLY, principal=app)
        managed = identity_policy_put(caller=system, account=account, name="SharedDecrypt", document=DECRYPT_ALL)
        policy_attach(caller=system, principal=app, policy=managed)
    return {"owned": owned, "plain": plain, "app": app, "owned_grant": owned_grant, "plain_grant": plain_grant}


def start(who: DashboardUser, at: datetime = T0) -> Campaign:
    with time_machine.travel(at, tick=False):
        return campaign_start(caller=caller_of(who), name="Q2 review")


def item(campaign: Campaign, **kw: object) -> CampaignItem:
    return CampaignItem.objects.get(campaign=campaign, **kw)


def test_it_assigns_each_item_to_the_right_reviewers(people: dict[str, DashboardUser], estate: dict) -> None:
    campaign = start(people["ada"])
    app = estate["app"]
    owned = item(campaign, grant_id=estate["owned_grant"].grant_id)
    assert owned.reviewers == [people["olga"].arn] and owned.reviewer_source == "key tag owner"
    plain = item(campaign, grant_id=estate["plain_grant"].grant_id)
    assert plain.reviewers == [] and plain.reviewer_source == SECURITY_TEAM
    policies = CampaignItem.objects.filter(campaign=campaign, kind=ItemKind.POLICY, principal_arn=app.arn)
    assert {(i.policy_name, i.policy_inline) for i in policies} == {("AppDecrypt", True), ("SharedDecrypt", False)}
    assert all(i.reviewers == [people["mark"].arn] for i in policies)
    # The personas' FullKmsAccess policies reach keys too; without a manager tag they go to the security team.
    full = CampaignItem.objects.filter(campaign=campaign, kind=ItemKind.POLICY, policy_name="FullKmsAccess")
    assert full.exists() and all(i.reviewers == [] for i in full)
    assert not CampaignItem.objects.filter(campaign=campaign, policy_name="AppS3").exists()
    assert campaign.deadline == T0 + timedelta(days=14) and campaign.state == CampaignState.OPEN
    event = AuditEvent.objects.get(event_name="StartCampaign")
    assert event.response_elements["grants"] == 2 and event.error_code == ""


def test_nobody_reviews_their_own_access(people: dict[str, DashboardUser], estate: dict) -> None:
    Principal.objects.filter(pk=estate["app"].pk).update(tags={"manager": estate["app"].name})
    campaign = start(people["ada"])
    mine = item(campaign, kind=ItemKind.POLICY, policy_name="AppDecrypt")
    assert mine.reviewers == [] and mine.reviewer_source == SECURITY_TEAM


def test_key_administrators_come_from_the_key_policy() -> None:
    policy = json.dumps(
        {
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*"},
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": ["arn:aws:iam::111122223333:user/kim", "arn:aws:iam::444455556666:user/x"]},
                    "Action": ["kms:Put*", "kms:Create*"],
                },
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::111122223333:role/app"},
                    "Action": "kms:Decrypt",
                },
                {"Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::111122223333:user/d"}, "Action": "kms:*"},
            ]
        }
    )
    assert key_administrators(policy, "111122223333") == ["arn:aws:iam::111122223333:user/kim"]
    assert key_administrators("not json", "111122223333") == []


def test_only_an_administrator_starts_a_campaign(people: dict[str, DashboardUser], estate: dict) -> None:
    with pytest.raises(AccessDenied):
        campaign_start(caller=caller_of(people["sam"]), name="nope")
    assert not Campaign.objects.exists()
    assert AuditEvent.objects.get(event_name="StartCampaign").error_code == "AccessDeniedException"


def test_the_owner_revokes_a_grant_through_revoke_grant(people: dict[str, DashboardUser], estate: dict) -> None:
    campaign = start(people["ada"])
    grant = estate["owned_grant"]
    target = item(campaign, grant_id=grant.grant_id)
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        done = campaign_item_decide(caller=caller_of(people["olga"]), item=target, decision="revoke")
    assert done.status == ItemStatus.REVOKED and done.decided_by == people["olga"].arn
    grant.refresh_from_db()
    assert grant.retired_how == "revoked" and grant.retired_at == T0 + timedelta(days=1)
    revoke = AuditEvent.objects.get(event_name="RevokeGrant", error_code="")
    decide = AuditEvent.objects.get(event_name="DecideCampaignItem")
    assert decide.principal_arn == people["olga"].arn and decide.error_code == ""
    assert decide.additional_event_data["revocation"]["requestId"] == revoke.request_id
    assert Grant.objects.get(pk=estate["plain_grant"].pk).retired_at is None


def test_the_manager_confirms_with_a_comment_and_detaches_with_revoke(
    people: dict[str, DashboardUser], estate: dict
) -> None:
    campaign = start(people["ada"])
    mark = caller_of(people["mark"])
    inline = item(campaign, policy_name="AppDecrypt")
    shared = item(campaign, policy_name="SharedDecrypt")
    with pytest.raises(ValidationError, match="comment"):
        campaign_item_decide(caller=mark, item=inline, decision="confirm", comment="  ")
    assert item(campaign, pk=inline.pk).status == ItemStatus.PENDING
    confirmed = campaign_item_decide(caller=mark, item=inline, decision="confirm", comment="Billing needs it (FIN-7).")
    assert confirmed.status == ItemStatus.CONFIRMED and confirmed.comment == "Billing needs it (FIN-7)."
    assert IdentityPolicy.objects.filter(name="AppDecrypt").exists()
    campaign_item_decide(caller=mark, item=shared, decision="revoke")
    assert not PolicyAttachment.objects.filter(principal=estate["app"], policy__name="SharedDecrypt").exists()
    assert IdentityPolicy.objects.filter(name="SharedDecrypt").exists()  # detached, not deleted
    assert AuditEvent.objects.filter(event_name="DetachPrincipalPolicy", error_code="").count() == 1
    with pytest.raises(InvalidState, match="already"):
        campaign_item_decide(caller=mark, item=shared, decision="confirm", comment="changed my mind")


def test_revoking_an_inline_policy_deletes_it(people: dict[str, DashboardUser], estate: dict) -> None:
    campaign = start(people["ada"])
    campaign_item_decide(
        caller=caller_of(people["mark"]), item=item(campaign, policy_name="AppDecrypt"), decision="revoke"
    )
    assert not IdentityPolicy.objects.filter(name="AppDecrypt").exists()
    assert AuditEvent.objects.filter(event_name="DeletePolicy", error_code="").count() == 1


@pytest.mark.parametrize("who", ["eve", "mark"])
def test_someone_elses_item_is_refused_and_nothing_changes(
    who: str, people: dict[str, DashboardUser], estate: dict
) -> None:
    campaign = start(people["ada"])
    grant = estate["owned_grant"]
    target = item(campaign, grant_id=grant.grant_id)
    with pytest.raises(AccessDenied, match="not a reviewer"):
        campaign_item_decide(caller=caller_of(people[who]), item=target, decision="revoke")
    assert item(campaign, pk=target.pk).status == ItemStatus.PENDING
    assert Grant.objects.get(pk=grant.pk).retired_at is None
    assert not AuditEvent.objects.filter(event_name="RevokeGrant").exists()
    refused = AuditEvent.objects.get(event_name="DecideCampaignItem")
    assert refused.error_code == "AccessDeniedException" and refused.principal_arn == people[who].arn


def test_the_security_team_decides_any_item(people: dict[str, DashboardUser], estate: dict) -> None:
    campaign = start(people["ada"])
    target = item(campaign, grant_id=estate["owned_grant"].grant_id)
    done = campaign_item_decide(caller=caller_of(people["sam"]), item=target, decision="confirm", comment="ok")
    assert done.status == ItemStatus.CONFIRMED


def test_it_refuses_a_bad_decision(people: dict[str, DashboardUser], estate: dict) -> None:
    campaign = start(people["ada"])
    target = item(campaign, grant_id=estate["owned_grant"].grant_id)
    for decision, comment in (("delete", "x"), ("confirm", "x" * 2001), ("confirm", "a\x00b")):
        with pytest.raises(ValidationError):
            campaign_item_decide(caller=caller_of(people["olga"]), item=target, decision=decision, comment=comment)
    assert item(campaign, pk=target.pk).status == ItemStatus.PENDING


def test_the_last_decision_closes_the_campaign(people: dict[str, DashboardUser], estate: dict) -> None:
    campaign = start(people["ada"])
    sam = caller_of(people["sam"])
    for pending in CampaignItem.objects.filter(campaign=campaign):
        campaign_item_decide(caller=sam, item=pending, decision="confirm", comment="still needed")
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.CLOSED and campaign.closed_at is not None


def test_at_the_deadline_it_escalates_by_email_and_leaves_access_without_auto_revoke(
    people: dict[str, DashboardUser], estate: dict, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    for who in people.values():
        who.user.email = f"{who.username}@example.com"
        who.user.save()
    campaign = start(people["ada"])
    job = Caller.system("escalate_campaigns")
    with time_machine.travel(campaign.deadline - timedelta(minutes=1), tick=False):
        assert campaigns_escalate(caller=job, now=campaign.deadline - timedelta(minutes=1))["campaigns"] == 0
    mail.outbox.clear()
    at = campaign.deadline + timedelta(minutes=5)
    with time_machine.travel(at, tick=False), django_capture_on_commit_callbacks(execute=True):
        counts = campaigns_escalate(caller=job, now=at)
    pending = CampaignItem.objects.filter(campaign=campaign).count()
    assert counts == {"campaigns": 1, "escalated": pending, "revoked": 0}
    recipients = {m.to[0]: m for m in mail.outbox}
    # Reviewers get their own items; the security team (approvers, administrators) all of them.
    assert set(recipients) == {"olga@example.com", "mark@example.com", "sam@example.com", "ada@example.com"}
    assert estate["owned_grant"].grant_id[:12] in recipients["olga@example.com"].body
    assert "AppDecrypt" not in recipients["olga@example.com"].body
    assert "AppDecrypt" in recipients["sam@example.com"].body
    assert Grant.objects.filter(retired_at__isnull=True).count() == 2
    campaign.refresh_from_db()
    assert campaign.escalated_at == at and campaign.state == CampaignState.OPEN
    assert not CampaignItem.objects.filter(campaign=campaign, escalated_at__isnull=True).exists()
    # Once only.
    with django_capture_on_commit_callbacks(execute=True) as again:
        assert campaigns_escalate(caller=job, now=at + timedelta(hours=1))["campaigns"] == 0
    assert not again


def test_at_the_deadline_it_revokes_unreviewed_access_where_the_account_says_so(
    people: dict[str, DashboardUser], estate: dict
) -> None:
    campaign_settings_update(caller=caller_of(people["ada"]), review_days=7, auto_revoke=True)
    campaign = start(people["ada"])
    assert campaign.deadline == T0 + timedelta(days=7)
    kept = item(campaign, grant_id=estate["plain_grant"].grant_id)
    campaign_item_decide(caller=caller_of(people["sam"]), item=kept, decision="confirm", comment="logging stays")
    at = campaign.deadline + timedelta(hours=1)
    with time_machine.travel(at, tick=False):
        counts = campaigns_escalate(caller=Caller.system("escalate_campaigns"), now=at)
    assert counts["revoked"] == counts["escalated"] > 0
    owned = Grant.objects.get(pk=estate["owned_grant"].pk)
    assert owned.retired_how == "revoked" and owned.retired_at == at
    assert Grant.objects.get(pk=estate["plain_grant"].pk).retired_at is None  # confirmed: kept
    assert not PolicyAttachment.objects.filter(principal=estate["app"]).exists()
    assert not IdentityPolicy.objects.filter(name="AppDecrypt").exists()
    revoked = CampaignItem.objects.filter(campaign=campaign, status=ItemStatus.REVOKED)
    assert revoked.count() == counts["revoked"] and all(i.automatic for i in revoked)
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.CLOSED and campaign.auto_revoke
    event = AuditEvent.objects.get(event_name="EscalateCampaign")
    assert event.response_elements == {"escalated": counts["escalated"], "revoked": counts["revoked"]}


def test_settings_need_an_administrator_and_sane_days(people: dict[str, DashboardUser], estate: dict) -> None:
    with pytest.raises(AccessDenied):
        campaign_settings_update(caller=caller_of(people["sam"]), review_days=7, auto_revoke=True)
    with pytest.raises(ValidationError):
        campaign_settings_update(caller=caller_of(people["ada"]), review_days=0, auto_revoke=True)


def test_the_quarterly_job_starts_one_campaign_per_account_and_quarter(estate: dict) -> None:
    job = Caller.system("start_campaigns")
    first = campaigns_start_quarterly(caller=job, now=T0)
    assert first["started"] >= 1
    assert campaigns_start_quarterly(caller=job, now=T0 + timedelta(hours=1)) == {
        "started": 0,
        "skipped": first["started"],
    }
    assert Campaign.objects.filter(name="2026 Q2 access re-certification").count() == first["started"]


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
DECRYPT = {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}
CONDITIONED = {**DECRYPT, "Condition": {"StringEquals": {"kms:EncryptionContext:app": "billing"}}}


@pytest.mark.parametrize(
    ("old", "new", "narrower"),
    [
        (doc(DECRYPT), doc({**DECRYPT, "Resource": KEY_ARN}), True),
        (doc(DECRYPT), doc(CONDITIONED), True),
        (doc({**DECRYPT, "Action": ["kms:Decrypt", "kms:Encrypt"]}), doc(DECRYPT), True),
        (doc({**DECRYPT, "Action": "kms:*"}), doc({**DECRYPT, "Action": "kms:Describe*"}), False),
        (doc({**DECRYPT, "Action": "kms:*"}), doc({**DECRYPT, "Action": "kms:*"}), True),
        (doc(DECRYPT), doc({**DECRYPT, "Action": "kms:*"}), False),
        (doc(DECRYPT), doc({**DECRYPT, "Action": ["kms:Decrypt", "kms:Encrypt"]}), False),
        (doc({**DECRYPT, "Action": "kms:?ecrypt"}), doc({**DECRYPT, "Action": "kms:*"}), False),
        (doc({**DECRYPT, "Resource": KEY_ARN}), doc(DECRYPT), False),
        (doc(CONDITIONED), doc(DECRYPT), False),
        (doc(DECRYPT), doc({"Effect": "Allow", "NotAction": "kms:Encrypt", "Resource": "*"}), False),
        (doc(DECRYPT), doc({**DECRYPT, "Effect": "Deny", "Action": "*"}), True),
        (doc(DECRYPT), "{not json", False),
    ],
)
def test_a_narrowed_policy_must_fit_inside_the_reviewed_one(old: str, new: str, narrower: bool) -> None:
    assert (narrowing_problem(old, new) is None) is narrower


def test_the_manager_narrows_an_inline_and_an_attached_policy(people: dict[str, DashboardUser], estate: dict) -> None:
    campaign = start(people["ada"])
    mark = caller_of(people["mark"])
    narrowed = doc({**DECRYPT, "Resource": estate["owned"].arn})
    inline = campaign_item_decide(
        caller=mark,
        item=item(campaign, policy_name="AppDecrypt"),
        decision="narrow",
        comment="Only the payments key",
        document=narrowed,
    )
    assert inline.status == ItemStatus.NARROWED and inline.narrowed_document == narrowed
    assert IdentityPolicy.objects.get(principal=estate["app"], name="AppDecrypt").document == narrowed
    campaign_item_decide(
        caller=mark,
        item=item(campaign, policy_name="SharedDecrypt"),
        decision="narrow",
        comment="ok",
        document=narrowed,
    )
    app = estate["app"]
    assert not PolicyAttachment.objects.filter(principal=app, policy__name="SharedDecrypt").exists()
    assert IdentityPolicy.objects.get(principal=app, name="SharedDecrypt").document == narrowed
    assert IdentityPolicy.objects.filter(principal=None, name="SharedDecrypt").exists()  # still there for others
    assert AuditEvent.objects.filter(event_name="PutPrincipalPolicy", error_code="").count() >= 2


def test_narrowing_cannot_widen_access_or_touch_a_grant(people: dict[str, DashboardUser], estate: dict) -> None:
    campaign = start(people["ada"])
    mark = caller_of(people["mark"])
    target = item(campaign, policy_name="AppDecrypt")
    with pytest.raises(ValidationError, match="allows something the reviewed policy does not"):
        campaign_item_decide(
            caller=mark, item=target, decision="narrow", comment="more", document=doc({**DECRYPT, "Action": "kms:*"})
        )
    assert IdentityPolicy.objects.get(name="AppDecrypt").document == DECRYPT_ALL
    assert item(campaign, pk=target.pk).status == ItemStatus.PENDING
    with pytest.raises(ValidationError, match="comment"):
        campaign_item_decide(caller=mark, item=target, decision="narrow", document=doc(DECRYPT))
    grant_item = item(campaign, grant_id=estate["owned_grant"].grant_id)
    with pytest.raises(ValidationError, match="Only an identity policy"):
        campaign_item_decide(
            caller=caller_of(people["olga"]), item=grant_item, decision="narrow", comment="x", document=doc(DECRYPT)
        )


def test_an_odd_effect_is_judged_as_an_allow() -> None:
    assert narrowing_problem(doc(DECRYPT), doc({**DECRYPT, "Effect": "allow", "Action": "*"})) is not None
    assert narrowing_problem(doc(DECRYPT), doc("not a statement")) is not None  # type: ignore[arg-type]


def test_run_job_starts_and_escalates_campaigns(estate: dict) -> None:
    from django.core.management import call_command

    from audit.models import JobOutcome, JobRun

    call_command("run_job", "start_campaigns")
    call_command("run_job", "escalate_campaigns")
    assert JobRun.objects.get(name="start_campaigns").outcome == JobOutcome.OK
    assert JobRun.objects.get(name="escalate_campaigns").outcome == JobOutcome.OK
    assert Campaign.objects.filter(state=CampaignState.OPEN, escalated_at__isnull=True).exists()
