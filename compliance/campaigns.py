"""Access re-certification campaigns: start one, decide its items, and the deadline job.

A campaign lists every live grant on the account's keys and every identity
policy (inline or attached) of the account's principals that reaches keys
(allows a ``kms:`` action). Each item goes to its reviewers:

- a grant to its key's owners: the principals named by the key's owner tag
  (``KMSWEB_CAMPAIGN_OWNER_TAG``, principal ARNs or user names), else the key
  administrators the key policy names (principals allowed ``kms:PutKeyPolicy``);
- a policy to its principal's manager (``KMSWEB_CAMPAIGN_MANAGER_TAG`` on the
  principal);
- otherwise, and when the only candidate is the item's own principal (no one
  re-certifies their own access), to the security team: approvers and
  administrators (``kmsweb:DecideAnyCampaignItem``), who may decide any item.

Revoking and narrowing go through the normal services (``grant_revoke``,
``policy_detach``, ``identity_policy_delete``, ``identity_policy_put``), called by the campaign on the
reviewer's behalf (a reviewer need not hold ``kms:RevokeGrant`` themselves),
in the same transaction as the DecideCampaignItem event that names the
reviewer. At the deadline, the job emails the reviewers and the security
team about the items still pending and, where the account's campaign
settings say so, revokes them.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse

from audit.services import audited
from compliance.models import Campaign, CampaignItem, CampaignSettings, CampaignState, ItemKind, ItemStatus
from keys.models import Key
from kmsweb.lib import clock
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, InvalidState, NotFound, ValidationError
from kmsweb.lib.public_url import public_url
from policies.authorization import authorize
from policies.models import Grant, IdentityPolicy, Principal
from policies.selectors import principal_for_arn
from policies.services.grants import grant_revoke
from policies.services.identity import identity_policy_delete, identity_policy_put, policy_detach

logger = logging.getLogger(__name__)

EVENT_SOURCE = "kmsweb.compliance"
START_ACTION = "kmsweb:StartCampaign"
READ_ACTION = "kmsweb:DescribeCampaigns"
DECIDE_ANY_ACTION = "kmsweb:DecideAnyCampaignItem"
SETTINGS_ACTION = "kmsweb:UpdateCampaignSettings"
MAX_COMMENT = 2000
MAX_NAME = 200
MIN_REVIEW_DAYS, MAX_REVIEW_DAYS = 1, 90
SECURITY_TEAM = "security team"
SECURITY_ROLES = ("approver", "administrator")
DECISIONS = ("confirm", "narrow", "revoke")
MAX_DOCUMENT = 20_000
_SPLIT = re.compile(r"[\s,;]+")


# -- Reviewers ---------------------------------------------------------------------------------------


def _arns(value: str, account_id: str) -> list[str]:
    """Principal ARNs from a tag value: ARNs as they are, bare names as users of the account."""
    out: list[str] = []
    for token in _SPLIT.split(value or ""):
        if not token:
            continue
        arn = token if token.startswith("arn:") else f"arn:aws:iam::{account_id}:user/{token}"
        if arn not in out:
            out.append(arn)
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def key_administrators(policy: str, account_id: str) -> list[str]:
    """Principals of the account the key policy allows ``kms:PutKeyPolicy`` by name (not the root, not ``*``)."""
    try:
        document = json.loads(policy)
    except ValueError:
        return []
    out: list[str] = []
    for statement in _as_list(document.get("Statement", [])) if isinstance(document, dict) else []:
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        actions = [str(a).lower() for a in _as_list(statement.get("Action", []))]
        if not any(fnmatchcase("kms:putkeypolicy", a) for a in actions):
            continue
        principal = statement.get("Principal")
        names = _as_list(principal.get("AWS", [])) if isinstance(principal, dict) else []
        for arn in names:
            arn = str(arn)
            if arn.startswith(f"arn:aws:iam::{account_id}:") and not arn.endswith(":root") and arn not in out:
                out.append(arn)
    return out


def policy_reaches_keys(document: str) -> bool:
    """Whether an identity policy allows any ``kms:`` action (``*`` and ``NotAction`` included)."""
    try:
        parsed = json.loads(document)
    except ValueError:
        return False
    for statement in _as_list(parsed.get("Statement", [])) if isinstance(parsed, dict) else []:
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement:
            return True
        for action in _as_list(statement.get("Action", [])):
            text = str(action).lower()
            if text == "*" or text.startswith("kms:"):
                return True
    return False


def _without(reviewers: list[str], subject_arn: str, source: str) -> tuple[list[str], str]:
    kept = [arn for arn in reviewers if arn != subject_arn]
    return (kept, source) if kept else ([], SECURITY_TEAM)


def _grant_reviewers(key: Key, tags: dict[str, str], grantee: str) -> tuple[list[str], str]:
    tag = str(settings.KMSWEB_CAMPAIGN_OWNER_TAG)
    account_id = key.account_id or ""
    owners = _arns(tags.get(tag, ""), account_id)
    if owners:
        return _without(owners, grantee, f"key tag {tag}")
    admins = key_administrators(key.policy, account_id)
    if admins:
        return _without(admins, grantee, "key policy administrators")
    return [], SECURITY_TEAM


def _policy_reviewers(principal: Principal) -> tuple[list[str], str]:
    tag = str(settings.KMSWEB_CAMPAIGN_MANAGER_TAG)
    tags = principal.tags if isinstance(principal.tags, dict) else {}
    managers = _arns(str(tags.get(tag, "")), principal.account_id)
    if managers:
        return _without(managers, principal.arn, f"principal tag {tag}")
    return [], SECURITY_TEAM


# -- Starting ----------------------------------------------------------------------------------------


def campaign_settings_for(*, account_id: str) -> CampaignSettings:
    """The account's campaign settings (the defaults until an administrator saves them)."""
    found = CampaignSettings.objects.filter(account_id=account_id).first()
    return found or CampaignSettings(account_id=account_id)


