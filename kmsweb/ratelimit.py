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

With ``REDIS_URL`` set, every web process of every node counts in Redis: one
round trip per request (a Lua script checks and counts a fixed one-second
window for the account and the principal at once; a refused request is not
counted). Without Redis each process counts alone: a limit then holds per
process, and N processes allow up to N times it. If Redis cannot be reached
the request is let through (and logged): quotas protect capacity, they are
no access control.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings

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
# KEYS: the window's counters; ARGV: the TTL, then their limits. Refuse
# (return the index of the first full counter) without counting, or count
# in every one.
_SCRIPT = """
for i, key in ipairs(KEYS) do
    local n = tonumber(redis.call('GET', key) or '0')
    if n >= tonumber(ARGV[i + 1]) then return i end
end
for i, key in ipairs(KEYS) do
    if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, ARGV[1]) end
end
return 0
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
    """Fixed one-second windows counted in Redis, shared by every process that uses the same Redis."""

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._client.register_script(_SCRIPT)
        self._warned_at = 0.0

    def take(self, keys: list[str], limits: list[int], window: int) -> int:
        try:
            return int(self._script(keys=[f"{key}:{window}" for key in keys], args=[WINDOW_TTL, *limits]))
        except Exception:
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                logger.warning("rate limits not applied: Redis did not answer", exc_info=True)
            return 0


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
