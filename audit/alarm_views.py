"""Dashboard pages of alarms: the list, detail (chart, history, delivery
log), create and edit forms, and delete.

Views parse, build a Caller, call one service, and render. Role policies
decide through the services; ``may`` only chooses which buttons to show.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from audit import selectors as audit_selectors
from audit.forms import AlarmAcknowledgeForm, AlarmForm
from audit.models import AlarmState, DeliveryAttempt, Notification
from audit.services import alarms as svc
from audit.services.alarm_evaluation import alarm_series
from kmsweb.lib import clock
from kmsweb.lib.errors import AlreadyExists, ValidationError
from kmsweb.lib.htmx import wants_partial
from policies.callers import caller_from_request

HISTORY_ROWS = 50
DELIVERY_ROWS = 50


@require_GET
@vary_on_headers("HX-Request")
def alarm_list(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    state = request.GET.get("state", "")
    state = state if state in AlarmState.values else ""
    query = request.GET.get("q", "").strip()[:255]
    alarms = svc.alarms_describe(caller=caller, state=state, query=query)
    context = {"alarms": alarms, "state": state, "q": query, "states": AlarmState.choices, "nav": "alarms"}
    if wants_partial(request):
        return render(request, "audit/partials/alarm_table.html", context)
    context["can_create"] = svc.may(caller, "kmsweb:CreateAlarm")
    return render(request, "audit/alarm_list.html", context)


def _detail_context(caller: Any, alarm: Any, **extra: Any) -> dict[str, Any]:
    attention = svc.alarm_attention(alarm)
    trip = attention or alarm.history.filter(new_state=AlarmState.ALARM).exclude(old_state=AlarmState.ALARM).first()
    return {
        "attention": attention,
        "context": audit_selectors.alarm_context_for(caller=caller, alarm=alarm, trip=trip),
        "can_search": svc.may(caller, "kmsweb:SearchAudit"),
        "can_acknowledge": attention is not None and svc.may(caller, "kmsweb:AcknowledgeAlarm"),
        "ack_form": extra.pop("ack_form", None) or AlarmAcknowledgeForm(),
        **extra,
    }


@require_GET
def alarm_detail(request: Any, alarm_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    alarm = svc.alarm_get_for(caller=caller, alarm_id=alarm_id)
    notifications = list(Notification.objects.filter(alarm=alarm).select_related("transition")[:DELIVERY_ROWS])
    attempts: dict[int, list[DeliveryAttempt]] = {}
    for attempt in DeliveryAttempt.objects.filter(notification__in=notifications):
        attempts.setdefault(attempt.notification_id, []).append(attempt)
    for n in notifications:
        n.attempt_rows = attempts.get(n.pk, [])  # type: ignore[attr-defined]
    context = {
        "alarm": alarm,
        "history": list(alarm.history.all()[:HISTORY_ROWS]),
        "notifications": notifications,
        "can_edit": svc.may(caller, "kmsweb:UpdateAlarm"),
        "can_delete": svc.may(caller, "kmsweb:DeleteAlarm")
        and (not alarm.builtin or svc.may(caller, "kmsweb:DeleteBuiltInAlarm")),
        "nav": "alarms",
        **_detail_context(caller, alarm),
    }
    return render(request, "audit/alarm_detail.html", context)


@require_POST
def alarm_acknowledge(request: Any, alarm_id: str) -> HttpResponse:
    """Acknowledge the alarm's latest trip to ALARM, with an optional comment (audited by the service)."""
    caller = caller_from_request(request)
    alarm = svc.alarm_get_for(caller=caller, alarm_id=alarm_id)
    form = AlarmAcknowledgeForm(request.POST)
    if form.is_valid():
        url = reverse("audit:alarm_detail", args=[alarm.pk])
        try:
            svc.alarm_acknowledge(caller=caller, alarm=alarm, comment=form.cleaned_data["comment"])
        except ValidationError as exc:
            # Nothing left to acknowledge (someone else just did): said on the page, in place of the form.
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Acknowledged “{alarm.name}”.")
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    return alarm_detail_page(request, caller, alarm, ack_form=form)


def alarm_detail_page(request: Any, caller: Any, alarm: Any, **extra: Any) -> HttpResponse:
    """The detail page with a form's errors shown in place."""
    context = {"alarm": alarm, "history": list(alarm.history.all()[:HISTORY_ROWS]), "nav": "alarms"}
    context.update(_detail_context(caller, alarm, **extra))
    return render(request, "audit/alarm_detail.html", context)


@require_GET
def alarm_data(request: Any, alarm_id: str) -> JsonResponse:
    """The detail chart's data, in the usage charts' shape (kmsweb.js draws both)."""
    caller = caller_from_request(request)
    alarm = svc.alarm_get_for(caller=caller, alarm_id=alarm_id)
    series = alarm_series(alarm=alarm, now=clock.now())
    n = len(series["labels"])
    return JsonResponse(
        {
            "range": "month" if alarm.period >= 86400 else "day",
            "labels": series["labels"],
            "datasets": [
                {"label": alarm.get_metric_display(), "kind": "operation", "data": series["values"]},
                {
                    "label": f"Threshold ({series['comparison']} {alarm.threshold:g})",
                    "kind": "threshold",
                    "data": [alarm.threshold] * n,
                },
            ],
            "total": sum(v or 0 for v in series["values"]),
        }
    )


def _form_page(request: Any, template_context: dict[str, Any], status: int = 200) -> HttpResponse:
    return render(request, "audit/alarm_form.html", {"nav": "alarms", **template_context}, status=status)


@require_http_methods(["GET", "POST"])
def alarm_create(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    if request.method == "GET" and not svc.may(caller, "kmsweb:CreateAlarm"):
        # The POST is refused (and audited) by the service; the form is not even shown.
        return _form_page(request, {"refused": True}, status=403)
    form = AlarmForm(request.POST or None, caller=caller)
    if request.method == "POST" and form.is_valid():
        try:
            alarm = svc.alarm_create(caller=caller, spec=form.cleaned_data["spec"])
        except AlreadyExists as exc:
            form.add_error("name", exc.message)
        except ValidationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Created alarm “{alarm.name}”.")
            url = reverse("audit:alarm_detail", args=[alarm.pk])
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    return _form_page(request, {"form": form})


@require_http_methods(["GET", "POST"])
def alarm_edit(request: Any, alarm_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    alarm = svc.alarm_get_for(caller=caller, alarm_id=alarm_id)
    if request.method == "GET" and not svc.may(caller, "kmsweb:UpdateAlarm"):
        return _form_page(request, {"refused": True, "alarm": alarm}, status=403)
    form = AlarmForm(request.POST or None, caller=caller, alarm=alarm)
    if request.method == "POST" and form.is_valid():
        try:
            svc.alarm_update(caller=caller, alarm=alarm, spec=form.cleaned_data["spec"])
        except AlreadyExists as exc:
            form.add_error("name", exc.message)
        except ValidationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Saved alarm “{form.cleaned_data['name']}”.")
            url = reverse("audit:alarm_detail", args=[alarm.pk])
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    return _form_page(request, {"form": form, "alarm": alarm})


@require_POST
def alarm_delete(request: Any, alarm_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    alarm = svc.alarm_get_for(caller=caller, alarm_id=alarm_id)
    svc.alarm_delete(caller=caller, alarm=alarm)
    messages.success(request, f"Deleted alarm “{alarm.name}”.")
    url = reverse("audit:alarm_list")
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