def campaign_settings_update(*, caller: Caller, review_days: int, auto_revoke: bool) -> CampaignSettings:
    """Save the caller's account's campaign settings (``kmsweb:UpdateCampaignSettings``, administrators)."""
    params = {"ReviewDays": review_days, "AutoRevoke": auto_revoke}
    with audited(caller, "UpdateCampaignSettings", request_parameters=params, event_source=EVENT_SOURCE):
        authorize(caller=caller, action=SETTINGS_ACTION)
        if not MIN_REVIEW_DAYS <= review_days <= MAX_REVIEW_DAYS:
            raise ValidationError(f"Reviewers get between {MIN_REVIEW_DAYS} and {MAX_REVIEW_DAYS} days.")
        row, _ = CampaignSettings.objects.update_or_create(
            account_id=caller.account_id,
            defaults={
                "review_days": review_days,
                "auto_revoke": auto_revoke,
                "updated_at": clock.now(),
                "updated_by": caller.principal_arn,
            },
        )
        return row


def _grant_items(account_id: str, now: datetime) -> Iterable[CampaignItem]:
    grants = Grant.objects.live(now).filter(key__account_id=account_id).select_related("key").order_by("created_at")
    tags: dict[str, dict[str, str]] = defaultdict(dict)
    for key_id, tag_key, tag_value in Key.objects.filter(account_id=account_id).values_list(
        "id", "tags__tag_key", "tags__tag_value"
    ):
        if tag_key is not None:
            tags[str(key_id)][tag_key] = tag_value
    for grant in grants:
        key = grant.key
        reviewers, source = _grant_reviewers(key, tags[str(key.id)], grant.grantee_principal)
        yield CampaignItem(
            kind=ItemKind.GRANT,
            key_id=str(key.id),
            grant_id=grant.grant_id,
            principal_arn=grant.grantee_principal,
            subject={
                "keyArn": key.arn,
                "grantId": grant.grant_id,
                "grantName": grant.name,
                "granteePrincipal": grant.grantee_principal,
                "retiringPrincipal": grant.retiring_principal,
                "operations": list(grant.operations),
                "constraints": grant.constraints,
                "createdBy": grant.created_by,
                "createdAt": grant.created_at.isoformat(),
                "expiresAt": grant.expires_at.isoformat() if grant.expires_at else None,
            },
            reviewers=reviewers,
            reviewer_source=source,
        )


