"""Template filters for the key table's links (its state lives in the URL)."""

from __future__ import annotations

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
