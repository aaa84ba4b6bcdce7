"""The Audit page in a real browser: search, filter, page, open an event,
export with the progress bar, download the bundle and verify it offline."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from audit import exports
from keys import services
from kmsweb.celery import app as celery_app
from kmsweb.lib.errors import AccessDenied
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser
from tests.e2e.test_dashboard import sign_in

pytestmark = pytest.mark.usefixtures("transactional_db")


@pytest.fixture
def eager_celery() -> Iterator[None]:
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture
def trail(key_admin: Persona, outsider: Persona) -> None:
    caller = key_admin.caller(source_ip="192.0.2.10")
    key = services.key_create(caller=caller, description="audited in the browser")
    for i in range(60):
        services.key_encrypt(caller=caller, key=key, plaintext=f"p{i}".encode())
    with pytest.raises(AccessDenied):
        services.key_encrypt(caller=outsider.caller(), key=key, plaintext=b"no")


def test_it_searches_opens_an_event_and_downloads_a_verified_export(
    page: Any, auditor_user: Any, trail: None, eager_celery: None, tmp_path: Path, settings: Any
) -> None:
    settings.KMSWEB_AUDIT_EXPORT_DIR = tmp_path / "exports"
    sign_in(page, auditor_user)
    page.click("nav >> text=Audit")
    expect(page.locator("h1")).to_have_text("Audit")
    expect(page.locator("#audit-integrity")).to_contain_text("Intact")
    rows = page.locator("#audit-table tbody tr")
    expect(rows).to_have_count(50)
    # Filter: HTMX swaps the table and pushes the URL.
    page.fill("input[name=event]", "Encrypt")
    page.fill("input[name=ip]", "192.0.2.10")
    page.click("#audit-filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"/audit/\?.*event=Encrypt"))
    expect(rows).to_have_count(50)
    page.click("#audit-pager >> text=Next")
    expect(rows).to_have_count(10)
    expect(page).to_have_url(re.compile(r"after="))
    page.click("#audit-pager >> text=Previous")
    expect(rows).to_have_count(50)
    # Denials, and the decision on the event page.
    page.goto("/audit/?outcome=denied")
    expect(rows).to_have_count(1)
    page.locator("#audit-table tbody tr a").first.click()
    expect(page.locator("#audit-event-record")).to_contain_text('"errorCode": "AccessDeniedException"')
    # Export this search: progress polling, then the download link.
    page.goto("/audit/?event=Encrypt")
    page.select_option("select[name=format]", "jsonl")
    page.click("#audit-export-start")
    link = page.locator("#audit-export-download")
    expect(link).to_be_visible(timeout=15_000)
    expect(page.locator("#audit-export progress")).to_have_attribute("value", "100")
    with page.expect_download() as info:
        link.click()
    zipped = tmp_path / "export.zip"
    info.value.save_as(zipped)
    bundle = tmp_path / "bundle"
    zipfile.ZipFile(zipped).extractall(bundle)
    check = exports.verify_bundle(bundle)
    assert check.ok, check.problems
    assert len((bundle / "events.jsonl").read_text().splitlines()) == 61  # and the outsider's denied Encrypt


def test_it_offers_aliases_as_you_type_a_key_and_searches_by_alias(
    page: Any, auditor_user: DashboardUser, key_admin: Persona
) -> None:
    from keys.services.aliases import alias_create

    key = services.key_create(caller=key_admin.caller(), description="invoice archive")
    alias_create(caller=key_admin.caller(), name="alias/invoices", key=key)
    services.key_encrypt(caller=key_admin.caller(), key=key, plaintext=b"x")
    sign_in(page, auditor_user)
    page.goto("/audit/")

    page.locator("#audit-key").press_sequentially("invo", delay=30)

    expect(page.locator("#audit-key-suggestions option")).to_have_count(1)
    assert page.locator("#audit-key-suggestions option").get_attribute("value") == "alias/invoices"
    page.fill("#audit-key", "alias/invoices")
    page.click("#audit-filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"key=alias%2Finvoices"))
    expect(page.locator("#audit-table")).not_to_contain_text("ConsoleLogin")
    expect(page.locator("#audit-table")).to_contain_text("Encrypt")
    expect(page.locator("#audit-errors")).to_have_count(0)
    for row in page.locator("#audit-table tbody tr").all():
        assert str(key.id) in row.inner_text()