def _policy_items(account_id: str) -> Iterable[CampaignItem]:
    principals = (
        Principal.objects.filter(account_id=account_id)
        .prefetch_related("inline_policies", "attachments__policy")
        .order_by("type", "name")
    )
    for principal in principals:
        policies = [(p, True) for p in principal.inline_policies.all()]
        policies += [(a.policy, False) for a in principal.attachments.all()]
        reviewers, source = _policy_reviewers(principal)
        for policy, inline in sorted(policies, key=lambda pair: pair[0].name):
            if not policy_reaches_keys(policy.document):
                continue
            yield CampaignItem(
                kind=ItemKind.POLICY,
                principal_arn=principal.arn,
                policy_name=policy.name,
                policy_inline=inline,
                subject={
                    "principalArn": principal.arn,
                    "policyName": policy.name,
                    "policyArn": None if inline else policy.arn,
                    "inline": inline,
                    "document": policy.document,
                },
                reviewers=reviewers,
                reviewer_source=source,
            )


def campaign_start(*, caller: Caller, name: str = "", now: datetime | None = None) -> Campaign:
    """Start a campaign over the caller's account (``kmsweb:StartCampaign``, administrators).

    Creates one PENDING item per live grant and per key-reaching identity
    policy, each with its reviewers; the deadline is the account's review
    days from now. Recorded as StartCampaign with the item counts.
    """
    now = now or clock.now()
    name = (name or "").strip() or f"Access re-certification {now:%Y-%m-%d}"
    with audited(caller, "StartCampaign", request_parameters={"Name": name}, event_source=EVENT_SOURCE) as op:
        authorize(caller=caller, action=START_ACTION)
        if len(name) > MAX_NAME or "\x00" in name:
            raise ValidationError(f"A campaign name is at most {MAX_NAME} characters, without NUL.")
        account_id = caller.account_id
        config = campaign_settings_for(account_id=account_id)
        campaign = Campaign.objects.create(
            account_id=account_id,
            name=name,
            started_at=now,
            started_by=caller.principal_arn,
            deadline=now + timedelta(days=config.review_days),
        )
        items = [*_grant_items(account_id, now), *_policy_items(account_id)]
        for item in items:
            item.campaign = campaign
        CampaignItem.objects.bulk_create(items, batch_size=1000)
        if not items:
            campaign.state, campaign.closed_at = CampaignState.CLOSED, now
            campaign.save(update_fields=["state", "closed_at"])
        op.response_elements = {
            "CampaignId": campaign.pk,
            "Deadline": campaign.deadline.isoformat(),
            "Grants": sum(i.kind == ItemKind.GRANT for i in items),
            "Policies": sum(i.kind == ItemKind.POLICY for i in items),
        }
    return campaign


def campaigns_start_quarterly(*, caller: Caller, now: datetime) -> dict[str, int]:
    """The ``start_campaigns`` job: one campaign per account for the quarter (idempotent by name)."""
    from policies.models import Account

    quarter = f"{now.year} Q{(now.month - 1) // 3 + 1} access re-certification"
    started = skipped = 0
    for account_id in Account.objects.order_by("id").values_list("id", flat=True):
        if Campaign.objects.filter(account_id=account_id, name=quarter).exists():
            skipped += 1
            continue
        campaign_start(caller=Caller.system("start_campaigns", account_id=account_id), name=quarter, now=now)
        started += 1
    return {"started": started, "skipped": skipped}


# -- Narrowing ---------------------------------------------------------------------------------------


def _strings(value: Any) -> list[str]:
    return [str(v) for v in _as_list(value)] if value is not None else []


def _covers(patterns: list[str], wanted: list[str]) -> bool:
    """Every wanted value lies within ``patterns``: a wildcard only when the same wildcard is there."""
    lowered = [p.lower() for p in patterns]
    for value in (w.lower() for w in wanted):
        if any(c in value for c in "*?"):
            if value not in lowered:
                return False
        elif not any(fnmatchcase(value, p) for p in lowered):
            return False
    return True


def _statement_within(new: dict[str, Any], old: dict[str, Any]) -> bool:
    if any(k in old for k in ("NotAction", "NotResource")) or any(k in new for k in ("NotAction", "NotResource")):
        return False
    old_conditions = old.get("Condition") or {}
    new_conditions = new.get("Condition") or {}
    # Every condition of the old statement still applies, unchanged (more conditions only narrow).
    for operator, keys in old_conditions.items() if isinstance(old_conditions, dict) else []:
        if not isinstance(keys, dict) or not isinstance(new_conditions.get(operator), dict):
            return False
        if any(new_conditions[operator].get(k) != v for k, v in keys.items()):
            return False
    return _covers(_strings(old.get("Action")), _strings(new.get("Action"))) and _covers(
        _strings(old.get("Resource")), _strings(new.get("Resource"))
    )


