"""The auditor's PDF report of a period (reportlab).

Key inventory and rotation status, grants issued in the period and who
approved them, denials, and alarm events, for one account. Long sections
are capped (the report says how many rows it left out; the event exports
hold everything).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import LongTable, Paragraph, SimpleDocTemplate, Spacer, TableStyle

MAX_ROWS = 500


@dataclass
class Section:
    """A titled table of the report."""

    title: str
    header: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    total: int = 0
    empty: str = "None in this period."
    more: str = "the event exports hold every one."


@dataclass
class ReportData:
    """Everything the report shows, gathered by ``audit.selectors.report_data``."""

    title: str
    period: str
    scope: str
    generated_at: datetime
    summary: list[tuple[str, str]]
    sections: list[Section]


def _escape(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(value: Any, style: Any) -> Any:
    return Paragraph(_escape(value), style)


PAGE_WIDTH = landscape(A4)[0] - 24 * mm
CELL_PADDING = 12  # LongTable's default left and right padding, in points


def column_widths(header: list[Any], rows: list[list[Any]], width: float = PAGE_WIDTH) -> list[float]:
    """Widths that never break a header word: each column gets its header's
    longest word, and the rest of the page is shared by how much each
    column holds (capped, so one long ARN column does not take it all)."""
    floors = [p.minWidth() + CELL_PADDING for p in header]
    weights = [max(4, min(60, sum(len(str(row[i])) for row in rows) / max(1, len(rows)))) for i in range(len(header))]
    spare = max(0.0, width - sum(floors))
    return [floor + spare * w / sum(weights) for floor, w in zip(floors, weights, strict=True)]


def section_flowables(section: Section, styles: Any) -> list[Any]:
    """A section's heading (kept on the page of its table's first rows) and its table."""
    heading = styles["Heading2"].clone("section", keepWithNext=1)
    small = styles["BodyText"].clone("small", fontSize=7, leading=8.5)
    head = small.clone("head", fontName="Helvetica-Bold", splitLongWords=0)
    out: list[Any] = [Paragraph(_escape(section.title), heading)]
    if not section.rows:
        return [*out, Paragraph(section.empty, styles["BodyText"])]
    header = [_cell(h, head) for h in section.header]
    table = LongTable(
        [header] + [[_cell(v, small) for v in row] for row in section.rows],
        colWidths=column_widths(header, section.rows),
        repeatRows=1,
    )
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8ecf5")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    out.append(table)
    if section.total > len(section.rows):
        out.append(
            Paragraph(
                f"{section.total - len(section.rows)} more not listed; {section.more}",
                styles["Italic"],
            )
        )
    return out


def write_pdf(out: BinaryIO, data: ReportData) -> None:
    styles = getSampleStyleSheet()
    doc = SimpleDocTemplate(
        out,
        pagesize=landscape(A4),
        leftMargin=12 * mm,
        rightMargin=12 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        title=data.title,
        author="kmsweb",
        # A fixed creation date keeps the bytes a function of the data.
        creator="kmsweb",
    )
    story: list[Any] = [
        Paragraph(data.title, styles["Title"]),
        Paragraph(
            f"Period: {data.period}<br/>Scope: {data.scope}<br/>Generated: {data.generated_at:%Y-%m-%d %H:%M:%S} UTC",
            styles["BodyText"],
        ),
        Spacer(1, 4 * mm),
    ]
    summary = LongTable([[k, v] for k, v in data.summary], colWidths=[70 * mm, 60 * mm])
    summary.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("FONTSIZE", (0, 0), (-1, -1), 8)]))
    story += [summary, Spacer(1, 6 * mm)]
    for section in data.sections:
        story += section_flowables(section, styles)
        story.append(Spacer(1, 5 * mm))
    doc.build(story)
