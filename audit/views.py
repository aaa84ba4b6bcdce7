"""Dashboard pages of the audit trail: search, event detail, export jobs,
and the public signing keys.

Views parse, build a Caller, call one service or selector, and render. The
Audit page's state lives in its URL (filters, sort, keyset cursor).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseStopPolling

from audit import selectors
from audit.canonical import OUTCOMES
from audit.exports import FORMATS
from audit.filters import ORIGINS
from audit.models import ExportState
from audit.services.exporting import audit_export_download, audit_export_request
from audit.services.lookup import audit_event_open, audit_search
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidState, ValidationError
from kmsweb.lib.htmx import wants_partial
from policies.callers import caller_from_request
from policies.roles import role_allows

RANGE_CHOICES = [
    ("", "Any time / custom range"),
    ("1h", "Last hour"),
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
]


def _page_context(request: Any, caller: Caller) -> dict[str, Any]:
    flt, errors = selectors.audit_filter_for(caller=caller, params=request.GET)
    page = None
    try:
        page = audit_search(caller=caller, flt=flt, errors=errors)
    except ValidationError:
        if not errors:
            raise
    links = {"first": flt.query(after="", before="")}
    if page is not None:
        links["newer"] = flt.query(before=page.newer, after="") if page.newer else ""
        links["older"] = flt.query(after=page.older, before="") if page.older else ""
    return {
        "flt": flt,
        "links": links,
        "errors": errors,
        # The form shows what the user typed, even when it did not parse.
        "typed": {
            name: request.GET.get(name, "")
            for name in ("range", "since", "until", "event", "key", "principal", "ip", "q")
        },
        "range_choices": RANGE_CHOICES,
        "outcomes": OUTCOMES,
        "origins": ORIGINS,
        "page": page,
        "nav": "audit",
    }


@require_GET
@vary_on_headers("HX-Request")
def event_list(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    context = _page_context(request, caller)
    if wants_partial(request):
        return render(request, "audit/partials/event_table.html", context)
    context.update(
        {
            "formats": FORMATS,
            "can_export": role_allows(caller.roles, "kmsweb:ExportAudit"),
            "exports": selectors.exports_for(caller=caller),
            "signing_keys": selectors.public_keys(),
            "integrity": selectors.trail_integrity(caller=caller),
        }
    )
    return render(request, "audit/event_list.html", context)


@require_GET
def event_detail(request: Any, event_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    event = audit_event_open(caller=caller, event_id=event_id)
    record = selectors.event_record(event)
    decision = (event.additional_event_data or {}).get("decision")
    context = {
        "event": event,
        "record_json": json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False),
        "decision_json": json.dumps(decision, indent=2, sort_keys=True) if decision is not None else None,
        "digest": selectors.event_digest(event),
        "nav": "audit",
    }
    return render(request, "audit/event_detail.html", context)


@require_POST
def export_create(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    flt, errors = selectors.audit_filter_for(caller=caller, params=request.POST)
    fmt = request.POST.get("format", "")
    context: dict[str, Any] = {"export": None, "error": None}
    if errors:
        context["error"] = "; ".join(errors.values())
    else:
        try:
            context["export"] = audit_export_request(caller=caller, fmt=fmt, flt=flt)
        except (ValidationError, InvalidState) as exc:
            context["error"] = exc.message
    return render(request, "audit/partials/export_status.html", context)


@require_GET
def export_status(request: Any, export_id: str) -> HttpResponse:
    caller = caller_from_request(request)
    export = selectors.export_get_for(caller=caller, export_id=export_id)
    response = render(request, "audit/partials/export_status.html", {"export": export})
    if export.state in (ExportState.DONE, ExportState.FAILED):
        # htmx stops polling on 286 (and still swaps the final state in).
        stop = HttpResponseStopPolling()
        stop.content = response.content
        stop["Content-Type"] = response["Content-Type"]
        return stop
    return response


@require_GET
def export_download(request: Any, export_id: str) -> FileResponse:
    caller = caller_from_request(request)
    export = selectors.export_get_for(caller=caller, export_id=export_id)
    path = audit_export_download(caller=caller, export=export)
    return FileResponse(path.open("rb"), as_attachment=True, filename=path.name, content_type="application/zip")


@login_not_required
@require_GET
def public_keys(request: Any) -> JsonResponse:
    """Every audit signing public key, current and retired (public: no sign-in)."""
    return JsonResponse({"keys": selectors.public_keys()})


@login_not_required
@require_GET
def public_key_pem(request: Any, fingerprint: str) -> HttpResponse:
    for key in selectors.public_keys():
        if key["fingerprint"] == fingerprint.lower():
            response = HttpResponse(key["publicKeyPem"], content_type="application/x-pem-file")
            response["Content-Disposition"] = f'attachment; filename="kmsweb-audit-{fingerprint[:16]}.pem"'
            return response
    raise Http404("No such signing key.")
