"""Per-key rate limits: a token bucket and a cap on requests running at once.

The state lives in a ``LimiterStore``: ``RedisLimiterStore`` (atomic Lua scripts, shared
by every replica, Redis's own clock) when Redis is configured, ``MemoryLimiterStore``
otherwise. When the shared store fails, ``RateLimiter`` limits in process instead (a
``MemoryLimiterStore`` of its own: the same rules, per replica), so an outage of the
limiter is neither an outage of the API nor a lifting of the limits. It asks the shared
store again every ``probe_interval`` seconds and goes back to it once it answers.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .errors import LimiterUnavailable, RateLimited

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("arclip.billing")


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens per second
    burst: int  # bucket size
    concurrency: int  # requests at once

    @property
    def window(self) -> float:
        """Seconds an empty bucket takes to fill."""
        return self.burst / self.rate


@dataclass(frozen=True)
class Bucket:
    allowed: bool
    tokens: float  # left after this request
    retry_after: float  # seconds until a token is there (0 when allowed)


@dataclass
class Decision:
    key: str
    limit: Limit
    allowed: bool
    remaining: int  # whole tokens left
    reset: float  # seconds until the bucket is full again
    retry_after: float
    in_flight: int  # requests of this key running, this one included
    reason: str | None = None  # "rate" or "concurrency" when refused
    lease: str | None = None  # the concurrency slot to give back
    degraded: bool = False  # the shared store failed: decided by this replica's own limits
    local: bool = False  # the lease is in the local store (given back there, not to the shared one)


class LimiterStore(Protocol):
    async def take(self, key: str, limit: Limit) -> Bucket: ...

    async def acquire(self, key: str, lease: str, limit: Limit, ttl: float) -> tuple[bool, int]: ...

    async def release(self, key: str, lease: str) -> None: ...

    async def close(self) -> None: ...


class MemoryLimiterStore:
    """One process's limits (no Redis): a dict of buckets and of running leases."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, prune_above: int = 10_000) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._leases: dict[str, dict[str, float]] = {}  # key -> lease -> expiry
        self._prune_above = prune_above

    async def take(self, key: str, limit: Limit) -> Bucket:
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + max(0.0, now - at) * limit.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            result = Bucket(True, tokens, 0.0)
        else:
            result = Bucket(False, tokens, (1.0 - tokens) / limit.rate)
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._prune_above:
            self._prune(now, limit)
        return result

    def _prune(self, now: float, limit: Limit) -> None:
        # A bucket idle long enough to be full again holds nothing worth keeping.
        horizon = limit.window
        for key, (_, at) in list(self._buckets.items()):
            if now - at >= horizon:
                del self._buckets[key]

    async def acquire(self, key: str, lease: str, limit: Limit, ttl: float) -> tuple[bool, int]:
        now = self._clock()
        running = {k: v for k, v in self._leases.get(key, {}).items() if v > now}
        if len(running) >= limit.concurrency:
            self._leases[key] = running
            return False, len(running)
        running[lease] = now + ttl
        self._leases[key] = running
        return True, len(running)

    async def release(self, key: str, lease: str) -> None:
        running = self._leases.get(key)
        if running is not None:
            running.pop(lease, None)
            if not running:
                del self._leases[key]

    async def close(self) -> None:
        return None


# Token bucket, on Redis's clock so replicas agree. KEYS[1]: the bucket;
# ARGV: rate (tokens/s), burst. Returns {allowed, tokens, retry_after} (as strings:
# Lua numbers become integers on the way out).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
end
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens), tostring(retry)}
"""

# Concurrency: a sorted set of leases scored by their expiry (a crashed process's
# lease lapses). KEYS[1]: the set; ARGV: lease, limit, ttl (ms). Returns {acquired, running}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local running = redis.call('ZCARD', KEYS[1])
if running >= tonumber(ARGV[2]) then
  return {0, running}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return {1, running + 1}
"""


