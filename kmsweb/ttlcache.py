"""A small per-process cache with a time to live, for the API's hot path.

Keys, access keys, identity policies and grants are read on every API
request; caching them saves a database round trip each per call. Each cache
is tied to a generation counter (:mod:`kmsweb.generations`): an entry
serves only requests that read the counter it was loaded under, so a change
made through the services applies to the next request on every process.
The time to live (``KMSWEB_AUTH_CACHE_SECONDS``, 0 turns the caches off)
only bounds how long a row changed behind the services' back (by hand, in
SQL) may still be served.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from kmsweb.generations import generation_observed, generation_register

V = TypeVar("V")


class TTLCache(Generic[V]):
    """Maps keys to values for ``ttl`` seconds, within one generation of ``generation``.

    Bounded by ``max_entries``. Outside a request scope nothing is cached.
    """

    def __init__(self, ttl: Callable[[], float], generation: str, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._generation = generation
        self._max = max_entries
        # key -> (expiry, generation it was loaded under, value)
        self._data: dict[Hashable, tuple[float, int, V]] = {}
        self._lock = threading.Lock()
        generation_register(generation, self)

    def get_or_load(self, key: Hashable, load: Callable[[], V]) -> V:
        ttl = self._ttl()
        if ttl <= 0:
            return load()
        # Read before loading: an entry loaded after the counter was read
        # holds every change that counter counts.
        generation = generation_observed(self._generation)
        if generation is None:
            return load()
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and hit[0] > now and hit[1] == generation:
            return hit[2]
        value = load()
        with self._lock:
            if len(self._data) >= self._max:
                self._data.clear()
            self._data[key] = (now + ttl, generation, value)
        return value

    def invalidate(self, key: Hashable | None = None) -> None:
        with self._lock:
            if key is None:
                self._data.clear()
            else:
                self._data.pop(key, None)
