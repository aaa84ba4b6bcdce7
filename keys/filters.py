"""The key table's filter set: parsed from the query string, applied to a QuerySet.

One filter set serves the dashboard table and any list API, so the URL of a
filtered view is its whole state (reload or share it and see the same rows).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from django.db.models import Exists, F, Min, OuterRef, Q, QuerySet
from django.db.models.expressions import OrderBy
from django.http import QueryDict

from keys.models import Alias, Key, KeyManager, KeySpec, KeyState, Tag

KINDS = {"customer": KeyManager.CUSTOMER, "aws": KeyManager.AWS}
SORTS = {
    "alias": "first_alias",
    "created": "created_at",
    "state": "state",
    "description": "description",
    "id": "id",
}
PAGE_SIZES = (25, 50, 100)


@dataclass(frozen=True)
class KeyFilter:
    """The state of the key table: tab, search, filters, sort and page."""

    kind: str = "customer"
    q: str = ""
    state: str = ""
    spec: str = ""
    tag: str = ""
    sort: str = "-created"
    page: int = 1
    per_page: int = 25

    @classmethod
    def from_query(cls, params: QueryDict) -> KeyFilter:
        """Read the query string; unknown or malformed values fall back to defaults.

        NUL characters are dropped from the free-text fields: PostgreSQL
        refuses them in text parameters (a 500 otherwise).
        """
        kind = params.get("kind", "customer")
        state = params.get("state", "")
        spec = params.get("spec", "")
        sort = params.get("sort", "-created")
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        try:
            per_page = int(params.get("per_page", "25"))
        except ValueError:
            per_page = 25
        return cls(
            kind=kind if kind in (*KINDS, "owned") else "customer",
            q=params.get("q", "").replace("\x00", "").strip()[:256],
            state=state if state in KeyState.values else "",
            spec=spec if spec in KeySpec.values else "",
            tag=params.get("tag", "").replace("\x00", "").strip()[:400],
            sort=sort if sort.lstrip("-") in SORTS else "-created",
            page=page,
            per_page=per_page if per_page in PAGE_SIZES else 25,
        )

    def apply(self, qs: QuerySet[Key]) -> QuerySet[Key]:
        manager = KINDS.get(self.kind, KeyManager.CUSTOMER)
        qs = qs.filter(manager=manager)
        if self.q:
            match = Q(description__icontains=self.q) | Q(
                Exists(Alias.objects.filter(key=OuterRef("pk"), name__icontains=self.q))
            )
            try:
                match |= Q(id=uuid.UUID(self.q))
            except ValueError:
                pass
            qs = qs.filter(match)
        if self.state:
            qs = qs.filter(state=self.state)
        if self.spec:
            qs = qs.filter(key_spec=self.spec)
        if self.tag:
            tag_key, _, tag_value = self.tag.partition("=")
            tags = Tag.objects.filter(key=OuterRef("pk"), tag_key=tag_key.strip())
            if _:
                tags = tags.filter(tag_value=tag_value.strip())
            qs = qs.filter(Exists(tags))
        field = SORTS[self.sort.lstrip("-")]
        descending = self.sort.startswith("-")
        order: str | OrderBy = f"-{field}" if descending else field
        if field == "first_alias":
            qs = qs.annotate(first_alias=Min("aliases__name"))
            # Keys without an alias go last either way, on every database
            # (SQLite and PostgreSQL put NULLs at opposite ends by default).
            order = F(field).desc(nulls_last=True) if descending else F(field).asc(nulls_last=True)
        return qs.order_by(order, "-id" if descending else "id")

    def query(self, **changes: Any) -> str:
        """The query string of this state with ``changes`` applied (defaults omitted)."""
        state = replace(self, **changes)
        defaults = KeyFilter()
        params = {
            name: getattr(state, name)
            for name in ("kind", "q", "state", "spec", "tag", "sort", "page", "per_page")
            if getattr(state, name) != getattr(defaults, name)
        }
        return "?" + urlencode(params) if params else "?"

    def sort_link(self, column: str) -> str:
        """Clicking a column sorts by it; clicking again reverses."""
        new = f"-{column}" if self.sort == column else column
        return self.query(sort=new, page=1)
