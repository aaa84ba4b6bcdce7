"""The Audit page, event detail, export jobs and public keys, server side:
roles, filters, keyset paging, HTMX partials, bad input, the export's polling."""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audit import exports
from audit.models import AuditEvent, AuditExport
from audit.services.recording import audit_record
from audit.services.sealing import audit_seal
from keys.models import Key
from keys.services.aliases import alias_create
from kmsweb.celery import app as celery_app
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
ROW = re.compile(r'href="/audit/events/([0-9a-f-]{36})/"')


@pytest.fixture
def auditor(auditor_user: DashboardUser, signed_in: Any) -> Client:
    return signed_in(auditor_user)


@pytest.fixture
def viewer(viewer_user: DashboardUser, signed_in: Any) -> Client:
    return signed_in(viewer_user)


@pytest.fixture
def events(key_admin: Persona, key: Key, outsider: Persona) -> dict[str, Any]:
    """A known mix: 30 Encrypts from 10.0.0.1, 2 denials from 10.0.0.2, one error, one system job."""
    admin = key_admin.caller(source_ip="10.0.0.1")
    base = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    made: dict[str, Any] = {"base": base}
    for i in range(30):
        audit_record(
            caller=admin,
            event_name="Encrypt",
            keys=[key],
            request_parameters={"KeyId": str(key.id), "EncryptionContext": {"order": f"o-{i}"}},
            event_time=base + timedelta(minutes=i),
            read_only=True,
        )
    denier = key_admin.caller(source_ip="10.0.0.2")
    for i in range(2):
        error = AccessDenied("not allowed")
        error.decision = {"allowed": False, "reason": "explicit deny", "statement": "DenyAll"}
        audit_record(
            caller=denier,
            event_name="Decrypt",
            keys=[key],
            error=error,
            additional_event_data={"decision": error.decision},
            event_time=base + timedelta(hours=1, minutes=i),
        )
    from kmsweb.lib.errors import InvalidState

    audit_record(caller=admin, event_name="ScheduleKeyDeletion", keys=[key], error=InvalidState("bad"), event_time=base)
    audit_record(caller=Caller.system("rotation"), event_name="RotateKey", keys=[key], event_time=base)
    made["key"] = key
    made["admin"] = admin
    return made


def ids_of(response: Any) -> list[str]:
    return ROW.findall(response.content.decode())


def table(client: Client, query: str = "", **headers: str) -> Any:
    response = client.get(f"/audit/{query}", **headers)
    assert response.status_code == 200, response.content[:500]
    return response


def search(client: Client, **params: str) -> list[AuditEvent]:
    from urllib.parse import urlencode

    ids = ids_of(table(client, "?" + urlencode(params), **HX))
    return [AuditEvent.objects.get(event_id=i) for i in ids]


# -- permissions -------------------------------------------------------------------


def test_it_shows_the_audit_page_to_an_auditor(
    auditor: Client, events: dict[str, Any], auditor_user: DashboardUser
) -> None:
    visible = AuditEvent.objects.filter(recipient_account_id__in=[auditor_user.principal.account_id, ""]).count()
    response = table(auditor)
    html = response.content.decode()
    assert "<h1>Audit</h1>" in html and 'id="audit-table"' in html
    assert 'href="/audit/"' in html and "Export this search" in html
    assert len(ids_of(response)) == min(50, visible) and visible > 34
    # Looking is recorded.
    looked = AuditEvent.objects.filter(event_name="LookupEvents").order_by("-id").first()
    assert looked.error_code == "" and looked.origin == "dashboard"


def test_it_refuses_the_audit_page_and_exports_to_a_viewer(viewer: Client, events: dict[str, Any]) -> None:
    response = viewer.get("/audit/")
    assert response.status_code == 302
    refused = AuditEvent.objects.filter(event_name="LookupEvents").order_by("-id").first()
    assert refused.error_code == "AccessDeniedException"
    fragment = viewer.get("/audit/", **HX)
    assert fragment.status_code == 200 and "AccessDeniedException" in fragment.content.decode()
    assert "<html" not in fragment.content.decode()
    response = viewer.post("/audit/exports/", {"format": "jsonl"}, **HX)
    assert "AccessDeniedException" in response.content.decode() or "not authorized" in response.content.decode()
    assert not AuditExport.objects.exists()
    started = AuditEvent.objects.filter(event_name="StartAuditExport").get()
    assert started.error_code == "AccessDeniedException"
    event = AuditEvent.objects.filter(event_name="Encrypt").first()
    assert viewer.get(f"/audit/events/{event.event_id}/").status_code == 302


