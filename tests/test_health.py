"""``/healthz``, ``/readyz`` and ``/metrics`` (kmsweb.health).

/readyz names a failing component (broker, root key, audit writer,
sealing) and nothing more; /metrics opens only to the configured bearer
token and/or networks, judged by REMOTE_ADDR alone, and is off (404) when
neither is configured.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from audit.services import recording
from audit.services.sealing import audit_seal
from audit.services.writer import AuditWriteFailed
from keys.services.material import root_keyring_forget
from kmsweb.health import CHECKS, readiness_cache_clear
from kmsweb.lib.caller import Caller
from tests.conftest import Persona
from tests.gunicorn_nodes import free_port

TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def _fresh_readiness(settings: Any, tmp_path: Path) -> Iterator[None]:
    """Each test computes readiness anew, with an embedded broker whose folders exist."""
    if settings.CELERY_BROKER_URL.startswith("filesystem:"):
        options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
        for name in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            folder = tmp_path / "broker" / name
            folder.mkdir(parents=True, exist_ok=True)
            options[name] = str(folder)
        settings.CELERY_BROKER_TRANSPORT_OPTIONS = options
    readiness_cache_clear()
    yield
    readiness_cache_clear()
    root_keyring_forget()


def _ready(client: Client) -> tuple[int, dict[str, Any]]:
    readiness_cache_clear()
    response = client.get("/readyz")
    return response.status_code, response.json()


@pytest.mark.django_db
def test_it_answers_healthz_without_a_session(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
def test_it_is_ready_when_every_component_is(client: Client) -> None:
    assert _ready(client) == (200, {"status": "ok"})


@pytest.mark.django_db
def test_it_is_not_ready_when_the_broker_is_unreachable(client: Client, settings: Any) -> None:
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    status, body = _ready(client)
    assert (status, body) == (503, {"status": "failing", "failing": ["broker"]})


@pytest.mark.django_db
def test_it_is_not_ready_without_its_root_key(client: Client, settings: Any, tmp_path: Path) -> None:
    settings.KMSWEB_ROOT_KEY_FILE = str(tmp_path / "missing-root-key")
    settings.KMSWEB_ROOT_KEY = None
    root_keyring_forget()
    assert _ready(client) == (503, {"status": "failing", "failing": ["root_key"]})


@pytest.mark.django_db
def test_it_is_not_ready_when_sealing_is_behind(client: Client) -> None:
    recording.audit_record(
        caller=Caller.system("readyz-test"), event_name="ListKeys", event_time=timezone.now() - timedelta(minutes=6)
    )
    assert _ready(client) == (503, {"status": "failing", "failing": ["sealing"]})
    # Sealed: ready again.
    audit_seal(caller=Caller.system("audit-seal"))
    assert _ready(client) == (200, {"status": "ok"})


@pytest.mark.django_db(transaction=True)
def test_it_is_not_ready_while_the_audit_writer_fails(client: Client, key_admin: Persona) -> None:
    if connection.allow_thread_sharing:
        pytest.skip("a live server shares this in-memory SQLite connection: the group writer stands aside")
    with pytest.raises(AuditWriteFailed):
        recording.audit_record(caller=key_admin.caller(), event_name=None, read_only=True, grouped=True)  # type: ignore[arg-type]
    assert _ready(client) == (503, {"status": "failing", "failing": ["audit_writer"]})
    recording.audit_record(caller=key_admin.caller(), event_name="ListKeys", read_only=True, grouped=True)
    assert _ready(client) == (200, {"status": "ok"})


@pytest.mark.django_db
def test_its_answer_names_components_only(client: Client, settings: Any, tmp_path: Path) -> None:
    settings.CELERY_BROKER_URL = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    settings.KMSWEB_ROOT_KEY_FILE = str(tmp_path / "missing-root-key")
    settings.KMSWEB_ROOT_KEY = None
    root_keyring_forget()
    status, body = _ready(client)
    assert status == 503 and set(body) == {"status", "failing"}
    assert set(body["failing"]) == {"broker", "root_key"} and set(body["failing"]) <= set(CHECKS)
    text = client.get("/readyz").content.decode()
    assert "hunter2" not in text and "missing-root-key" not in text and "127.0.0.1" not in text


@pytest.mark.django_db
def test_metrics_are_off_when_nothing_opens_them(client: Client, settings: Any) -> None:
    settings.KMSWEB_METRICS_TOKEN = ""
    settings.KMSWEB_METRICS_ALLOW_CIDRS = []
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


@pytest.mark.django_db
def test_metrics_need_the_right_token(client: Client, settings: Any) -> None:
    settings.KMSWEB_METRICS_TOKEN = TOKEN
    settings.KMSWEB_METRICS_ALLOW_CIDRS = []
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong-token").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for name in (
        "kmsweb_api_requests_total",
        "kmsweb_api_request_duration_seconds",
        "kmsweb_audit_writer_batch_events",
        "kmsweb_audit_writer_commit_seconds",
        "kmsweb_audit_sealing_lag_seconds",
        "kmsweb_job_runs",
        "kmsweb_alarms_in_alarm",
        "kmsweb_compliance_findings_open",
    ):
        assert f"# TYPE {name} " in text, name


@pytest.mark.django_db
def test_metrics_open_to_allowed_addresses_by_remote_addr_only(client: Client, settings: Any) -> None:
    settings.KMSWEB_METRICS_TOKEN = ""
    settings.KMSWEB_METRICS_ALLOW_CIDRS = ["10.1.0.0/16", "::1/128"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 403
    # A forwarded header is the client's to write: never trusted.
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7", HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="not-an-address").status_code == 403


@pytest.mark.django_db
def test_metrics_need_both_when_both_are_configured(client: Client, settings: Any) -> None:
    settings.KMSWEB_METRICS_TOKEN = TOKEN
    settings.KMSWEB_METRICS_ALLOW_CIDRS = ["10.1.0.0/16"]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", **auth).status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7", **auth).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_metrics_count_api_calls_by_operation_and_outcome(client: Client, settings: Any, kms: Any) -> None:
    from prometheus_client import REGISTRY

    def count(operation: str, outcome: str) -> float:
        value = REGISTRY.get_sample_value("kmsweb_api_requests_total", {"operation": operation, "outcome": outcome})
        return value or 0.0

    ok, bad = count("ListKeys", "success"), count("DescribeKey", "client_error")
    kms.list_keys()
    with pytest.raises(Exception, match="NotFoundException"):
        kms.describe_key(KeyId="alias/none-such")
    assert count("ListKeys", "success") == ok + 1
    assert count("DescribeKey", "client_error") == bad + 1

    settings.KMSWEB_METRICS_TOKEN = TOKEN
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    assert 'kmsweb_api_requests_total{operation="ListKeys",outcome="success"}' in text