def narrowing_problem(old_document: str, new_document: str) -> str | None:
    """Why ``new_document`` is not a narrowing of ``old_document`` (None when it is).

    Deliberately conservative: each Allow statement of the new document must
    fit inside one Allow statement of the old one (its actions and resources
    among the old ones, the old conditions kept); Deny statements are free.
    A narrowing can never give what the reviewed policy did not.
    """
    try:
        old, new = json.loads(old_document), json.loads(new_document)
    except ValueError:
        return "The narrowed policy is not valid JSON."
    if not isinstance(new, dict) or not isinstance(old, dict):
        return "The narrowed policy must be a JSON object."
    olds = [s for s in _as_list(old.get("Statement", [])) if isinstance(s, dict) and s.get("Effect") == "Allow"]
    for n, statement in enumerate(_as_list(new.get("Statement", [])), start=1):
        if isinstance(statement, dict) and statement.get("Effect") == "Deny":
            continue
        # Anything else is judged as an Allow (an Effect the engine might read otherwise included).
        if not isinstance(statement, dict) or not any(_statement_within(statement, o) for o in olds):
            return (
                f"Statement {n} of the narrowed policy allows something the reviewed policy does not "
                "(its actions and resources must be among the reviewed statement's, with its conditions kept)."
            )
    return None


# -- Deciding ----------------------------------------------------------------------------------------


def may_decide(*, caller: Caller, item: CampaignItem) -> bool:
    """Whether ``caller`` is one of the item's reviewers, or on the security team."""
    if caller.is_system:
        return True
    if item.reviewers and caller.principal_arn in item.reviewers:
        return True
    try:
        authorize(caller=caller, action=DECIDE_ANY_ACTION)
    except AccessDenied:
        return False
    return True


def _revoke(item: CampaignItem, account_id: str) -> dict[str, Any]:
    """Revoke the grant or detach (delete, when inline) the policy; what was done, for the audit event."""
    system = Caller.system("recertification", account_id=account_id)
    done: dict[str, Any] = {"requestId": system.request_id}
    try:
        if item.kind == ItemKind.GRANT:
            key = Key.objects.get(pk=item.key_id)
            grant_revoke(caller=system, key=key, grant_id=item.grant_id)
            done["eventName"] = "RevokeGrant"
        else:
            target = principal_for_arn(item.principal_arn)
            if target is None or target.account_id != account_id:
                raise NotFound(f"{item.principal_arn} no longer exists.")
            if item.policy_inline:
                policy = IdentityPolicy.objects.get(principal=target, name=item.policy_name)
                identity_policy_delete(caller=system, policy=policy)
                done["eventName"] = "DeletePolicy"
            else:
                policy = IdentityPolicy.objects.get(account_id=account_id, principal=None, name=item.policy_name)
                policy_detach(caller=system, principal=target, policy=policy)
                done["eventName"] = "DetachPrincipalPolicy"
    except (NotFound, Key.DoesNotExist, IdentityPolicy.DoesNotExist):
        # Someone removed it since the campaign began: nothing is left to revoke.
        done["alreadyGone"] = True
    return done


def _narrow(item: CampaignItem, account_id: str, document: str) -> dict[str, Any]:
    """Replace the reviewed policy by ``document`` for this principal, through the identity services.

    An inline policy is rewritten in place; a managed policy is detached from
    this principal and an inline policy of the same name with the narrowed
    document takes its place (the managed policy stays for the others).
    """
    system = Caller.system("recertification", account_id=account_id)
    target = principal_for_arn(item.principal_arn)
    if target is None or target.account_id != account_id:
        raise InvalidState(f"{item.principal_arn} no longer exists: there is nothing to narrow.")
    current = item.subject.get("document", "")
    if item.policy_inline:
        live = IdentityPolicy.objects.filter(principal=target, name=item.policy_name).first()
    else:
        live = IdentityPolicy.objects.filter(
            account_id=account_id, principal=None, name=item.policy_name, attachments__principal=target
        ).first()
    if live is None:
        raise InvalidState(f"{item.policy_name} no longer applies to {item.principal_arn}: there is nothing to narrow.")
    problem = narrowing_problem(live.document, document) or narrowing_problem(current, document)
    if problem:
        raise ValidationError(problem)
    if not item.policy_inline:
        policy_detach(caller=system, principal=target, policy=live)
    identity_policy_put(
        caller=system, account=target.account, name=item.policy_name, document=document, principal=target
    )
    return {"requestId": system.request_id, "eventName": "PutPrincipalPolicy", "detached": not item.policy_inline}


