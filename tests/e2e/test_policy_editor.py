"""The key-policy editor in Chromium: CodeMirror under the strict CSP, error markers, the default view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from keys import services
from keys.models import Key
from tests.conftest import Persona
from tests.dashboard_fixtures import DashboardUser
from tests.e2e.test_dashboard import screenshot, sign_in

pytestmark = pytest.mark.usefixtures("transactional_db")

BROKEN = '{\n  "Version": "2012-10-17"\n  "Statement": []\n}'


def marker_line(page: Any) -> int:
    """The 1-based line of the editor's error marker in the lint gutter (measured in one pass)."""
    expect(page.locator("#key-policy-json .cm-lint-marker-error").first).to_be_visible()
    return int(
        page.locator("#key-policy-json .cm-editor").evaluate(
            """(editor) => {
                const mark = editor.querySelector(".cm-lint-marker-error").getBoundingClientRect();
                const tops = [...editor.querySelectorAll(".cm-line")].map((l) => l.getBoundingClientRect().top);
                let best = 0;
                tops.forEach((top, i) => { if (Math.abs(top - mark.top) < Math.abs(tops[best] - mark.top)) best = i; });
                return best + 1;
            }"""
        )
    )


def replace_text(page: Any, text: str) -> None:
    content = page.locator("#key-policy-json .cm-content")
    content.click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    # Typed as a person would; the editor closes no brackets by itself (no closeBrackets).
    page.keyboard.insert_text(text)


def test_the_policy_editor_marks_errors_where_they_are_and_saves(
    page: Any,
    key_admin_user: DashboardUser,
    key_admin: Persona,
    make_key: Callable[..., Key],
    make_persona: Callable[..., Persona],
) -> None:
    key = make_key(description="payroll database")
    services.alias_create(caller=key_admin.caller(), name="alias/payroll", key=key)
    app = make_persona("payroll-app", policy=None)
    sign_in(page, key_admin_user)
    page.goto(f"/keys/{key.id}/")

    expect(page.locator("h1#key-title")).to_have_text("alias/payroll")
    editor = page.locator("#key-policy-json .cm-editor")
    expect(editor).to_be_visible()
    expect(page.locator("#id_policy")).to_be_hidden()
    expect(page.locator("#key-policy-json .cm-lineNumbers")).to_contain_text("1")
    # Syntax highlighting: property names and strings are styled apart from punctuation.
    assert page.locator("#key-policy-json .cm-line span").count() > 3

    # An error as it is typed: marked on its line, said in words.
    replace_text(page, BROKEN)
    assert marker_line(page) == 3
    expect(page.locator("#key-policy-json .cm-lintRange-error")).to_have_count(1)
    page.locator("#key-policy-json .cm-lintRange-error").hover()
    expect(page.locator("#key-policy-json .cm-tooltip-lint")).to_contain_text(
        "Line 3, column 3: a comma is missing between two items"
    )

    # Saved anyway: the server refuses, says why, and the editor marks the same place.
    page.click("#key-policy-form button[type=submit]")
    expect(page.locator("#key-policy-form .errorlist")).to_contain_text("Line 3, column 3")
    assert marker_line(page) == 3
    key.refresh_from_db()
    assert '"Statement": []' not in key.policy
    screenshot(page, "key-policy-editor-error")

    # The default view: choose a key user; the JSON follows.
    page.locator("#key-policy-users label", has_text="user/payroll-app").locator("input").check()
    page.click("#key-policy-default-form button[type=submit]")
    expect(page.locator("#key-policy-default-saved")).to_have_text("Key policy saved.")
    expect(page.locator("#key-policy-json .cm-content")).to_contain_text("Allow use of the key")
    key.refresh_from_db()
    assert app.principal.arn in key.policy

    # Keyboard: Tab leaves the editor (it does not trap focus) for the form's buttons.
    page.locator("#key-policy-json .cm-content").click()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Preview"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Save policy"
    screenshot(page, "key-policy-default-view")
