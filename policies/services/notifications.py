"""Notification emails for grant requests, sent after the transaction commits.

Called through ``transaction.on_commit`` with ids (never model instances), so
a rolled-back request mails nobody and a mail shows what was committed. A
mail server that fails is logged, never raised: the request or decision it
reports is already saved and audited.
"""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse

from kmsweb.lib.public_url import public_url
from policies.models import GrantRequest
from policies.selectors import principal_for_arn

logger = logging.getLogger(__name__)

APPROVER_ROLE = "approver"


def _link(request: GrantRequest) -> str:
    return public_url(reverse("policies:grant_request_detail", args=[request.pk]))


def _send(subject: str, body: str, recipients: list[str], request_id: int) -> None:
    # One message each, so no approver learns the others' addresses.
    messages = [EmailMessage(subject, body, to=[address]) for address in recipients]
    if not messages:
        return
    try:
        get_connection().send_messages(messages)
    except Exception:
        logger.exception("could not email %d recipient(s) about grant request %s", len(messages), request_id)


def approver_emails(*, account_id: str, exclude_user_ids: set[int]) -> list[str]:
    """Addresses of active users who may approve in ``account_id`` (superusers hold every role)."""
    users = (
        get_user_model()
        .objects.filter(is_active=True, principal__account_id=account_id)
        .filter(Q(groups__name=APPROVER_ROLE) | Q(is_superuser=True))
        .exclude(email="")
        .exclude(pk__in=exclude_user_ids)
        .distinct()
        .order_by("email")
    )
    return sorted({u.email for u in users})


def grant_request_new_mail(*, request_id: int) -> None:
    """Tell the key account's approvers a request waits (not the requester or grantee)."""
    request = GrantRequest.objects.select_related("key", "requester").filter(pk=request_id).first()
    if request is None:
        return
    grantee = principal_for_arn(request.grantee_principal)
    exclude = {grantee.user_id} if grantee is not None and grantee.user_id is not None else set()
    if request.requester.user_id is not None:
        exclude.add(request.requester.user_id)
    recipients = approver_emails(account_id=request.key.account_id or "", exclude_user_ids=exclude)
    context = {"request": request, "link": _link(request)}
    subject = f"[kmsweb] Grant request #{request.pk} needs approval"
    _send(subject, render_to_string("policies/email/grant_request_new.txt", context), recipients, request.pk)


def grant_request_decided_mail(*, request_id: int) -> None:
    """Tell the requester (when a dashboard user with an address) how their request was decided."""
    request = GrantRequest.objects.select_related("key", "requester__user", "grant").filter(pk=request_id).first()
    if request is None:
        return
    user = request.requester.user
    if user is None or not user.email or not user.is_active:
        return
    decision = request.decisions.exclude(verdict="withdraw").select_related("principal").last()
    context = {"request": request, "decision": decision, "link": _link(request)}
    subject = f"[kmsweb] Grant request #{request.pk} {request.state}"
    _send(subject, render_to_string("policies/email/grant_request_decided.txt", context), [user.email], request.pk)