def campaign_item_decide(
    *, caller: Caller, item: CampaignItem, decision: str, comment: str = "", document: str = ""
) -> CampaignItem:
    """Confirm, narrow or revoke one pending item (its reviewers, or the security team).

    Confirming and narrowing need a comment (why the access is still
    needed: the auditors' evidence); revoking does not (removing access
    needs no reason, and the evidence names who removed it). Narrowing (a
    policy item only) replaces the policy with ``document``, which must fit
    inside the reviewed policy (``narrowing_problem``). Revocations and
    narrowings go through the normal grant and policy services in the same
    transaction. The campaign closes when its last item is decided.
    Recorded as DecideCampaignItem (refusals too); someone else's item is
    AccessDenied.
    """
    text = (comment or "").strip()
    params: dict[str, Any] = {"CampaignId": item.campaign_id, "ItemId": item.pk, "Decision": decision, "Comment": text}
    if decision == "narrow":
        params["PolicyDocument"] = document[:MAX_DOCUMENT]
    with audited(caller, "DecideCampaignItem", request_parameters=params, event_source=EVENT_SOURCE) as op:
        authorize(caller=caller, action=READ_ACTION)
        if not may_decide(caller=caller, item=item):
            raise AccessDenied(
                f"User: {caller.principal_arn} is not a reviewer of campaign item {item.pk} "
                "(its reviewers, approvers and administrators decide it)."
            )
        if decision not in DECISIONS:
            raise ValidationError("Decide 'confirm', 'narrow' or 'revoke'.")
        if len(text) > MAX_COMMENT or "\x00" in text:
            raise ValidationError(f"A comment is at most {MAX_COMMENT} characters, without NUL.")
        if decision == "confirm" and not text:
            raise ValidationError("Confirming needs a comment: why is this access still needed?")
        if decision == "narrow":
            if item.kind != ItemKind.POLICY:
                raise ValidationError("Only an identity policy can be narrowed; revoke the grant instead.")
            if not text:
                raise ValidationError("Narrowing needs a comment: why is the narrowed access still needed?")
            if not document.strip() or len(document) > MAX_DOCUMENT:
                raise ValidationError(f"Give the narrowed policy document (at most {MAX_DOCUMENT} characters).")
        now = clock.now()
        campaign = Campaign.objects.select_for_update().get(pk=item.campaign_id)
        row = CampaignItem.objects.select_for_update().get(pk=item.pk)
        if campaign.state != CampaignState.OPEN:
            raise InvalidState("This campaign is closed: its items can no longer be decided.")
        if row.status != ItemStatus.PENDING:
            raise InvalidState(f"This item is already {row.get_status_display().lower()}.")
        if decision == "revoke":
            op.additional_event_data["revocation"] = _revoke(row, campaign.account_id)
        elif decision == "narrow":
            op.additional_event_data["narrowing"] = _narrow(row, campaign.account_id, document)
            row.narrowed_document = document
        row.status = {"confirm": ItemStatus.CONFIRMED, "narrow": ItemStatus.NARROWED, "revoke": ItemStatus.REVOKED}[
            decision
        ]
        row.decided_at, row.decided_by, row.comment = now, caller.principal_arn, text
        row.save(update_fields=["status", "decided_at", "decided_by", "comment", "narrowed_document"])
        _close_if_done(campaign, now)
        op.response_elements = {"ItemId": row.pk, "Status": row.status, "CampaignState": campaign.state}
    return row


def _close_if_done(campaign: Campaign, now: datetime) -> None:
    if not campaign.items.filter(status=ItemStatus.PENDING).exists():
        campaign.state, campaign.closed_at = CampaignState.CLOSED, now
        campaign.save(update_fields=["state", "closed_at"])


# -- The deadline ------------------------------------------------------------------------------------


