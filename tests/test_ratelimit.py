"""Request quotas (ThrottlingException): the classes, the settings, the
counters (per process and shared through Redis), and what boto3 sees."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import time_machine
from botocore.config import Config
from botocore.exceptions import ClientError
from django.conf import settings as django_settings
from django.db import transaction

from audit.models import AuditEvent
from kmsweb import ratelimit
from kmsweb.lib.env import ImproperlyConfiguredEnv, env_rate_limits
from kmsweb.ratelimit import ASYMMETRIC, MANAGEMENT, RANDOM, SYMMETRIC, LocalCounter, RedisCounter, quota_class
from policies.services import FULL_ACCESS_POLICY
from tests.conftest import REGION, Persona
from tests.gunicorn_nodes import gunicorn_nodes


@pytest.mark.parametrize(
    ("operation", "params", "expected"),
    [
        ("Encrypt", {}, SYMMETRIC),
        ("Encrypt", {"EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}, SYMMETRIC),
        ("Encrypt", {"EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}, ASYMMETRIC),
        ("Decrypt", {"EncryptionAlgorithm": "SM2PKE"}, ASYMMETRIC),
        ("ReEncrypt", {"DestinationEncryptionAlgorithm": "RSAES_OAEP_SHA_1"}, ASYMMETRIC),
        ("GenerateDataKey", {}, SYMMETRIC),
        ("GenerateMac", {}, SYMMETRIC),
        ("Sign", {}, ASYMMETRIC),
        ("GenerateDataKeyPair", {}, ASYMMETRIC),
        ("GenerateRandom", {}, RANDOM),
        ("DescribeKey", {}, MANAGEMENT),
        ("CreateKey", {}, MANAGEMENT),
        ("GetPublicKey", {}, MANAGEMENT),
    ],
)
def test_it_sorts_operations_into_aws_quota_classes(operation: str, params: dict[str, Any], expected: str) -> None:
    assert quota_class(operation, params) == expected


def test_it_reads_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    classes = ratelimit.CLASSES
    monkeypatch.setenv("KMSWEB_RATE_LIMITS", "symmetric=100, management=0")
    assert env_rate_limits("KMSWEB_RATE_LIMITS", classes, ratelimit.DEFAULTS) == {
        "symmetric": 100,
        "asymmetric": 500,
        "random": 5500,
    }
    monkeypatch.setenv("KMSWEB_RATE_LIMITS", "off")
    assert env_rate_limits("KMSWEB_RATE_LIMITS", classes, ratelimit.DEFAULTS) == {}
    monkeypatch.delenv("KMSWEB_RATE_LIMITS")
    assert env_rate_limits("KMSWEB_RATE_LIMITS", classes, ratelimit.DEFAULTS) == ratelimit.DEFAULTS
    for bad in ("symetric=5", "symmetric=-1", "symmetric=1.5", "symmetric"):
        monkeypatch.setenv("KMSWEB_RATE_LIMITS", bad)
        with pytest.raises(ImproperlyConfiguredEnv, match="KMSWEB_RATE_LIMITS"):
            env_rate_limits("KMSWEB_RATE_LIMITS", classes, ratelimit.DEFAULTS)


def _redis_counter() -> RedisCounter:
    assert django_settings.REDIS_URL
    return RedisCounter(django_settings.REDIS_URL)


COUNTERS: list[Any] = [
    pytest.param(lambda: (c := LocalCounter(), c), id="per-process"),
    pytest.param(lambda: (_redis_counter(), _redis_counter()), id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=COUNTERS)
def counters(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """Two counters as two web processes see them: the same one per process, two clients of one Redis."""
    return request.param()  # type: ignore[no-any-return]


def test_a_window_admits_the_limit_then_refuses_without_counting(counters: tuple[Any, Any]) -> None:
    node_a, node_b = counters
    account, principal = f"acct-{uuid.uuid4()}", f"user-{uuid.uuid4()}"
    window = 1_000
    taken = [node_a.take([account, principal], [3, 2], window), node_b.take([account, principal], [3, 2], window)]
    assert taken == [0, 0]
    # The principal's quota (the second counter) is spent, on every node.
    assert node_a.take([account, principal], [3, 2], window) == 2
    assert node_b.take([account, principal], [3, 2], window) == 2
    # Refused calls did not count: another principal of the account still has one call left.
    other = f"user-{uuid.uuid4()}"
    assert node_b.take([account, other], [3, 2], window) == 0
    assert node_a.take([account, other], [3, 2], window) == 1
    # The next second starts afresh.
    assert node_a.take([account, principal], [3, 2], window + 1) == 0


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One quota window for the whole test: the clock stands still (server and client alike),
    and Redis keeps the window's counters while the test's real seconds pass."""
    monkeypatch.setattr(ratelimit, "WINDOW_TTL", 600)
    with time_machine.travel(datetime.now(UTC), tick=False):
        yield


def _client(url: str, persona: Persona, retries: dict[str, Any]) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=persona.access_key_id,
        aws_secret_access_key=persona.secret,
        config=Config(retries=retries),
    )


