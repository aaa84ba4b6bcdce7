"""Dashboard pages of compliance: scores and the findings table, a finding's detail
with suppress/unsuppress, and the compliance panel of a key's page.

Views parse, build a Caller, call one selector or service, and render.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from compliance import selectors, services
from compliance.forms import SuppressForm
from compliance.models import FindingStatus
from compliance.rules import RULES, Severity
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, InvalidState, NotFound, ValidationError
from kmsweb.lib.htmx import wants_partial
from policies.authorization import authorize
from policies.callers import caller_from_request
from policies.selectors import principal_get_for, principal_list_for


def _may(caller: Caller, action: str) -> bool:
    """For showing buttons only; the services decide."""
    try:
        authorize(caller=caller, action=action)
    except AccessDenied:
        return False
    return True


@require_GET
@vary_on_headers("HX-Request")
def compliance_overview(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    flt = selectors.FindingFilter.from_query(request.GET)
    table = selectors.finding_page_for(caller=caller, flt=flt)
    context: dict[str, Any] = {
        "flt": flt,
        "table": table,
        "prev_query": flt.query(page=table.previous) if table.previous else "",
        "next_query": flt.query(page=table.next) if table.next else "",
        "rules": list(RULES.values()),
        "severities": [s.value for s in Severity],
        "statuses": FindingStatus.choices,
        "nav": "compliance",
    }
    if wants_partial(request):
        return render(request, "compliance/partials/finding_table.html", context)
    context["scores"] = selectors.scores_for(caller=caller)
    context["can_export"] = _may(caller, "kmsweb:ExportComplianceReport")
    context["principals"] = principal_list_for(caller=caller).exclude(type="service")
    return render(request, "compliance/compliance_overview.html", context)


def _detail_context(caller: Caller, finding: Any, form: SuppressForm | None = None) -> dict[str, Any]:
    return {
        "finding": finding,
        "evidence": json.dumps(finding.evidence, indent=2, sort_keys=True, ensure_ascii=False),
        "history": selectors.finding_history(finding=finding),
        "can_suppress": _may(caller, "kmsweb:SuppressFinding"),
        "form": form or SuppressForm(),
        "nav": "compliance",
    }


@require_GET
def finding_detail(request: Any, finding_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    try:
        finding = selectors.finding_get_for(caller=caller, finding_id=finding_id)
    except NotFound as exc:
        return render(request, "compliance/finding_missing.html", {"missing": exc, "nav": "compliance"}, status=404)
    return render(request, "compliance/finding_detail.html", _detail_context(caller, finding))


@require_POST
def finding_suppress(request: Any, finding_id: str) -> HttpResponse:
    """Suppress with a justification and expiry; errors re-render the form (200) with the input kept."""
    caller = caller_from_request(request)
    finding = selectors.finding_get_for(caller=caller, finding_id=finding_id)
    form = SuppressForm(request.POST)
    if form.is_valid():
        try:
            services.finding_suppress(
                caller=caller,
                finding=finding,
                justification=form.cleaned_data["justification"],
                until=form.cleaned_data["until"],
            )
        except (ValidationError, InvalidState) as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Suppressed the finding.")
            url = reverse("compliance:finding_detail", args=[finding.pk])
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    context = _detail_context(caller, finding, form)
    if request.htmx:
        return render(request, "compliance/partials/suppress_form.html", context)
    return render(request, "compliance/finding_detail.html", context)


@require_POST
def finding_unsuppress(request: Any, finding_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    finding = selectors.finding_get_for(caller=caller, finding_id=finding_id)
    services.finding_unsuppress(caller=caller, finding=finding)
    messages.success(request, "Ended the suppression: the finding is open again.")
    url = reverse("compliance:finding_detail", args=[finding.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_GET
def key_panel(request: Any, key_id: str) -> HttpResponse:
    """The key page's compliance panel (loaded by HTMX): the key's open and suppressed findings."""
    caller = caller_from_request(request)
    try:
        uuid.UUID(key_id)
    except ValueError:
        raise NotFound(f"Invalid key id '{key_id}'.") from None
    context = {"findings": selectors.key_findings_for(caller=caller, key_id=key_id), "key_id": key_id}
    return render(request, "compliance/partials/key_panel.html", context)


@require_GET
def principal_panel(request: Any, principal_id: int) -> HttpResponse:
    """The principal page's compliance panel (loaded by HTMX)."""
    caller = caller_from_request(request)
    principal = principal_get_for(caller=caller, principal_id=principal_id)
    context = {
        "findings": selectors.principal_findings_for(caller=caller, principal_arn=principal.arn),
        "principal": principal,
    }
    return render(request, "compliance/partials/principal_panel.html", context)
