"""The Prometheus metrics each web process records (scraped at ``/metrics``, ``kmsweb.health``).

With several gunicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory before the server starts (``manage.py serve`` does): every worker
then writes its samples there and a scrape, whichever worker answers it,
adds them up (prometheus_client's multiprocess mode). Without it a scrape
sees only the process that answers, which is right for one process
(threaded) and nothing more.

What the database knows (sealing lag, job runs, alarms in ALARM, open
compliance findings) is read when scraped, not kept here.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from kmsweb.lib import operations

API_REQUESTS = Counter(
    "kmsweb_api_requests_total",
    "KMS API calls answered, by operation and outcome (success, client_error, server_error).",
    ["operation", "outcome"],
)
API_LATENCY = Histogram(
    "kmsweb_api_request_duration_seconds",
    "Time to answer a KMS API call, by operation and outcome.",
    ["operation", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
AUDIT_WRITER_BATCH = Histogram(
    "kmsweb_audit_writer_batch_events",
    "Audit events committed together by the group writer, per transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
AUDIT_WRITER_COMMIT = Histogram(
    "kmsweb_audit_writer_commit_seconds",
    "Time to write and commit one batch of audit events.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
AUDIT_WRITER_FAILURES = Counter(
    "kmsweb_audit_writer_failures_total",
    "Batches of audit events the group writer could not commit (their calls failed).",
)
GENERATION_RETRIES = Counter(
    "kmsweb_api_generation_retries_total",
    "Read-only KMS calls served again because a cached table changed while they ran on the cache "
    "generations they assumed (their first attempt left no event and no answer).",
)

# Label values are bounded: an operation kmsweb does not know is "Unknown".
_OPERATIONS = frozenset(operations.OPERATIONS)


def outcome_of(status: int) -> str:
    if status < 400:
        return "success"
    return "client_error" if status < 500 else "server_error"


def api_observe(operation: str, status: int, seconds: float) -> None:
    """Count one answered API call and its latency."""
    name = operation if operation in _OPERATIONS else "Unknown"
    outcome = outcome_of(status)
    API_REQUESTS.labels(name, outcome).inc()
    API_LATENCY.labels(name, outcome).observe(seconds)