@pytest.mark.redis
def test_boto3_sees_throttling_over_a_principal_quota_and_retries(
    live_server: Any, key_admin: Persona, make_persona: Callable[..., Persona], settings: Any, frozen: None
) -> None:
    settings.KMSWEB_PRINCIPAL_RATE_LIMITS = {"management": 2}
    # A fresh principal per run: the quota counts in Redis, shared with every other test.
    caller = make_persona(f"throttled-{uuid.uuid4().hex[:8]}", policy=FULL_ACCESS_POLICY)
    once = _client(live_server.url, caller, {"total_max_attempts": 1})
    once.list_keys()
    once.list_aliases()
    with pytest.raises(ClientError) as caught:
        once.list_keys()
    error = caught.value.response
    assert error["Error"]["Code"] == "ThrottlingException"
    assert error["Error"]["Message"] == ratelimit.MESSAGE
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    # The SDK's standard retry mode takes ThrottlingException as a throttle and retries it.
    retrying = _client(live_server.url, caller, {"mode": "standard", "total_max_attempts": 3})
    with pytest.raises(ClientError) as caught:
        retrying.list_keys()
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    throttled = AuditEvent.objects.filter(principal_arn=caller.principal.arn, error_code="ThrottlingException")
    assert throttled.count() == 4
    assert throttled.first().event_name == "ListKeys"
    # Another principal has its own quota; another class has its own quota.
    assert _client(live_server.url, key_admin, {"total_max_attempts": 1}).list_keys()["Keys"] is not None
    assert len(once.generate_random(NumberOfBytes=8)["Plaintext"]) == 8


@pytest.mark.redis
@pytest.mark.postgres
def test_a_call_served_again_on_fresh_generations_counts_once(
    live_server: Any, make_persona: Callable[..., Persona], settings: Any, frozen: None
) -> None:
    """A read-only call whose assumed cache generations moved is served again (PostgreSQL):
    its first attempt was counted against the quota, the second is not."""
    from kmsweb import metrics
    from kmsweb.generations import IDENTITY, generation_bump

    settings.KMSWEB_PRINCIPAL_RATE_LIMITS = {"management": 2}
    caller = make_persona(f"again-{uuid.uuid4().hex[:8]}", policy=FULL_ACCESS_POLICY)
    once = _client(live_server.url, caller, {"total_max_attempts": 1})
    once.list_keys()  # 1 of 2; the live server's process now knows the generations
    with transaction.atomic():
        generation_bump(IDENTITY)  # a change the process has not read yet
    retries = metrics.GENERATION_RETRIES._value.get()

    once.list_aliases()  # 2 of 2, served twice

    assert metrics.GENERATION_RETRIES._value.get() == retries + 1
    with pytest.raises(ClientError) as caught:
        once.list_keys()
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"


@pytest.mark.redis
def test_an_account_quota_is_shared_by_its_principals(
    live_server: Any, make_persona: Callable[..., Persona], settings: Any, frozen: None
) -> None:
    settings.KMSWEB_RATE_LIMITS = {"random": 3}
    first = make_persona(f"rand-a-{uuid.uuid4().hex[:6]}", policy=FULL_ACCESS_POLICY)
    second = make_persona(f"rand-b-{uuid.uuid4().hex[:6]}", policy=FULL_ACCESS_POLICY)
    a = _client(live_server.url, first, {"total_max_attempts": 1})
    b = _client(live_server.url, second, {"total_max_attempts": 1})
    # Another test may have spent some of this second's account quota: spend it all, then check both.
    for _ in range(3):
        try:
            a.generate_random(NumberOfBytes=8)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ThrottlingException"
    for client in (a, b):
        with pytest.raises(ClientError, match="ThrottlingException"):
            client.generate_random(NumberOfBytes=8)
    # Other classes are not touched.
    assert a.list_keys()["Keys"] is not None


def test_without_limits_nothing_is_counted(settings: Any) -> None:
    settings.KMSWEB_RATE_LIMITS = {}
    settings.KMSWEB_PRINCIPAL_RATE_LIMITS = {}
    for _ in range(10):
        ratelimit.rate_limit_check(
            account_id="111122223333", region=REGION, principal_arn="arn:x", operation="ListKeys", params={}
        )


@pytest.fixture
def two_nodes(transactional_db: None, tmp_path: Path) -> Iterator[list[str]]:
    """Two gunicorn servers on the test's PostgreSQL database and the test's Redis, with principal quotas on."""
    # Under 100 a lease is one token: Redis counts every call.
    with gunicorn_nodes(2, {"KMSWEB_PRINCIPAL_RATE_LIMITS": "management=50"}, tmp_path) as urls:
        yield urls


@pytest.mark.postgres
@pytest.mark.redis
def test_two_nodes_count_one_principal_quota_in_redis(
    two_nodes: list[str], make_persona: Callable[..., Persona]
) -> None:
    import redis

    caller = make_persona(f"two-nodes-{uuid.uuid4().hex[:8]}", policy=FULL_ACCESS_POLICY)
    for url in two_nodes:
        _client(url, caller, {"total_max_attempts": 1}).list_keys()
    store = redis.Redis.from_url(django_settings.REDIS_URL)
    counters = store.keys(f"kmsweb:rl:management:{REGION}:{caller.principal.arn}:*")
    # Both nodes counted into the same windows (one or two seconds), two calls in all.
    assert sum(int(store.get(key) or 0) for key in counters) == 2


@pytest.mark.redis
def test_processes_lease_a_share_of_a_large_quota_and_never_exceed_it() -> None:
    nodes = [_redis_counter() for _ in range(3)]
    account = f"acct-{uuid.uuid4()}"
    window = 2_000
    admitted = 0
    for _ in range(400):
        for node in nodes:
            admitted += node.take([account], [1000], window) == 0
    # 1,200 calls against 1,000: the quota admits exactly its limit (the
    # leases add up to it), each node leasing 10 tokens at a time.
    assert admitted == 1000
    assert int(redis_client().get(f"{account}:{window}")) == 1000


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(django_settings.REDIS_URL)
