"""Template filters for the key table's links (its state lives in the URL)."""

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
