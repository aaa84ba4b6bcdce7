"""Request quotas, applied as AWS KMS applies its own: per account and Region,
and per principal, by class of operation, in requests per second.

A request over a quota is refused with ``ThrottlingException`` (HTTP 400,
AWS's wording), before its handler runs; the SDKs retry it with back-off.
The classes follow AWS's shared quotas (``KMSWEB_RATE_LIMITS``,
``KMSWEB_PRINCIPAL_RATE_LIMITS``):

- ``symmetric``: cryptographic operations with symmetric and HMAC keys
  (Encrypt, Decrypt, ReEncrypt, GenerateDataKey*, GenerateMac, VerifyMac);
- ``asymmetric``: Sign, Verify, DeriveSharedSecret, GenerateDataKeyPair*,
  Encapsulate, Decapsulate, and Encrypt/Decrypt/ReEncrypt with an asymmetric algorithm;
- ``random``: GenerateRandom (AWS counts it with ``symmetric``; here it has
  a quota of its own so that it can be set apart);
- ``management``: every other operation.

With ``REDIS_URL`` set, every web process of every node counts in Redis: a
Lua script checks and counts a fixed one-second window for the account and
the principal at once, in one round trip, and a refused request is not
counted. Each process leases 1% of a quota at a time and spends it from
memory, so a request costs a Redis round trip only once per lease. Without
Redis each process counts alone: a limit then holds per process, and N
processes allow up to N times it. If Redis cannot be reached the request is
let through (and logged): quotas protect capacity, they are no access
control.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from kmsweb.lib import operations
from kmsweb.lib.errors import Throttled

logger = logging.getLogger(__name__)

SYMMETRIC, ASYMMETRIC, RANDOM, MANAGEMENT = "symmetric", "asymmetric", "random", "management"
CLASSES = (SYMMETRIC, ASYMMETRIC, RANDOM, MANAGEMENT)
# AWS's default request quotas, requests per second per account and Region
# (the symmetric one is the smallest of AWS's Regions).
DEFAULTS = {SYMMETRIC: 5500, ASYMMETRIC: 500, RANDOM: 5500, MANAGEMENT: 1000}
MESSAGE = "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."

_ASYMMETRIC_OPERATIONS = frozenset(
    {
        "Sign",
        "Verify",
        "DeriveSharedSecret",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "Encapsulate",
        "Decapsulate",
    }
)
_ALGORITHM_MEMBERS = ("EncryptionAlgorithm", "SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm")

# Seconds a window's counters stay in Redis: past its second, plus clock skew between nodes.
WINDOW_TTL = 3
# A process leases this share of a quota from Redis at a time, and serves
# the lease from memory: one round trip per 1% of a limit, not per request.
LEASE_SHARE = 100
# KEYS: the window's counters; ARGV: the TTL, the n limits, the n tokens
# wanted (0: the process still holds some). Either refuse: {i}, the first
# counter with none left, counting nothing; or lease: {0, granted...}, each
# at most what is left of its limit.
_SCRIPT = """
local n = #KEYS
local granted = {0}
for i = 1, n do
    local want = tonumber(ARGV[1 + n + i])
    local grant = 0
    if want > 0 then
        local left = tonumber(ARGV[1 + i]) - tonumber(redis.call('GET', KEYS[i]) or '0')
        if left <= 0 then return {i} end
        grant = math.min(want, left)
    end
    granted[i + 1] = grant
end
for i = 1, n do
    local grant = granted[i + 1]
    if grant > 0 and redis.call('INCRBY', KEYS[i], grant) == grant then
        redis.call('EXPIRE', KEYS[i], ARGV[1])
    end
end
return granted
"""


def quota_class(operation: str, params: dict[str, Any]) -> str:
    """The quota class of one call of ``operation`` with ``params``."""
    if operation == "GenerateRandom":
        return RANDOM
    if operation in _ASYMMETRIC_OPERATIONS:
        return ASYMMETRIC
    op = operations.OPERATIONS.get(operation)
    if op is None or not op.crypto:
        return MANAGEMENT
    for member in _ALGORITHM_MEMBERS:
        algorithm = params.get(member)
        if algorithm and algorithm != "SYMMETRIC_DEFAULT":
            return ASYMMETRIC
    return SYMMETRIC


class LocalCounter:
    """Fixed one-second windows counted in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window = -1
        self._counts: dict[str, int] = {}

    def take(self, keys: list[str], limits: list[int], window: int) -> int:
        with self._lock:
            if window != self._window:
                self._window, self._counts = window, {}
            counts = self._counts
            for i, (key, limit) in enumerate(zip(keys, limits, strict=True), start=1):
                if counts.get(key, 0) >= limit:
                    return i
            for key in keys:
                counts[key] = counts.get(key, 0) + 1
            return 0


