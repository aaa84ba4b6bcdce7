"""The Jobs page in a real browser: a running job's row refreshes itself until
the run ends, then stops polling; an administrator's "Run now" shows the run
queued, then done; a failed run shows its error; the history page pages.

``KMSWEB_SCREENSHOTS=1`` also saves the page to docs/screenshots/jobs.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from audit.models import JobOutcome, JobRun
from audit.services.jobs import job_run
from kmsweb.celery import app as celery_app
from kmsweb.lib.errors import InternalError
from tests.e2e.test_dashboard import screenshot, sign_in

pytestmark = pytest.mark.usefixtures("transactional_db")


@pytest.fixture
def eager_celery() -> Iterator[None]:
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def broken(*, caller: Any, now: Any) -> None:
    raise RuntimeError("root key provider unreachable")


def test_a_running_job_refreshes_until_done_and_run_now_queues_a_run(
    page: Any, make_dashboard_user: Any, eager_celery: None
) -> None:
    started = timezone.now() - timedelta(seconds=40)
    for name, counts in (("expire_grants", {"count": 0}), ("seal_audit", {"digests": 1, "events": 12})):
        JobRun.objects.create(
            name=name, started_at=started, finished_at=started + timedelta(seconds=1), outcome="ok", counts=counts
        )
    with pytest.raises(InternalError):
        job_run("archive_audit", broken)
    running = JobRun.objects.create(name="rotate_keys", started_at=timezone.now())

    sign_in(page, make_dashboard_user("ada", "administrator"))
    page.click("nav >> text=Jobs")
    expect(page.locator("h1")).to_have_text("Jobs")
    rotate = page.locator("#job-rotate_keys")
    expect(rotate).to_have_attribute("data-outcome", "running")
    expect(page.locator("#jobs-table")).to_have_attribute("data-polling", "true")
    expect(page.locator("#job-error-archive_audit")).to_have_text("RuntimeError: root key provider unreachable")
    expect(page.locator("#job-seal_audit")).to_contain_text("digests 1 · events 12")
    screenshot(page, "jobs")

    # The run ends (as a worker would record it): the next poll shows it, and polling stops.
    running.outcome, running.finished_at, running.counts = JobOutcome.OK, timezone.now(), {"rotated": 7}
    running.save()
    expect(rotate).to_have_attribute("data-outcome", "ok")
    expect(rotate).to_contain_text("rotated 7")
    expect(page.locator("#jobs-table")).to_have_attribute("data-polling", "false")

    # Run now: confirm, the task runs (eagerly, after the request commits); the table catches up.
    page.locator("#job-delete_expired_keys summary").click()
    page.click("#job-start-delete_expired_keys")
    expect(page.locator("#job-delete_expired_keys")).to_have_attribute("data-outcome", "ok")
    expect(page.locator("#job-delete_expired_keys")).to_contain_text("deleted 0 · skipped 0")
    assert JobRun.objects.filter(name="delete_expired_keys", outcome=JobOutcome.OK).count() == 1

    # One job's history.
    page.click("#job-rotate_keys >> text=rotate_keys")
    expect(page.locator("h1")).to_have_text("rotate_keys")
    expect(page.locator("#job-runs tbody tr")).to_have_count(1)
    expect(page.locator("#job-runs")).to_contain_text("rotated 7")
