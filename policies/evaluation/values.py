"""Coercion of context and policy values into what each operator family compares.

A value that cannot be coerced yields None; operators treat it as matching
no policy value (see ``conditions``).
"""

from __future__ import annotations

import ipaddress
import math
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any


def as_number(value: Any) -> float | int | None:
    """A number from a JSON number or numeric string; never from a bool."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value if not (isinstance(value, float) and not math.isfinite(value)) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            f = float(text)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def as_epoch(value: Any) -> float | None:
    """Seconds since the epoch from a datetime, a number or an ISO 8601/epoch string."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.timestamp()
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        num = as_number(value)
        if num is not None:
            return float(num)
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)  # AWS reads zone-less times as UTC
        return parsed.timestamp()
    return None


def as_bool(value: Any) -> bool | None:
    """A boolean from a bool or from "true"/"false" in any case (as AWS's Bool reads them)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
    return None


@lru_cache(maxsize=4096)
def ip_text(text: str) -> tuple[int, int] | None:
    """(version, integer) of an address string.

    Cached: every statement testing aws:SourceIp would otherwise re-parse the
    same caller address, and parsing costs more than the comparison.
    """
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return addr.version, int(addr)


def as_ip(value: Any) -> tuple[int, int] | None:
    """(version, integer) of an address given as a string or an ipaddress object."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value.version, int(value)
    if isinstance(value, str):
        return ip_text(value)
    return None