def test_the_public_keys_need_no_sign_in(events: dict[str, Any], client: Client) -> None:
    audit_seal(caller=Caller.system("tests"))
    response = client.get("/audit/public-keys")
    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert key["current"] is True and key["publicKeyPem"].startswith("-----BEGIN PUBLIC KEY-----")
    from keys.crypto.signatures import public_key_fingerprint

    assert public_key_fingerprint(key["publicKeyPem"]) == key["fingerprint"]
    pem = client.get(f"/audit/public-keys/{key['fingerprint']}.pem")
    assert pem.status_code == 200 and pem.content.decode() == key["publicKeyPem"]
    assert client.get("/audit/public-keys/" + "0" * 64 + ".pem").status_code == 404
    assert client.get("/audit/").status_code == 302  # the rest of /audit/ is not public


# -- filters, sort, paging ------------------------------------------------------------


def test_it_filters_by_each_field(auditor: Client, events: dict[str, Any], key_admin: Persona) -> None:
    key = events["key"]
    assert {e.event_name for e in search(auditor, event="Decrypt")} == {"Decrypt"}
    assert len(search(auditor, outcome="denied")) == 2
    assert [e.error_code for e in search(auditor, outcome="error")] == ["KMSInvalidStateException"]
    assert all(e.error_code == "" for e in search(auditor, outcome="success", per_page="100"))
    assert {e.origin for e in search(auditor, origin="system")} == {"system"}
    assert {e.source_ip for e in search(auditor, ip="10.0.0.2")} == {"10.0.0.2"}
    assert {e.key_id for e in search(auditor, key=key.arn, per_page="100")} == {str(key.id)}
    assert {e.principal_arn for e in search(auditor, principal=key_admin.principal.arn, per_page="100")} == {
        key_admin.principal.arn
    }
    found = search(auditor, q="o-17")
    assert [e.request_parameters["encryptionContext"]["order"] for e in found] == ["o-17"]
    base = events["base"]
    ranged = search(
        auditor, since=(base + timedelta(minutes=10)).isoformat(), until=(base + timedelta(minutes=13)).isoformat()
    )
    assert [e.event_time.minute for e in ranged] == [12, 11, 10]


def test_it_finds_a_key_s_events_by_its_alias_or_alias_arn(
    auditor: Client, events: dict[str, Any], key_admin: Persona
) -> None:
    key = events["key"]
    alias_create(caller=key_admin.caller(), name="alias/demo", key=key)
    by_id = {e.event_id for e in search(auditor, key=str(key.id), per_page="100")}

    assert {e.event_id for e in search(auditor, key="alias/demo", per_page="100")} == by_id
    alias_arn = f"arn:aws:kms:{key.region}:{key.account_id}:alias/demo"
    assert {e.event_id for e in search(auditor, key=alias_arn, per_page="100")} == by_id
    # The key column names the key by alias, its id on a muted line.
    listed = table(auditor, "?key=alias/demo", **HX).content.decode()
    assert f'<td>alias/demo<span class="key-id mono muted">{key.id}</span></td>' in listed
    page = table(auditor, "?key=alias/nothing-here", **HX).content.decode()
    assert "No alias &#x27;alias/nothing-here&#x27; in this account." in page


def test_it_hides_routine_events_unless_asked(auditor: Client, events: dict[str, Any], key_admin: Persona) -> None:
    key = events["key"]
    base = events["base"]
    audit_record(caller=Caller.system("jobs"), event_name="RunJob", event_time=base, request_parameters={"n": 1})
    reader = replace(key_admin.caller(), origin="dashboard")
    audit_record(caller=reader, event_name="DescribeKey", keys=[key], read_only=True, event_time=base)
    denied = AccessDenied("no")
    audit_record(caller=reader, event_name="DescribeKey", keys=[key], read_only=True, error=denied, event_time=base)

    shown = {(e.event_name, e.error_code) for e in search(auditor, per_page="100")}
    everything = {(e.event_name, e.error_code) for e in search(auditor, per_page="100", routine="show")}

    assert ("RunJob", "") not in shown and ("DescribeKey", "") not in shown
    assert ("DescribeKey", "AccessDeniedException") in shown  # a denial is never routine
    assert {("RunJob", ""), ("DescribeKey", "")} <= everything
    assert ("Encrypt", "") in shown  # API reads are not the dashboard's own


