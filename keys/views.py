"""Key pages. Until the dashboard lands: a plain page of key counts per kind."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from keys.selectors import key_counts_by_kind


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "keys/home.html", {"counts": key_counts_by_kind()})
