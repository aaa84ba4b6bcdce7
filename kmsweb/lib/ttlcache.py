"""A small per-process cache with a time to live, for the API's hot path.

Access keys and identity policies are read on every API request; caching
them for a second saves two database round trips per call. A change made in
this process clears the entry at once (``invalidate``); other processes see
it within the TTL — the same kind of short eventual consistency AWS
documents for IAM changes. ``KMSWEB_AUTH_CACHE_SECONDS=0`` turns it off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    """Maps keys to values for ``ttl`` seconds; bounded by ``max_entries``."""

    def __init__(self, ttl: Callable[[], float], max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._data: dict[Hashable, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get_or_load(self, key: Hashable, load: Callable[[], V]) -> V:
        ttl = self._ttl()
        if ttl <= 0:
            return load()
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = load()
        with self._lock:
            if len(self._data) >= self._max:
                self._data.clear()
            self._data[key] = (now + ttl, value)
        return value

    def invalidate(self, key: Hashable | None = None) -> None:
        with self._lock:
            if key is None:
                self._data.clear()
            else:
                self._data.pop(key, None)
