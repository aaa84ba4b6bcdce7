"""The sealing banner: every dashboard page warns when audit events wait too
long to be sealed (the worker or beat is down) or the last seal_audit run
failed, and stops once a seal catches up."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from audit.context_processors import sealing_cache_clear
from audit.services.jobs import job_run
from kmsweb.jobs import job_named
from kmsweb.lib.errors import InternalError
from tests import dashboard_fixtures
from tests.dashboard_fixtures import DashboardUser

viewer_user = dashboard_fixtures.viewer_user
auditor_user = dashboard_fixtures.auditor_user
make_dashboard_user = dashboard_fixtures.make_dashboard_user
signed_in = dashboard_fixtures.signed_in

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
BANNER = 'id="sealing-banner"'


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def viewer(clock: time_machine.Coordinates, viewer_user: DashboardUser, signed_in: Any) -> Client:
    return signed_in(viewer_user)  # signing in records events at T0


def page(client: Client, path: str = "/keys/") -> str:
    sealing_cache_clear()
    response = client.get(path)
    assert response.status_code == 200
    return response.content.decode()


def seal() -> None:
    job_run("seal_audit", job_named("seal_audit").function())


def banner(html: str) -> str:
    match = re.search(r'<div class="alarm-banner" id="sealing-banner".*?</div>', html, re.S)
    assert match, "no sealing banner"
    return match.group(0)


@pytest.mark.django_db
def test_it_warns_on_every_page_when_an_event_waits_too_long_to_be_sealed(
    viewer: Client, clock: time_machine.Coordinates
) -> None:
    behind = timedelta(seconds=settings.KMSWEB_SEALING_BEHIND_SECONDS)
    assert settings.KMSWEB_SEALING_BEHIND_SECONDS == 120  # twice seal_audit's minute, at least 2 minutes
    assert BANNER not in page(viewer)
    clock.move_to(T0 + behind)  # exactly at the threshold: not yet
    assert BANNER not in page(viewer)

    clock.move_to(T0 + behind + timedelta(seconds=1))
    for path in ("/keys/", "/", "/usage/"):
        text = banner(page(viewer, path))
        assert "Audit sealing is falling behind." in text
        assert "The oldest unsealed event is from 2025-03-01 12:00:00 UTC (2\xa0minutes ago)." in text
        assert 'href="/jobs/seal_audit/"' in text and "failed" not in text

    seal()  # the worker is back: everything so far is sealed
    assert BANNER not in page(viewer)
    clock.move_to(T0 + 2 * behind)  # only the seal's own event and later page views wait; sealed next run
    seal()
    assert BANNER not in page(viewer)


@pytest.mark.django_db
def test_it_warns_when_the_last_seal_failed_and_clears_when_one_succeeds(viewer: Client) -> None:
    def broken(*, caller: Any, now: datetime) -> None:
        raise RuntimeError("signing key unreadable")

    with pytest.raises(InternalError):
        job_run("seal_audit", broken)
    text = banner(page(viewer))
    assert 'The last seal_audit run failed: <span class="mono">RuntimeError: signing key unreadable</span>' in text
    assert "oldest unsealed" not in text  # nothing has waited long yet
    seal()
    assert BANNER not in page(viewer)


@pytest.mark.django_db
def test_it_costs_one_query_shared_for_a_few_seconds_and_none_signed_out(
    viewer: Client, clock: time_machine.Coordinates
) -> None:
    seal()
    sealing_cache_clear()
    with CaptureQueriesContext(connection) as first:
        viewer.get("/keys/")
    with CaptureQueriesContext(connection) as second:
        viewer.get("/keys/")

    def sealing_queries(ctx: CaptureQueriesContext) -> int:
        return sum('"audit_auditdigest"' in q["sql"] and '"audit_jobrun"' in q["sql"] for q in ctx.captured_queries)

    assert sealing_queries(first) == 1 and sealing_queries(second) == 0
    clock.move_to(T0 + timedelta(days=1))
    with CaptureQueriesContext(connection) as anonymous:
        html = Client().get("/login/").content.decode()
    assert BANNER not in html and sealing_queries(anonymous) == 0
