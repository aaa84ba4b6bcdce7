"""The grant request inbox's filter set: parsed from the query string, applied to a QuerySet.

The URL of a filtered inbox is its whole state, so a reload or a shared link
shows the same rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import QueryDict

from policies.models import GrantRequest, GrantRequestState

STATES = tuple(GrantRequestState.values)
PER_PAGE = 25


@dataclass(frozen=True)
class GrantRequestFilter:
    """State tab (a state or ``all``), "only mine", one key, and the page."""

    state: str = GrantRequestState.PENDING
    mine: bool = False
    key: str = ""
    page: int = 1

    @classmethod
    def from_query(cls, params: QueryDict) -> GrantRequestFilter:
        """Unknown or malformed values fall back to the defaults."""
        state = params.get("state", GrantRequestState.PENDING)
        if state not in STATES and state != "all":
            state = GrantRequestState.PENDING
        key = params.get("key", "")
        try:
            key = str(uuid.UUID(key)) if key else ""
        except ValueError:
            key = ""
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        return cls(state=state, mine=params.get("mine") == "1", key=key, page=page)

    def apply(self, qs: QuerySet[GrantRequest], *, principal_pk: int | None) -> QuerySet[GrantRequest]:
        if self.state != "all":
            qs = qs.filter(state=self.state)
        if self.mine:
            qs = qs.filter(requester_id=principal_pk)
        if self.key:
            qs = qs.filter(key_id=self.key)
        return qs

    def query(self, **changes: Any) -> str:
        """The query string of this filter with ``changes`` (a new filter starts at page 1)."""
        flt = replace(self, **{"page": 1, **changes})
        params: dict[str, Any] = {"state": flt.state}
        if flt.mine:
            params["mine"] = "1"
        if flt.key:
            params["key"] = flt.key
        if flt.page > 1:
            params["page"] = flt.page
        return "?" + urlencode(params)
