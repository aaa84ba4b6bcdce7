"""Browser fixtures: Playwright driving the system's Chromium against ``live_server``.

pytest-playwright is not used (its browser download does not work here): the
``browser`` and ``page`` fixtures below launch Debian's Chromium
(``KMSWEB_CHROMIUM``, default /usr/bin/chromium) through ``playwright.sync_api``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live_server import wait_idle_after

CHROMIUM = os.environ.get("KMSWEB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("KMSWEB_REQUIRE_SERVICES") == "true":
            pytest.fail(f"Chromium not found at {CHROMIUM}, and KMSWEB_REQUIRE_SERVICES=true")
        pytest.skip(f"needs Chromium at {CHROMIUM} (KMSWEB_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop running in this thread, so
    # Django would refuse the test's own ORM calls as "async"; they are not.
    patch = pytest.MonkeyPatch()
    patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        patch.undo()


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) on the live server; fails on console errors.

    A Content-Security-Policy violation or a JavaScript error shows up as a
    console error, so every browser test also checks that nothing was blocked.
    """
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1440, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    # A request the page had started may still be served; the database is
    # flushed after this test, and must not be while it is.
    assert wait_idle_after(live_server.url), "the live server was still serving a request 10 s after the test"
    # 4xx answers the test asked for (a refused forged POST) are not page errors.
    # 503: the error page of a test that takes a service (the identity provider) down.
    unexpected = [e for e in errors if "status of 4" not in e and "status of 503" not in e]
    assert not unexpected, f"browser console errors: {unexpected}"
