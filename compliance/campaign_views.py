"""Dashboard pages of re-certification campaigns and the signed reports.

The campaigns list (start one, the account's settings), a campaign's page
(progress, items, a decision form per item that answers with the item's
row over HTMX), its signed evidence, the signed compliance report, and the
trend data of open findings for the Compliance page's chart.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from compliance import campaigns, reports, selectors
from compliance.forms import CampaignSettingsForm, CampaignStartForm, DecisionForm
from compliance.models import ItemStatus
from compliance.views import _may
from kmsweb.lib import clock
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, InvalidState, MalformedPolicyDocument, NotFound, ValidationError
from policies.callers import caller_from_request


def _list_context(caller: Caller, **extra: Any) -> dict[str, Any]:
    config = campaigns.campaign_settings_for(account_id=caller.account_id)
    can_configure = _may(caller, campaigns.SETTINGS_ACTION)
    return {
        "campaigns": selectors.campaign_list_for(caller=caller),
        "can_start": _may(caller, campaigns.START_ACTION),
        "can_configure": can_configure,
        "config": config,
        "start_form": CampaignStartForm(),
        "settings_form": CampaignSettingsForm(
            initial={"review_days": config.review_days, "auto_revoke": config.auto_revoke}
        ),
        "nav": "campaigns",
        **extra,
    }


@require_GET
def campaign_list(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    return render(request, "compliance/campaign_list.html", _list_context(caller))


@require_POST
def campaign_start(request: Any) -> HttpResponse:
    """Start a campaign now (administrators); errors re-render the list with the form and its input."""
    caller = caller_from_request(request)
    form = CampaignStartForm(request.POST)
    if form.is_valid():
        try:
            campaign = campaigns.campaign_start(caller=caller, name=form.cleaned_data["name"])
        except ValidationError as exc:
            form.add_error(None, exc.message)
        except AccessDenied as exc:
            # The form is not on the page of someone who may not start a campaign: say it above the page.
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Started {campaign.name}: reviewers have until {campaign.deadline:%Y-%m-%d}.")
            url = reverse("compliance:campaign_detail", args=[campaign.pk])
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    return render(request, "compliance/campaign_list.html", _list_context(caller, start_form=form))


@require_POST
def campaign_settings(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    form = CampaignSettingsForm(request.POST)
    if form.is_valid():
        try:
            campaigns.campaign_settings_update(
                caller=caller,
                review_days=form.cleaned_data["review_days"],
                auto_revoke=form.cleaned_data["auto_revoke"],
            )
        except ValidationError as exc:
            form.add_error(None, exc.message)
        except AccessDenied as exc:
            # The form is not on the page of someone who may not save it: say it above the page.
            messages.error(request, exc.message)
        else:
            messages.success(request, "Saved the campaign settings.")
            url = reverse("compliance:campaign_list")
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    return render(request, "compliance/campaign_list.html", _list_context(caller, settings_form=form))


def _with_rights(caller: Caller, items: list[Any]) -> list[Any]:
    for item in items:
        item.can_decide = item.status == ItemStatus.PENDING and campaigns.may_decide(caller=caller, item=item)
    return items


@require_GET
def campaign_detail(request: Any, campaign_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    try:
        campaign = selectors.campaign_get_for(caller=caller, campaign_id=campaign_id)
    except NotFound as exc:
        return render(request, "compliance/finding_missing.html", {"missing": exc, "nav": "campaigns"}, status=404)
    mine = request.GET.get("mine") == "1"
    status = request.GET.get("status", "")
    items = selectors.campaign_items_for(caller=caller, campaign=campaign, mine=mine, status=status)
    context = {
        "campaign": campaign,
        "items": _with_rights(caller, items),
        "mine": mine,
        "status": status if status in ItemStatus.values else "",
        "statuses": ItemStatus.choices,
        "can_export": _may(caller, reports.EXPORT_ACTION),
        "open": campaign.state == "OPEN",
        "nav": "campaigns",
    }
    return render(request, "compliance/campaign_detail.html", context)


@require_POST
def campaign_item_decide(request: Any, item_id: str) -> HttpResponse:
    """Confirm or revoke one item; answers with its row (and the progress bar out of band).

    A refusal or bad input re-renders the row with the message and the comment kept, nothing changed.
    """
    caller = caller_from_request(request)
    item = selectors.campaign_item_get_for(caller=caller, item_id=item_id)
    form = DecisionForm(request.POST)
    error = ""
    if form.is_valid():
        try:
            item = campaigns.campaign_item_decide(
                caller=caller,
                item=item,
                decision=form.cleaned_data["decision"],
                comment=form.cleaned_data["comment"],
                document=form.cleaned_data["document"],
            )
        except (ValidationError, InvalidState, AccessDenied, MalformedPolicyDocument) as exc:
            error = exc.message
    else:
        error = " ".join(str(e) for errors in form.errors.values() for e in errors)
    campaign = selectors.campaign_get_for(caller=caller, campaign_id=item.campaign_id)
    context = {
        "item": _with_rights(caller, [item])[0],
        "campaign": campaign,
        "error": error,
        "comment": request.POST.get("comment", "") if error else "",
        "document": request.POST.get("document", "") if error else "",
        "open": campaign.state == "OPEN",
        "oob": True,
    }
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect(reverse("compliance:campaign_detail", args=[campaign.pk]))
    response = render(request, "compliance/partials/campaign_item_row.html", context)
    if not error:
        response["HX-Trigger"] = "campaignItemDecided"
    return response


def _zip_response(data: bytes, name: str) -> HttpResponse:
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_POST
def campaign_report(request: Any, campaign_id: str) -> HttpResponse:
    """The campaign's signed evidence (report.pdf, items.csv, manifest and signature) as a zip."""
    caller = caller_from_request(request)
    campaign = selectors.campaign_get_for(caller=caller, campaign_id=campaign_id)
    now = clock.now()
    try:
        data = reports.zipped(
            lambda out: reports.campaign_report_write(caller=caller, campaign=campaign, out_dir=out, now=now)
        )
    except AccessDenied as exc:
        messages.error(request, exc.message)
        return redirect(reverse("compliance:campaign_detail", args=[campaign.pk]))
    return _zip_response(data, f"kmsweb-campaign-{campaign.pk}-{now:%Y%m%dT%H%M%SZ}.zip")


@require_POST
def compliance_report(request: Any) -> HttpResponse:
    """The signed compliance report (report.pdf and CSV files, manifest and signature) as a zip."""
    caller = caller_from_request(request)
    now = clock.now()
    try:
        data = reports.zipped(lambda out: reports.compliance_report_write(caller=caller, out_dir=out, now=now))
    except AccessDenied as exc:
        messages.error(request, exc.message)
        return redirect(reverse("compliance:compliance_overview"))
    return _zip_response(data, f"kmsweb-compliance-report-{now:%Y%m%dT%H%M%SZ}.zip")


@require_GET
def trend_data(request: Any) -> JsonResponse:
    """The trend chart's data: open findings per day by severity (the last 30 days)."""
    caller = caller_from_request(request)
    return JsonResponse(selectors.open_findings_trend_for(caller=caller, now=clock.now()))