def test_it_offers_date_presets_that_move_with_the_clock(auditor: Client, events: dict[str, Any]) -> None:
    now = timezone.now()
    admin, key = events["admin"], events["key"]
    for minutes, name in ((10, "GenerateDataKey"), (120, "ReEncrypt")):
        audit_record(caller=admin, event_name=name, keys=[key], event_time=now - timedelta(minutes=minutes))

    # A preset wins over a typed date.
    last_hour = {e.event_name for e in search(auditor, range="1h", since="2001-01-01", per_page="100")}
    last_day = {e.event_name for e in search(auditor, range="24h", per_page="100")}

    assert "GenerateDataKey" in last_hour and "ReEncrypt" not in last_hour and "Encrypt" not in last_hour
    assert {"GenerateDataKey", "ReEncrypt"} <= last_day
    pager = table(auditor, "?range=1h").content.decode().split('id="audit-pager"')[1]
    assert "since=" not in pager  # links keep the preset, not a date frozen at the first search
    assert "Unknown range" in table(auditor, "?range=2y", **HX).content.decode()


def test_it_labels_every_search_field(auditor: Client, events: dict[str, Any]) -> None:
    page = table(auditor).content.decode()
    form = page.split('id="audit-filters"')[1].split("</form>")[0]
    ids = re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', form)
    assert len(ids) >= 11
    for field_id in ids:
        assert f'<label for="{field_id}"' in form or f'class="check" for="{field_id}"' in form, field_id
    # The export panel comes before the results.
    assert page.index('id="audit-export-panel"') < page.index('id="audit-table"')


def test_it_sorts_and_pages_with_keyset_cursors(auditor: Client, events: dict[str, Any]) -> None:
    everything = list(AuditEvent.objects.filter(event_name="Encrypt").order_by("-event_time", "-id"))
    first = table(auditor, "?event=Encrypt&per_page=25", **HX)
    page1 = ids_of(first)
    assert page1 == [str(e.event_id) for e in everything[:25]]
    older = re.search(r'href="(\?[^"]*after=[^"]+)"', first.content.decode()).group(1).replace("&amp;", "&")
    second = table(auditor, older, **HX)
    assert ids_of(second) == [str(e.event_id) for e in everything[25:]]
    newer = re.search(r'href="(\?[^"]*before=[^"]+)"', second.content.decode()).group(1).replace("&amp;", "&")
    assert ids_of(table(auditor, newer, **HX)) == page1
    ascending = ids_of(table(auditor, "?event=Encrypt&sort=time&per_page=25", **HX))
    assert ascending == [str(e.event_id) for e in reversed(everything)][:25]


def test_a_bad_filter_value_is_shown_inline_and_keeps_the_input(auditor: Client, events: dict[str, Any]) -> None:
    response = table(auditor, "?outcome=maybe&since=yesterday&principal=arn:aws:iam::111122223333:user/ghost")
    html = response.content.decode()
    assert "Unknown outcome &#x27;maybe&#x27;" in html
    assert "&#x27;yesterday&#x27; is not a date or time" in html
    assert "Unknown principal" in html
    assert 'value="yesterday"' in html
    assert ids_of(response) == []
    assert table(auditor, "?after=garbage", **HX).content.decode().count("damaged") == 1


