"""pytest-xdist workers (``make test`` runs two) keep out of each other's way."""

from __future__ import annotations

import pytest

from tests.conftest import worker_redis_url


@pytest.mark.parametrize(
    ("url", "worker", "expected"),
    [
        ("redis://127.0.0.1:6379/15", "gw0", "redis://127.0.0.1:6379/15"),
        ("redis://127.0.0.1:6379/15", "gw1", "redis://127.0.0.1:6379/14"),
        ("redis://127.0.0.1:6379", "gw1", "redis://127.0.0.1:6379/15"),
        (
            "redis://:secret@redis.internal:6380/3?socket_timeout=5",
            "gw2",
            "redis://:secret@redis.internal:6380/1?socket_timeout=5",
        ),
    ],
)
def test_it_gives_each_worker_its_own_redis_database(url: str, worker: str, expected: str) -> None:
    assert worker_redis_url(url, worker) == expected


def test_it_refuses_more_workers_than_redis_has_databases() -> None:
    with pytest.raises(pytest.UsageError, match="16 Redis databases"):
        worker_redis_url("redis://127.0.0.1:6379/15", "gw16")