def campaigns_escalate(*, caller: Caller, now: datetime) -> dict[str, int]:
    """The ``escalate_campaigns`` job: open campaigns past their deadline, once each.

    The reviewers of the pending items and the security team get an email
    (after the commit); where the account's settings say so, the pending
    items are revoked (through the normal services) and the campaign closes.
    Recorded as EscalateCampaign, one event per campaign.
    """
    counts = {"campaigns": 0, "escalated": 0, "revoked": 0}
    due = Campaign.objects.filter(state=CampaignState.OPEN, escalated_at__isnull=True, deadline__lte=now)
    for campaign_id in list(due.values_list("pk", flat=True)):
        with transaction.atomic():
            campaign = (
                Campaign.objects.select_for_update(skip_locked=True)
                .filter(pk=campaign_id, escalated_at__isnull=True)
                .first()
            )
            if campaign is None:
                continue
            job = Caller.system("escalate_campaigns", account_id=campaign.account_id)
            params = {"CampaignId": campaign.pk, "Deadline": campaign.deadline.isoformat()}
            with audited(job, "EscalateCampaign", request_parameters=params, event_source=EVENT_SOURCE) as op:
                pending = list(campaign.items.filter(status=ItemStatus.PENDING))
                config = campaign_settings_for(account_id=campaign.account_id)
                campaign.escalated_at, campaign.auto_revoke = now, config.auto_revoke
                CampaignItem.objects.filter(pk__in=[i.pk for i in pending]).update(escalated_at=now)
                revoked = []
                if config.auto_revoke:
                    for item in pending:
                        done = _revoke(item, campaign.account_id)
                        item.status, item.decided_at, item.decided_by = ItemStatus.REVOKED, now, job.principal_arn
                        item.automatic = True
                        item.comment = "Revoked automatically: nobody reviewed it by the deadline."
                        item.save(update_fields=["status", "decided_at", "decided_by", "automatic", "comment"])
                        revoked.append({"itemId": item.pk, **done})
                    campaign.state, campaign.closed_at = CampaignState.CLOSED, now
                campaign.save(update_fields=["escalated_at", "auto_revoke", "state", "closed_at"])
                op.response_elements = {"Escalated": len(pending), "Revoked": len(revoked)}
                op.additional_event_data["revocations"] = revoked[:500]
                if pending:
                    transaction.on_commit(
                        partial(campaign_escalation_mail, campaign_id=campaign.pk, item_ids=[i.pk for i in pending])
                    )
            counts["campaigns"] += 1
            counts["escalated"] += len(pending)
            counts["revoked"] += len(revoked)
    return counts


def security_team_emails(*, account_id: str) -> list[str]:
    """Addresses of the account's active approvers and administrators (superusers hold every role)."""
    users = (
        get_user_model()
        .objects.filter(is_active=True, principal__account_id=account_id)
        .filter(Q(groups__name__in=SECURITY_ROLES) | Q(is_superuser=True))
        .exclude(email="")
        .distinct()
    )
    return sorted({u.email for u in users})


def _emails_of(arns: Iterable[str]) -> set[str]:
    wanted = set(arns)
    users = get_user_model().objects.filter(is_active=True, principal__isnull=False).exclude(email="")
    return {
        u.email
        for u in users.select_related("principal").filter(principal__name__in={a.rsplit("/", 1)[-1] for a in wanted})
        if u.principal.arn in wanted
    }


def campaign_escalation_mail(*, campaign_id: int, item_ids: list[int]) -> int:
    """Email the escalation: each reviewer their overdue items, the security team all of them.

    One message per recipient (no one learns the others' addresses). A
    failing mail server is logged, never raised: the escalation is recorded.
    Returns the number of messages handed to the mail server.
    """
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        return 0
    items = list(CampaignItem.objects.filter(pk__in=item_ids).order_by("pk"))
    link = public_url(reverse("compliance:campaign_detail", args=[campaign.pk]))
    per_address: dict[str, list[CampaignItem]] = defaultdict(list)
    for address in security_team_emails(account_id=campaign.account_id):
        per_address[address] = list(items)
    for item in items:
        for address in _emails_of(item.reviewers):
            if item not in per_address[address]:
                per_address[address].append(item)
    messages = []
    for address, mine in sorted(per_address.items()):
        body = render_to_string(
            "compliance/email/campaign_escalation.txt",
            {"campaign": campaign, "items": mine, "link": link, "auto_revoke": campaign.auto_revoke},
        )
        subject = f"[kmsweb] Overdue access review: {campaign.name} ({len(mine)} item(s))"
        messages.append(EmailMessage(subject, body, to=[address]))
    if not messages:
        return 0
    try:
        get_connection().send_messages(messages)
    except Exception:
        logger.exception("could not email the escalation of campaign %s", campaign.pk)
        return 0
    return len(messages)