class RedisCounter:
    """Fixed one-second windows counted in Redis, shared by every process that uses the same Redis.

    A process leases ``limit // LEASE_SHARE`` tokens (at least one) per
    counter and window, and spends them without asking Redis again. Tokens
    a process holds when its window ends are lost: with P processes a
    window admits at most the limit, and at least the limit less P leases.
    """

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._client.register_script(_SCRIPT)
        self._warned_at = 0.0
        self._lock = threading.Lock()
        self._window = -1
        self._leases: dict[str, int] = {}

    def take(self, keys: list[str], limits: list[int], window: int) -> int:
        with self._lock:
            if window != self._window:
                self._window, self._leases = window, {}
            leases = self._leases
            wanted = [
                0 if leases.get(key, 0) > 0 else max(1, limit // LEASE_SHARE)
                for key, limit in zip(keys, limits, strict=True)
            ]
            if any(wanted):
                answer = self._lease([f"{key}:{window}" for key in keys], limits, wanted)
                if answer is None:
                    return 0
                if answer[0]:
                    return int(answer[0])
                for key, grant in zip(keys, answer[1:], strict=True):
                    leases[key] = leases.get(key, 0) + int(grant)
            for key in keys:
                leases[key] -= 1
            return 0

    def _lease(self, keys: list[str], limits: list[int], wanted: list[int]) -> list[int] | None:
        """The script's answer, or None when Redis does not answer (the call is let through)."""
        try:
            return [int(v) for v in self._script(keys=keys, args=[WINDOW_TTL, *limits, *wanted])]
        except Exception:
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                logger.warning("rate limits not applied: Redis did not answer", exc_info=True)
            return None


_counter: LocalCounter | RedisCounter | None = None
_counter_url: str | None = None
_counter_lock = threading.Lock()


def counter() -> LocalCounter | RedisCounter:
    """This process's counter: Redis when ``REDIS_URL`` is set, else local."""
    global _counter, _counter_url
    url = settings.REDIS_URL or None
    if _counter is None or url != _counter_url:
        with _counter_lock:
            if _counter is None or url != _counter_url:
                _counter = RedisCounter(url) if url else LocalCounter()
                _counter_url = url
    return _counter


def counter_forget() -> None:
    """Drop this process's counter and its leases: the next request starts from Redis (or anew)."""
    global _counter, _counter_url
    with _counter_lock:
        _counter, _counter_url = None, None


def _limits_changed(*, setting: str, **_: Any) -> None:
    # Tokens leased under the old limits must not be spent under the new ones.
    if setting in ("KMSWEB_RATE_LIMITS", "KMSWEB_PRINCIPAL_RATE_LIMITS", "REDIS_URL"):
        counter_forget()


setting_changed.connect(_limits_changed)


def rate_limit_check(
    *, account_id: str, region: str, principal_arn: str, operation: str, params: dict[str, Any]
) -> None:
    """Count one call against its quotas; raise ``Throttled`` when one is exceeded (the call is then not counted)."""
    per_account: dict[str, int] = settings.KMSWEB_RATE_LIMITS
    per_principal: dict[str, int] = settings.KMSWEB_PRINCIPAL_RATE_LIMITS
    if not per_account and not per_principal:
        return
    quota = quota_class(operation, params)
    keys: list[str] = []
    limits: list[int] = []
    if quota in per_account:
        keys.append(f"kmsweb:rl:{quota}:{account_id}:{region}")
        limits.append(per_account[quota])
    if quota in per_principal and principal_arn:
        keys.append(f"kmsweb:rl:{quota}:{region}:{principal_arn}")
        limits.append(per_principal[quota])
    if keys and counter().take(keys, limits, int(time.time())):
        raise Throttled(MESSAGE)
