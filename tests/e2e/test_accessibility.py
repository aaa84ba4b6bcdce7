"""Accessibility: axe-core, run in Chromium on every dashboard page, finds no serious or critical violation.

axe-core is vendored under static/vendor/axe-core (MPL-2.0) and loaded from
/static/, so the page's Content-Security-Policy lets it run like the
dashboard's own scripts. Keyboard use is checked too: every action is
reachable with Tab and shows where the focus is.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.dashboard_fixtures import DashboardUser
from tests.e2e.test_dashboard import inventory, sign_in  # noqa: F401  (inventory is a fixture)
from tests.e2e.test_layout import everything, pages  # noqa: F401  (everything is a fixture)

pytestmark = pytest.mark.usefixtures("transactional_db")

AXE_URL = "/static/vendor/axe-core/axe.min.js"
RUN_AXE = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                   nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
}"""


def serious_violations(page: Any) -> list[dict[str, Any]]:
    page.add_script_tag(url=AXE_URL)
    return page.evaluate(RUN_AXE)


def test_it_has_no_serious_accessibility_violation_on_any_page(
    page: Any,
    key_admin_user: DashboardUser,
    everything: dict[str, str],  # noqa: F811
) -> None:
    page.goto("/login/")
    found = {"/login/": serious_violations(page)}
    sign_in(page, key_admin_user)
    for url in pages(everything):
        page.goto(url)
        expect(page.locator("h1")).to_have_count(1)
        page.wait_for_load_state("networkidle")
        found[url] = serious_violations(page)
    # Both themes: the dark one must keep its contrast too.
    page.emulate_media(color_scheme="dark")
    for url in ("/", "/keys/", f"/keys/{everything['key']}/", "/audit/", f"/grant-requests/{everything['request']}/"):
        page.goto(url)
        page.wait_for_load_state("networkidle")
        assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == "rgb(16, 20, 28)"
        found[f"{url} (dark)"] = serious_violations(page)
    assert not {url: v for url, v in found.items() if v}


def test_it_reaches_the_key_actions_with_the_keyboard_and_shows_the_focus(
    page: Any,
    key_admin_user: DashboardUser,
    everything: dict[str, str],  # noqa: F811
) -> None:
    sign_in(page, key_admin_user)
    page.goto(f"/keys/{everything['key']}/")
    page.wait_for_load_state("networkidle")
    reached = []
    for _ in range(80):
        page.keyboard.press("Tab")
        info = page.evaluate(
            """() => { const e = document.activeElement; const s = getComputedStyle(e);
                 return [e.id || e.textContent.trim().slice(0, 30), s.outlineStyle, s.outlineWidth, s.boxShadow]; }"""
        )
        reached.append(info[0])
        # Focus is visible: an outline (or a focus ring drawn as a shadow).
        assert info[1] != "none" or info[3] != "none", f"no visible focus on {info[0]}"
        if info[0] == "Schedule deletion":
            break
    assert "Disable" in reached and "Schedule deletion" in reached, reached
    page.keyboard.press("Enter")
    expect(page.locator("#key-deletion-form")).to_be_visible()
