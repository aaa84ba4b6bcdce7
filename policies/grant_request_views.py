"""Dashboard pages for grant requests: the inbox, a request's page, asking, deciding, withdrawing.

Approvers (``kmsweb:DecideGrantRequest``) see every request on their
account's keys and decide them; everyone else sees the requests they made.
Views parse, build a Caller, call one selector or service, and render; a
refused action (a forged POST, a requester approving their own request) is
refused and audited by the service and shown by ``KmsErrorMiddleware``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from keys.models import Key
from keys.selectors import key_get_for
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import (
    AlreadyExists,
    InvalidArn,
    InvalidState,
    NotFound,
    UnsupportedOperation,
    ValidationError,
)
from kmsweb.lib.htmx import wants_partial
from policies import selectors, services
from policies.callers import caller_from_request
from policies.filters import STATES, GrantRequestFilter
from policies.forms import GrantRequestDecisionForm, GrantRequestForm
from policies.models import GrantRequest, GrantRequestState
from policies.roles import role_allows

CHANGED = "grantRequestChanged"


def _missing(request: Any, exc: NotFound) -> HttpResponse:
    return render(request, "policies/grant_request_missing.html", {"missing": exc, "nav": "grant_requests"}, status=404)


@require_GET
@vary_on_headers("HX-Request")
def grant_request_list(request: Any) -> HttpResponse:
    """The inbox: a tab per state with its count, "only mine", newest first; the URL is its state."""
    caller = caller_from_request(request)
    approver = selectors.may_decide_grant_requests(caller=caller)
    flt = GrantRequestFilter.from_query(request.GET)
    counts = selectors.grant_request_counts_for(caller=caller, approver=approver)
    page = selectors.grant_request_page_for(caller=caller, flt=flt, approver=approver)
    context = {
        "flt": flt,
        "tabs": [
            {"state": s, "label": s.title(), "count": counts[s], "url": flt.query(state=s), "active": flt.state == s}
            for s in (*STATES, "all")
        ],
        "mine_url": flt.query(mine=not flt.mine),
        "all_keys_url": flt.query(key=""),
        "previous_url": flt.query(page=page.previous_page_number()) if page.has_previous() else "",
        "next_url": flt.query(page=page.next_page_number()) if page.has_next() else "",
        "page": page,
        "approver": approver,
        "can_request": role_allows(caller.roles, "kmsweb:RequestGrant"),
        "nav": "grant_requests",
    }
    template = (
        "policies/partials/grant_request_inbox.html" if wants_partial(request) else "policies/grant_request_list.html"
    )
    return render(request, template, context)


@require_GET
def grant_request_badge(request: Any) -> HttpResponse:
    """The sidebar's count again, after a change on the page (``grantRequestChanged``)."""
    waiting = selectors.grant_request_waiting_count_for_user(user=request.user)
    return render(request, "policies/partials/grant_request_badge.html", {"waiting": waiting})


def _detail_context(caller: Caller, grant_request: GrantRequest, approver: bool, **extra: Any) -> dict[str, Any]:
    now = timezone.now()
    pending = grant_request.state == GrantRequestState.PENDING
    mine = caller.principal_pk == grant_request.requester_id
    decisions = list(grant_request.decisions.select_related("principal"))
    approved_by_me = any(d.verdict == "approve" and d.principal_id == caller.principal_pk for d in decisions)
    context = {
        "gr": grant_request,
        "timeline": selectors.grant_request_timeline(request=grant_request, now=now),
        "approvals": [d for d in decisions if d.verdict == "approve"],
        "approvals_required": max(grant_request.approvals_required, grant_request.key.grant_approvals_required),
        "deadline": services.grant_request_deadline(grant_request) if pending else None,
        "overdue": pending and services.grant_request_deadline(grant_request) <= now,
        "preview": services.grant_request_preview(request=grant_request) if pending else None,
        "mine": mine,
        # Buttons only; the service decides (and audits) whatever is posted.
        "can_decide": approver
        and pending
        and not mine
        and caller.principal_arn != grant_request.grantee_principal
        and not approved_by_me,
        "approved_by_me": approved_by_me,
        "can_withdraw": mine and pending,
        "decision_form": GrantRequestDecisionForm(),
        "now": now,
        "nav": "grant_requests",
    }
    context.update(extra)
    return context