class RedisLimiterStore:
    """Limits shared by every replica. Redis errors become ``LimiterUnavailable``."""

    def __init__(self, redis: Redis, prefix: str = "arclip:ratelimit") -> None:
        self._redis = redis
        self._prefix = prefix
        self._take = redis.register_script(_TAKE)
        self._acquire = redis.register_script(_ACQUIRE)

    async def take(self, key: str, limit: Limit) -> Bucket:
        from redis.exceptions import RedisError

        try:
            allowed, tokens, retry = await self._take(keys=[f"{self._prefix}:bucket:{key}"], args=[limit.rate, limit.burst])
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable(f"rate-limit store failed: {exc.__class__.__name__}: {exc}") from exc
        return Bucket(bool(int(allowed)), float(tokens), float(retry))

    async def acquire(self, key: str, lease: str, limit: Limit, ttl: float) -> tuple[bool, int]:
        from redis.exceptions import RedisError

        try:
            acquired, running = await self._acquire(
                keys=[f"{self._prefix}:running:{key}"], args=[lease, limit.concurrency, int(ttl * 1000)]
            )
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable(f"rate-limit store failed: {exc.__class__.__name__}: {exc}") from exc
        return bool(int(acquired)), int(running)

    async def release(self, key: str, lease: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.zrem(f"{self._prefix}:running:{key}", lease)
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable(f"rate-limit store failed: {exc.__class__.__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()


class RateLimiter:
    """Admit a request of a key: a token from its bucket, then a concurrency slot.

    ``store`` holds the limits (shared by replicas when it is Redis); ``local`` takes
    over while ``store`` raises ``LimiterUnavailable``. The switch is logged once each way.
    """

    def __init__(
        self,
        store: LimiterStore,
        *,
        lease_ttl: float = 300.0,
        local: LimiterStore | None = None,
        probe_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.local = local if local is not None else MemoryLimiterStore(clock=clock)
        self.lease_ttl = lease_ttl  # a slot not given back (a crash) frees itself after this
        self._probe_interval = probe_interval
        self._clock = clock
        self._probe_at: float | None = None  # while the store is down: when to try it again

    @property
    def degraded(self) -> bool:
        return self._probe_at is not None

    def _shared_store(self) -> LimiterStore | None:
        """The shared store, or None while it is down and not yet due for another try.

        Not asking a dead Redis on every request spares each one its timeout.
        """
        if self._probe_at is None or self._clock() >= self._probe_at:
            return self.store
        return None

    def _store_failed(self, exc: LimiterUnavailable) -> None:
        if self._probe_at is None:
            log.warning("rate limiter store unavailable, limiting in process (per replica): %s", exc.detail)
        self._probe_at = self._clock() + self._probe_interval

    def _store_answered(self) -> None:
        if self._probe_at is not None:
            self._probe_at = None
            log.warning("rate limiter store is back, limits shared again")

    async def _take(self, key: str, limit: Limit) -> tuple[Bucket, bool]:
        """A token, and whether the local store gave it."""
        shared = self._shared_store()
        if shared is not None:
            try:
                bucket = await shared.take(key, limit)
            except LimiterUnavailable as exc:
                self._store_failed(exc)
            else:
                self._store_answered()
                return bucket, False
        return await self.local.take(key, limit), True

    async def _acquire(self, key: str, lease: str, limit: Limit) -> tuple[bool, int, bool]:
        """(acquired, running, local) for a concurrency slot."""
        shared = self._shared_store()
        if shared is not None:
            try:
                acquired, running = await shared.acquire(key, lease, limit, self.lease_ttl)
            except LimiterUnavailable as exc:
                self._store_failed(exc)
            else:
                self._store_answered()
                return acquired, running, False
        acquired, running = await self.local.acquire(key, lease, limit, self.lease_ttl)
        return acquired, running, True

    async def acquire(self, key: str, limit: Limit) -> Decision:
        """A decision; raise ``RateLimited`` (carrying it) when the key must wait."""
        bucket, degraded = await self._take(key, limit)
        remaining = int(bucket.tokens)
        reset = (limit.burst - bucket.tokens) / limit.rate
        if not bucket.allowed:
            decision = Decision(key, limit, False, 0, reset, bucket.retry_after, 0, reason="rate", degraded=degraded)
            raise self._refusal(decision, "Too many requests for this API key; slow down.")
        lease = secrets.token_hex(8)
        acquired, running, local = await self._acquire(key, lease, limit)
        degraded = degraded or local
        if not acquired:
            decision = Decision(
                key, limit, False, remaining, reset, 1.0, running, reason="concurrency", degraded=degraded
            )
            raise self._refusal(
                decision, f"This API key already has {running} requests running (the plan allows {limit.concurrency})."
            )
        return Decision(key, limit, True, remaining, reset, 0.0, running, lease=lease, degraded=degraded, local=local)

    @staticmethod
    def _refusal(decision: Decision, detail: str) -> RateLimited:
        error = RateLimited(detail, retry_after=decision.retry_after, reason=decision.reason or "rate")
        error.decision = decision
        return error

    async def release(self, decision: Decision) -> None:
        """Give the slot back to the store that holds it."""
        if decision.lease is None:
            return
        lease, decision.lease = decision.lease, None
        if decision.local:
            await self.local.release(decision.key, lease)
            return
        try:
            await self.store.release(decision.key, lease)
        except LimiterUnavailable as exc:
            self._store_failed(exc)  # the shared lease lapses on its own after lease_ttl

    async def close(self) -> None:
        await self.store.close()
