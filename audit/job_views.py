"""The Jobs page: the periodic jobs (schedule, last run, next run), one job's
run history, and "Run now" for administrators.

A table polls itself every few seconds only while something is running or
queued; an idle page never polls (each request would extend the session).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import trigger_client_event

from audit.services import job_status
from kmsweb.lib import clock
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import ValidationError
from kmsweb.lib.htmx import wants_partial
from policies.callers import caller_from_request
from policies.roles import role_allows

POLL_SECONDS = 3
# A queued run a worker never took stops being shown (and polled for) after this.
QUEUED_FOR_AT_MOST = timedelta(minutes=10)


def _queued(value: str | None) -> tuple[str, datetime] | None:
    """``?queued=NAME@ISO``: a run this page queued, shown until a worker starts it."""
    name, _, moment = (value or "").partition("@")
    when = parse_datetime(moment) if moment else None
    if not name or when is None or when.tzinfo is None:
        return None
    return name, when


def _table_context(caller: Caller, queued: tuple[str, datetime] | None) -> dict[str, Any]:
    jobs = job_status.job_list(caller=caller)
    now = clock.now()
    waiting = ""
    # A time from the future (a hand-made URL) is ignored, allowing for clock skew between servers.
    if queued is not None and -timedelta(minutes=1) < now - queued[1] < QUEUED_FOR_AT_MOST:
        for status in jobs:
            if status.job.name == queued[0] and (status.last is None or status.last.started_at < queued[1]):
                waiting = status.job.name
    rows = [(status, status.job.name == waiting) for status in jobs]
    poll_query = urlencode({"queued": f"{queued[0]}@{queued[1].isoformat()}"}) if waiting and queued else ""
    return {
        "rows": rows,
        "polling": waiting != "" or any(status.running for status in jobs),
        "poll_query": poll_query,
        "poll_seconds": POLL_SECONDS,
        "can_run": role_allows(caller.roles, "kmsweb:RunJob"),
        "nav": "jobs",
    }


@require_GET
@vary_on_headers("HX-Request")
def job_list(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    context = _table_context(caller, _queued(request.GET.get("queued")))
    template = "audit/partials/job_table.html" if wants_partial(request) else "audit/job_list.html"
    return render(request, template, context)


@require_POST
def job_start(request: Any, name: str) -> HttpResponse:
    caller = caller_from_request(request)
    queued_at = job_status.job_start(caller=caller, name=name)
    if not wants_partial(request):
        messages.success(request, f"Queued a run of {name}.")
        return redirect(f"{reverse('audit:job_list')}?{urlencode({'queued': f'{name}@{queued_at.isoformat()}'})}")
    response = render(request, "audit/partials/job_table.html", _table_context(caller, (name, queued_at)))
    return trigger_client_event(response, "jobQueued", {"name": name})


@require_GET
@vary_on_headers("HX-Request")
def job_detail(request: Any, name: str) -> HttpResponse:
    caller = caller_from_request(request)
    before = request.GET.get("before") or None
    error = None
    try:
        page = job_status.job_runs(caller=caller, name=name, before=before)
    except ValidationError as exc:
        # A mangled cursor: say so and show the newest runs instead.
        error, before = exc.message, None
        page = job_status.job_runs(caller=caller, name=name)
    context = {
        "page": page,
        "status": page.job,
        "first_page": before is None,
        "polling": before is None and page.job.running,
        "poll_seconds": POLL_SECONDS,
        "error": error,
        "nav": "jobs",
    }
    template = "audit/partials/job_runs.html" if wants_partial(request) else "audit/job_detail.html"
    return render(request, template, context)