@require_GET
@vary_on_headers("HX-Request")
def grant_request_detail(request: Any, request_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    approver = selectors.may_decide_grant_requests(caller=caller)
    try:
        grant_request = selectors.grant_request_get_for(caller=caller, request_id=request_id, approver=approver)
    except NotFound as exc:
        return _missing(request, exc)
    context = _detail_context(caller, grant_request, approver)
    if wants_partial(request):
        return render(request, "policies/partials/grant_request_body.html", context)
    services.grant_request_describe(caller=caller, request=grant_request)
    return render(request, "policies/grant_request_detail.html", context)


def _after_change(request: Any, caller: Caller, request_id: int, **extra: Any) -> HttpResponse:
    """The request's body after a change (HTMX), or the page again (PRG; the form when it has errors)."""
    approver = selectors.may_decide_grant_requests(caller=caller)
    grant_request = selectors.grant_request_get_for(caller=caller, request_id=request_id, approver=approver)
    context = _detail_context(caller, grant_request, approver, **extra)
    failed = "decision_form" in extra
    if not wants_partial(request):
        if not failed:
            return redirect("policies:grant_request_detail", request_id=request_id)
        return render(request, "policies/grant_request_detail.html", context)
    response = render(request, "policies/partials/grant_request_body.html", context)
    return response if failed else trigger_client_event(response, CHANGED)


@require_POST
def grant_request_decide(request: Any, request_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    # Not the caller's view of requests: whoever posts, the service decides
    # and audits the attempt.
    grant_request = selectors.grant_request_get(request_id=request_id)
    form = GrantRequestDecisionForm(request.POST)
    if form.is_valid():
        try:
            services.grant_request_decide(
                caller=caller,
                request=grant_request,
                approve=form.cleaned_data["verdict"] == "approve",
                comment=form.cleaned_data["comment"],
            )
        except (ValidationError, AlreadyExists, InvalidState) as exc:
            form.add_error("comment" if isinstance(exc, ValidationError) else None, exc.message)
    if form.errors:
        return _after_change(request, caller, request_id, decision_form=form)
    return _after_change(request, caller, request_id)


@require_POST
def grant_request_withdraw(request: Any, request_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    grant_request = selectors.grant_request_get(request_id=request_id)
    services.grant_request_withdraw(caller=caller, request=grant_request)
    return _after_change(request, caller, request_id)


def _key(caller: Caller, key_id: str) -> Key:
    try:
        uuid.UUID(key_id)
    except ValueError:
        raise NotFound(f"Invalid key id '{key_id}'.") from None
    return key_get_for(caller=caller, key_ref=key_id, allow_alias=False)


def _form_error_field(exc: ValidationError) -> str | None:
    message = exc.message.lower()
    for word, field in (
        ("duration", "duration"),
        ("justification", "justification"),
        ("context", "encryption_context"),
    ):
        if word in message:
            return field
    return None


@require_http_methods(["GET", "POST"])
def grant_request_create(request: Any) -> HttpResponse:
    """Ask for a grant on the key named by ``?key=`` (the key page links here)."""
    caller = caller_from_request(request)
    try:
        key = _key(caller, request.GET.get("key") or request.POST.get("key", ""))
    except NotFound as exc:
        return _missing(request, exc)
    context: dict[str, Any] = {"key": key, "nav": "grant_requests"}
    if not role_allows(caller.roles, "kmsweb:RequestGrant") and request.method == "GET":
        # A POST is refused (and audited) by the service; the form is not even shown.
        return render(request, "policies/grant_request_create.html", {**context, "refused": True}, status=403)
    form = GrantRequestForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            created = services.grant_request_create(
                caller=caller,
                key=key,
                grantee_principal=data["grantee_principal"].strip(),
                operations=data["operations"],
                constraints=data["constraints"],
                justification=data["justification"],
                duration=data["duration_delta"],
            )
        except InvalidArn as exc:
            form.add_error("grantee_principal", exc.message)
        except ValidationError as exc:
            form.add_error(_form_error_field(exc), exc.message)
        except (UnsupportedOperation, InvalidState) as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Grant request #{created.pk} sent to the approvers.")
            url = reverse("policies:grant_request_detail", args=[created.pk])
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    return render(request, "policies/grant_request_create.html", {**context, "form": form})