def test_the_page_runs_a_bounded_number_of_queries(
    auditor: Client, events: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    # The full page adds the integrity panel: a fixed handful of queries, whatever the trail's size.
    with django_assert_max_num_queries(26):
        table(auditor, "?per_page=100")
    with django_assert_max_num_queries(16):
        table(auditor, "?per_page=100&outcome=denied", **HX)


# -- event detail ----------------------------------------------------------------------


def test_the_detail_shows_the_full_record_and_the_decision(auditor: Client, events: dict[str, Any]) -> None:
    denial = AuditEvent.objects.filter(error_code="AccessDeniedException").first()
    response = auditor.get(f"/audit/events/{denial.event_id}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="audit-event-decision"' in html and "explicit deny" in html
    assert "&quot;eventID&quot;: &quot;" + str(denial.event_id) in html
    assert "not yet (sealing runs every minute)" in html
    audit_seal(caller=Caller.system("tests"))
    assert "in digest 1" in auditor.get(f"/audit/events/{denial.event_id}/").content.decode()
    ok = AuditEvent.objects.filter(event_name="Encrypt").first()
    assert 'id="audit-event-decision"' not in auditor.get(f"/audit/events/{ok.event_id}/").content.decode()


def test_the_detail_of_an_unknown_event_is_a_clear_error(auditor: Client, events: dict[str, Any]) -> None:
    response = auditor.get("/audit/events/00000000-0000-0000-0000-000000000000/", **HX)
    assert "NotFoundException" in response.content.decode()


# -- export jobs ------------------------------------------------------------------------


@pytest.fixture
def eager_celery() -> Any:
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def test_an_auditor_exports_with_progress_and_downloads_a_bundle_that_verifies(
    auditor: Client, events: dict[str, Any], eager_celery: Any, django_capture_on_commit_callbacks: Any, tmp_path: Path
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = auditor.post("/audit/exports/", {"format": "jsonl", "event": "Encrypt"}, **HX)
    export = AuditExport.objects.get()
    assert export.state == "done" and export.total == 30
    # The answer to the POST polls the job (which ran, eagerly, once the request committed).
    assert f'hx-get="/audit/exports/{export.id}/" hx-trigger="every 2s"' in response.content.decode()
    status = auditor.get(f"/audit/exports/{export.id}/", **HX)
    assert status.status_code == 286  # htmx stops polling
    assert 'id="audit-export-download"' in status.content.decode()
    download = auditor.get(f"/audit/exports/{export.id}/download/")
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    bundle = tmp_path / "unzipped"
    zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).extractall(bundle)
    assert exports.verify_bundle(bundle).ok
    lines = (bundle / "events.jsonl").read_text().splitlines()
    assert len(lines) == 30 and all(json.loads(line)["eventName"] == "Encrypt" for line in lines)
    names = list(AuditEvent.objects.filter(event_name__contains="Export").values_list("event_name", "origin"))
    assert names == [
        ("StartAuditExport", "dashboard"),
        ("ExportAuditEvents", "system"),
        ("DownloadAuditExport", "dashboard"),
    ]


def test_it_says_how_many_events_the_bundle_holds_and_who_asked_for_it(
    auditor: Client,
    auditor_user: DashboardUser,
    events: dict[str, Any],
    eager_celery: Any,
    django_capture_on_commit_callbacks: Any,
    tmp_path: Path,
) -> None:
    # An unfiltered export: the request's own StartAuditExport event falls in its range too.
    with django_capture_on_commit_callbacks(execute=True):
        auditor.post("/audit/exports/", {"format": "jsonl"}, **HX)
    export = AuditExport.objects.get()
    download = auditor.get(f"/audit/exports/{export.id}/download/")
    bundle = tmp_path / "unzipped"
    zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).extractall(bundle)
    held = len((bundle / "events.jsonl").read_text().splitlines())

    status = auditor.get(f"/audit/exports/{export.id}/", **HX).content.decode()

    assert f" {held} events " in status
    manifest = json.loads((bundle / exports.MANIFEST).read_text())
    assert manifest["requestedBy"] == auditor_user.arn


def test_a_running_export_keeps_polling(auditor: Client, events: dict[str, Any], auditor_user: DashboardUser) -> None:
    export = AuditExport.objects.create(
        account_id=auditor_user.principal.account_id,
        requested_by=auditor_user.arn,
        format="csv",
        total=200,
        progress=50,
        state="running",
        created_at=datetime.now(UTC),
    )
    response = auditor.get(f"/audit/exports/{export.id}/", **HX)
    html = response.content.decode()
    assert response.status_code == 200 and 'hx-trigger="every 2s"' in html and 'value="25"' in html
    assert auditor.get(f"/audit/exports/{export.id}/download/", **HX).content.decode().count("not ready") == 1


def test_an_export_request_with_a_bad_filter_or_format_is_refused(auditor: Client, events: dict[str, Any]) -> None:
    html = auditor.post("/audit/exports/", {"format": "jsonl", "outcome": "maybe"}, **HX).content.decode()
    assert "Unknown outcome" in html
    html = auditor.post("/audit/exports/", {"format": "xml"}, **HX).content.decode()
    assert "Unknown format &#x27;xml&#x27;" in html
    html = auditor.post("/audit/exports/", {"format": "jsonl", "event": "NeverHappened"}, **HX).content.decode()
    assert "No event matches" in html
    assert not AuditExport.objects.exists()
