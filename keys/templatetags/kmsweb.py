"""Template filters of the dashboard: the key table's links (its state lives in the URL),
key states and job runs in words."""

from __future__ import annotations

import re

from django import template

from keys.filters import KeyFilter

register = template.Library()


@register.filter
def sort_link(flt: KeyFilter, column: str) -> str:
    return flt.sort_link(column)


@register.filter
def page_link(flt: KeyFilter, page: int | None) -> str:
    return flt.query(page=page or flt.page)


@register.filter
def words(text: str) -> list[str]:
    return text.split()


@register.filter
def state_label(state: str) -> str:
    """AWS's key states as the console words them ("PendingDeletion" -> "Pending deletion")."""
    words = re.findall(r"[A-Z][a-z]*", state or "")
    return " ".join([words[0], *(w.lower() for w in words[1:])]) if words else state


@register.filter
def duration(seconds: float | None) -> str:
    """A run's duration in plain words: "0.42 s", "12 s", "3 min 05 s", "2 h 04 min"."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


@register.filter
def counts(values: dict[str, int] | None) -> str:
    """A job run's counts as "rotated 3 · skipped 0", by name (PostgreSQL's jsonb keeps no order)."""
    return " · ".join(f"{name} {value}" for name, value in sorted((values or {}).items())) or "—"


@register.filter
def algorithm_label(field: str) -> str:
    """DescribeKey's list names as labels ("SigningAlgorithms" -> "Signing algorithms")."""
    return state_label(field)
