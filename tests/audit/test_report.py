"""The auditor's PDF report: what its rows say and how its tables are laid out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import Paragraph

from audit import report
from audit.alarm_rules import AlarmSpec
from audit.filters import AuditFilter
from audit.models import AuditEvent
from audit.selectors import report_data
from audit.services.alarms import alarm_create
from keys import services as key_services
from keys.models import Key
from kmsweb.lib.caller import Caller
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def data_for(caller: Caller) -> report.ReportData:
    flt, _ = AuditFilter.parse({"routine": "show"})
    events = AuditEvent.objects.filter(recipient_account_id=caller.account_id)
    return report_data(caller=caller, flt=flt, events=events, now=timezone.now())


def section(data: report.ReportData, title: str) -> report.Section:
    return next(s for s in data.sections if s.title == title)


def test_it_names_the_alarm_and_says_what_happened_in_words(key_admin: Persona) -> None:
    caller = Caller.system("tests", account_id=key_admin.account_id)
    alarm_create(
        caller=caller,
        spec=AlarmSpec(
            name="Denied decrypts", metric="denials", period=60, comparison="GreaterThanThreshold", threshold=3
        ),
    )

    alarms = section(data_for(key_admin.caller()), "Alarms")

    [row] = alarms.rows
    assert alarms.header == ["Time", "Alarm", "Event", "What happened", "By"]
    assert row[1] == "Denied decrypts" and row[2] == "CreateAlarm"
    assert row[3] == "Created: denials GreaterThanThreshold 3"
    assert "{" not in " ".join(row)  # no raw JSON


def test_it_gives_no_next_rotation_to_a_key_pending_deletion(key_admin: Persona, make_key: Any) -> None:
    rotating = make_key(description="rotates", rotation_period_days=365)
    doomed = make_key(description="doomed", rotation_period_days=365)
    key_services.key_schedule_deletion(caller=key_admin.caller(), key=doomed, pending_window_days=7)

    inventory = section(data_for(key_admin.caller()), "Key inventory and rotation status")

    next_rotation = {row[0]: row[-1] for row in inventory.rows}
    assert next_rotation[str(doomed.id)] == "none (pending deletion)"
    expected = Key.objects.get(pk=rotating.pk).next_rotation_at
    assert next_rotation[str(rotating.id)] == f"{expected:%Y-%m-%d}"
    assert expected > timezone.now() + timedelta(days=300)


def test_it_never_breaks_a_header_word_and_keeps_headings_with_their_tables() -> None:
    styles = getSampleStyleSheet()
    arn = "arn:aws:iam::111122223333:role/" + "very-long-role-name-" * 6
    wide = report.Section(
        "Grants issued",
        ["Grant", "Key", "Grantee", "Operations", "Created by", "Created", "Approved by", "Status"],
        rows=[["g" * 16, "k" * 36, arn, "Decrypt, Encrypt, GenerateDataKey", arn, "2026-01-01", arn, "active"]] * 3,
    )

    heading, table = report.section_flowables(wide, styles)[:2]

    assert heading.style.keepWithNext == 1
    header = table._cellvalues[0]
    for cell, width in zip(header, table._colWidths, strict=True):
        assert isinstance(cell, Paragraph)
        # A column at least as wide as the header's longest word (plus padding) never splits it.
        assert cell.minWidth() + report.CELL_PADDING <= width + 0.01, cell.text
    assert sum(table._colWidths) <= report.PAGE_WIDTH + 0.01
