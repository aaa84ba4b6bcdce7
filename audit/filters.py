"""The audit search filter: parsed from a query string (the Audit page, the
export form) or from ``export_audit``'s options, applied to a QuerySet.

Unlike the key table's filter, a value that cannot be understood is an
error, never silently dropped: an auditor must not export "all events" when
they asked for one key's. ``parse`` returns the filter and a field→message
map of errors.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from audit.canonical import DENIED, OUTCOMES, iso
from audit.models import AuditEvent

ORIGINS = ("api", "dashboard", "system")
SORTS = ("-time", "time")
PAGE_SIZES = (25, 50, 100)
EVENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")
KEY_ARN = re.compile(r"^arn:aws:kms:[a-z0-9-]*:\d{12}:key/(?P<id>[0-9a-f-]{36})$")
PRINCIPAL_ARN = re.compile(r"^arn:aws:iam::(\d{12}|kmsweb):[\w+=,.@/-]{1,300}$")
FILTER_FIELDS = ("range", "since", "until", "event", "key", "principal", "ip", "outcome", "origin", "q", "routine")
# Date range presets: the last hour, day, week or month up to now (a custom range uses since/until).
RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}

# Routine events: what kmsweb does by itself every minute (scheduled jobs) and the
# dashboard's own successful reads (a DescribeKey for every key page). They are hidden
# from the Audit page unless asked for (``routine=show``); denials and errors never are.
ROUTINE = Q(origin="system", event_name="RunJob") | Q(origin="dashboard", read_only=True, error_code="")


@dataclass(frozen=True)
class AuditFilter:
    """What to show: a time range and equality filters, the sort and the keyset position."""

    range: str = ""  # a RANGES preset; it sets ``since`` when parsed and wins over a typed range
    since: datetime | None = None
    until: datetime | None = None
    event: str = ""
    key: str = ""  # a key id (UUID string)
    principal: str = ""
    ip: str = ""
    outcome: str = ""
    origin: str = ""
    q: str = ""
    routine: str = ""  # "show" includes routine events; blank (the default) hides them
    sort: str = "-time"
    per_page: int = 50
    after: str = ""  # opaque cursor: rows after this one in sort order
    before: str = ""  # rows before this one (the previous page)

    # -- parsing ------------------------------------------------------------------

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> tuple[AuditFilter, dict[str, str]]:
        """Read ``params`` (a QueryDict or a dict of strings). Unknown values are errors."""
        errors: dict[str, str] = {}

        def text(name: str, limit: int) -> str:
            value = params.get(name) or ""
            value = str(value).replace("\x00", "").strip()
            if len(value) > limit:
                errors[name] = f"At most {limit} characters."
            return value[:limit]

        values: dict[str, Any] = {}
        for name in ("since", "until"):
            raw = text(name, 40)
            if raw:
                try:
                    values[name] = parse_moment(raw, end=name == "until")
                except ValueError:
                    errors[name] = f"'{raw}' is not a date or time (use ISO 8601, e.g. 2025-03-01T12:00Z)."
        preset = text("range", 8)
        if preset and preset not in RANGES:
            errors["range"] = f"Unknown range '{preset}': use one of {', '.join(RANGES)}, or a custom range."
        elif preset:
            values["range"] = preset
            values["since"] = timezone.now() - RANGES[preset]
            values.pop("until", None)
            errors.pop("since", None)
            errors.pop("until", None)
        if values.get("since") and values.get("until") and values["since"] >= values["until"]:
            errors["until"] = "The end of the range must be after its start."
        event = text("event", 64)
        if event and not EVENT_NAME.match(event):
            errors["event"] = f"'{event}' is not an event name (e.g. Encrypt, ConsoleLogin)."
        values["event"] = event
        key = text("key", 300)
        if key:
            match = KEY_ARN.match(key)
            candidate = match.group("id") if match else key
            try:
                values["key"] = str(uuid.UUID(candidate))
            except ValueError:
                errors["key"] = f"'{key}' is not an alias, alias ARN, key id or key ARN."
        principal = text("principal", 320)
        if principal and not PRINCIPAL_ARN.match(principal):
            errors["principal"] = f"'{principal}' is not a principal ARN (arn:aws:iam::<account>:user/<name>)."
        values["principal"] = principal
        ip = text("ip", 64)
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                errors["ip"] = f"'{ip}' is not an IP address."
        values["ip"] = ip
        for name, allowed in (("outcome", OUTCOMES), ("origin", ORIGINS)):
            value = text(name, 16)
            if value and value not in allowed:
                errors[name] = f"Unknown {name} '{value}': use one of {', '.join(allowed)}."
            values[name] = value
        values["q"] = text("q", 200)
        routine = text("routine", 8)
        if routine not in ("", "show", "hide"):
            errors["routine"] = f"Unknown routine '{routine}': use show or hide."
        values["routine"] = "show" if routine == "show" else ""
        sort = text("sort", 8) or "-time"
        if sort not in SORTS:
            errors["sort"] = f"Unknown sort '{sort}': use time or -time."
        values["sort"] = sort if sort in SORTS else "-time"
        try:
            per_page = int(params.get("per_page") or 50)
        except (TypeError, ValueError):
            per_page = 50
        values["per_page"] = per_page if per_page in PAGE_SIZES else 50
        for name in ("after", "before"):
            raw = text(name, 200)
            if raw:
                try:
                    decode_cursor(raw)
                    values[name] = raw
                except ValueError:
                    errors[name] = "This page link is damaged; start from the first page."
        clean = {k: v for k, v in values.items() if k not in errors}
        return cls(**clean), errors

    # -- applying -----------------------------------------------------------------

    def apply(self, qs: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        """The filters (not the sort or position)."""
        if self.since:
            qs = qs.filter(event_time__gte=self.since)
        if self.until:
            qs = qs.filter(event_time__lt=self.until)
        if self.event:
            qs = qs.filter(event_name=self.event)
        if self.key:
            qs = qs.filter(key_id=self.key)
        if self.principal:
            qs = qs.filter(principal_arn=self.principal)
        if self.ip:
            qs = qs.filter(source_ip=self.ip)
        if self.outcome == "success":
            qs = qs.filter(error_code="")
        elif self.outcome == "denied":
            qs = qs.filter(error_code=DENIED)
        elif self.outcome == "error":
            qs = qs.exclude(error_code="").exclude(error_code=DENIED)
        if self.origin:
            qs = qs.filter(origin=self.origin)
        if self.routine != "show":
            qs = qs.exclude(ROUTINE)
        if self.q:
            qs = qs.annotate(_params_text=Cast("request_parameters", TextField())).filter(
                _params_text__icontains=self.q
            )
        return qs

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    def page(self, qs: QuerySet[AuditEvent]) -> tuple[QuerySet[AuditEvent], bool]:
        """The keyset window: (rows in fetch order, whether that order is reversed for display)."""
        qs = self.apply(qs)
        # "before" walks back towards the start of the sort, so it fetches in reverse.
        cursor, backwards = (self.before, True) if self.before else (self.after, False)
        forward_desc = self.descending != backwards
        if cursor:
            moment, event_id = decode_cursor(cursor)
            if forward_desc:
                qs = qs.filter(Q(event_time__lt=moment) | Q(event_time=moment, id__lt=event_id))
            else:
                qs = qs.filter(Q(event_time__gt=moment) | Q(event_time=moment, id__gt=event_id))
        order = ("-event_time", "-id") if forward_desc else ("event_time", "id")
        return qs.order_by(*order), backwards

    # -- links and descriptions ------------------------------------------------------

    def filter_params(self) -> dict[str, str]:
        """The filter as query parameters (defaults omitted)."""
        out: dict[str, str] = {}
        for name in FILTER_FIELDS:
            if self.range and name in ("since", "until"):
                continue  # the preset is the range; it moves with the clock
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = iso(value).replace(".000000Z", "Z")
            if value:
                out[name] = str(value)
        return out

    def query(self, **changes: Any) -> str:
        state = replace(self, **changes)
        params = state.filter_params()
        if state.sort != "-time":
            params["sort"] = state.sort
        if state.per_page != 50:
            params["per_page"] = str(state.per_page)
        for name in ("after", "before"):
            if getattr(state, name):
                params[name] = getattr(state, name)
        return "?" + urlencode(params) if params else "?"

    def sort_link(self) -> str:
        return self.query(sort="time" if self.descending else "-time", after="", before="")

    @property
    def is_filtered(self) -> bool:
        return bool(self.filter_params())

    def describe(self) -> dict[str, Any]:
        """JSON-ready filter for manifests and audit events."""
        return {k: v for k, v in asdict(self).items() if k in FILTER_FIELDS and v} | {
            k: iso(v) for k in ("since", "until") if (v := getattr(self, k))
        }


def parse_moment(text: str, *, end: bool = False) -> datetime:
    """An ISO 8601 date or date-time; naive means UTC. A bare date as an end means the next midnight."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = date.fromisoformat(text)
        moment = datetime.combine(day, time.min, tzinfo=UTC)
        return moment + timedelta(days=1) if end else moment
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def encode_cursor(moment: datetime, event_id: int) -> str:
    raw = json.dumps([iso(moment), event_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        moment, event_id = json.loads(raw)
        return parse_moment(moment), int(event_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError("bad cursor") from exc
