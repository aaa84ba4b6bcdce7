"""Operating kmsweb: ``/healthz``, ``/readyz`` and ``/metrics``.

- ``/healthz``: the process is up and answers (no database, nothing else).
- ``/readyz``: the process can serve: the database answers, the Celery
  broker accepts a connection, the root key loads, this process's audit
  writer is not failing, and sealing is not more than five minutes behind.
  The answer names the failing components and nothing more (no message, no
  host); it is computed at most once a second per process, so a load
  balancer may ask every second.
- ``/metrics``: Prometheus' text format (``kmsweb.metrics``, plus what the
  database knows, read at scrape time). Open only to a request that carries
  ``Authorization: Bearer <KMSWEB_METRICS_TOKEN>`` and/or comes from an
  address in ``KMSWEB_METRICS_ALLOW_CIDRS`` (``REMOTE_ADDR``, never a
  forwarded header); with both set, both are required; with neither, 404.

The three are open views (no dashboard login): probes and scrapers have no
session.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

# Sealing further behind than this makes the process not ready.
SEALING_READY_SECONDS = 300
READY_CACHE_SECONDS = 1.0

_ready_lock = threading.Lock()
_ready_cache: list[tuple[float, list[str]]] = []


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_broker() -> None:
    from kombu import Connection

    url = settings.CELERY_BROKER_URL
    options = dict(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {})
    if url.startswith("filesystem:"):
        # The embedded broker is its folders: they must be there and writable.
        for key in ("data_folder_in", "data_folder_out", "control_folder"):
            folder = options.get(key)
            if folder and not os.access(str(folder), os.W_OK):
                raise OSError("broker folder not writable")
        return
    with Connection(url, transport_options=options, connect_timeout=1) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=1)


def _check_root_key() -> None:
    from keys.services.material import root_key_provider

    root_key_provider()


def _check_audit_writer() -> None:
    from audit.services.writer import group_writers

    if any(writer.failing() for writer in group_writers()):
        raise RuntimeError("audit writer failing")


def _check_sealing() -> None:
    from audit.selectors import sealing_status
    from kmsweb.lib import clock

    status = sealing_status(now=clock.now(), behind_after=timedelta(seconds=SEALING_READY_SECONDS))
    if status.lagging:
        raise RuntimeError("sealing behind")


CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "broker": _check_broker,
    "root_key": _check_root_key,
    "audit_writer": _check_audit_writer,
    "sealing": _check_sealing,
}


def readiness_failures() -> list[str]:
    """The names of the failing components (empty: ready), at most ``READY_CACHE_SECONDS`` old."""
    now = time.monotonic()
    cached = _ready_cache[0] if _ready_cache else None
    if cached is not None and cached[0] > now:
        return cached[1]
    with _ready_lock:
        cached = _ready_cache[0] if _ready_cache else None
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        failing = []
        for name, check in CHECKS.items():
            try:
                check()
            except Exception:
                # Logged here, never shown: the answer names the component only.
                logger.warning("readiness check %s failed", name, exc_info=True)
                failing.append(name)
                if name == "database":
                    # What follows reads the database too; a broken
                    # connection is replaced on the next check.
                    connection.close_if_unusable_or_obsolete()
        _ready_cache[:] = [(time.monotonic() + READY_CACHE_SECONDS, failing)]
        return failing


def readiness_cache_clear() -> None:
    """Forget the cached readiness (tests)."""
    _ready_cache.clear()


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up."""
    return JsonResponse({"status": "ok"})


@login_not_required
@never_cache
@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """200 when every component is ready; 503 naming the failing ones."""
    failing = readiness_failures()
    if failing:
        return JsonResponse({"status": "failing", "failing": failing}, status=503)
    return JsonResponse({"status": "ok"})


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _address_allowed(remote_addr: str, cidrs: Iterable[str]) -> bool:
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(cidrs)))


def _token_matches(header: str, token: str) -> bool:
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def metrics_access(request: HttpRequest) -> int | None:
    """None when ``request`` may read the metrics, else the HTTP status to refuse it with."""
    token = settings.KMSWEB_METRICS_TOKEN
    cidrs = settings.KMSWEB_METRICS_ALLOW_CIDRS
    if not token and not cidrs:
        return 404
    if cidrs and not _address_allowed(request.META.get("REMOTE_ADDR", ""), cidrs):
        return 403
    if token and not _token_matches(request.META.get("HTTP_AUTHORIZATION", ""), token):
        return 401
    return None


class DatabaseCollector:
    """What the database knows, read at each scrape: sealing lag, jobs, alarms, findings."""

    def collect(self) -> Iterable[Any]:
        from django.db.models import Count
        from prometheus_client.core import GaugeMetricFamily

        from audit.models import Alarm, AlarmState, JobRun
        from audit.selectors import sealing_status
        from compliance.models import Finding
        from kmsweb.lib import clock

        status = sealing_status(now=clock.now(), behind_after=timedelta(seconds=SEALING_READY_SECONDS))
        lag = GaugeMetricFamily(
            "kmsweb_audit_sealing_lag_seconds", "Age of the oldest audit event not yet sealed (0: all sealed)."
        )
        lag.add_metric([], status.lag.total_seconds() if status.lag is not None else 0.0)
        yield lag
        runs = GaugeMetricFamily(
            "kmsweb_job_runs", "Background job runs on record, by job and outcome.", labels=["job", "outcome"]
        )
        for row in JobRun.objects.values("name", "outcome").annotate(n=Count("id")).order_by():
            runs.add_metric([row["name"], row["outcome"]], row["n"])
        yield runs
        alarms = GaugeMetricFamily("kmsweb_alarms_in_alarm", "Alarms in the ALARM state.")
        alarms.add_metric([], Alarm.objects.filter(state=AlarmState.ALARM).count())
        yield alarms
        findings = GaugeMetricFamily(
            "kmsweb_compliance_findings_open", "Open compliance findings, by severity.", labels=["severity"]
        )
        for severity, n in Finding.objects.open().values_list("severity").annotate(n=Count("id")).order_by():
            findings.add_metric([severity], n)
        yield findings


@login_not_required
@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus scrape, for an allowed scraper (see ``metrics_access``)."""
    refused = metrics_access(request)
    if refused is not None:
        response = HttpResponse(status=refused)
        if refused == 401:
            response["WWW-Authenticate"] = 'Bearer realm="kmsweb metrics"'
        return response
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    process = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        process = CollectorRegistry()
        multiprocess.MultiProcessCollector(process)
    database = CollectorRegistry()
    database.register(DatabaseCollector())  # type: ignore[arg-type]
    body = generate_latest(process) + generate_latest(database)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
