"""Rate limits: a token bucket and a concurrency cap, in process and atomic in a real Redis."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from redis.asyncio import Redis

from billing import (
    Limit,
    MemoryLimiterStore,
    RateLimited,
    RateLimiter,
    RedisLimiterStore,
)
from billing.errors import LimiterUnavailable
from tests.billing.stripe_server import free_port


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_bucket_allows_a_burst_then_refills() -> None:
    ticks = Ticks()
    limiter = RateLimiter(MemoryLimiterStore(clock=ticks))
    limit = Limit(rate=2.0, burst=3, concurrency=10)
    decisions = [await limiter.acquire("k", limit) for _ in range(3)]
    assert [d.remaining for d in decisions] == [2, 1, 0]
    for d in decisions:
        await limiter.release(d)
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire("k", limit)
    assert refused.value.reason == "rate" and refused.value.retry_after == pytest.approx(0.5)
    assert refused.value.decision.reset == pytest.approx(1.5)
    ticks.now += 0.5
    await limiter.acquire("k", limit)  # one token came back
    assert (await limiter.acquire("other", limit)).remaining == 2  # keys have their own buckets


async def test_concurrency_cap() -> None:
    limiter = RateLimiter(MemoryLimiterStore())
    limit = Limit(rate=100.0, burst=100, concurrency=2)
    a = await limiter.acquire("k", limit)
    b = await limiter.acquire("k", limit)
    assert (a.in_flight, b.in_flight) == (1, 2)
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire("k", limit)
    assert refused.value.reason == "concurrency" and refused.value.retry_after >= 1
    await limiter.release(a)
    c = await limiter.acquire("k", limit)
    await limiter.release(b)
    await limiter.release(c)
    await limiter.release(c)  # twice is harmless


async def test_a_lost_lease_lapses() -> None:
    ticks = Ticks()
    limiter = RateLimiter(MemoryLimiterStore(clock=ticks), lease_ttl=30)
    limit = Limit(rate=100.0, burst=100, concurrency=1)
    await limiter.acquire("k", limit)  # never released (a crash)
    with pytest.raises(RateLimited):
        await limiter.acquire("k", limit)
    ticks.now += 31
    await limiter.acquire("k", limit)


class BrokenStore(MemoryLimiterStore):
    async def take(self, key, limit):
        raise LimiterUnavailable("connection refused")


async def test_store_failure_fails_open_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(BrokenStore())
    limit = Limit(rate=1.0, burst=1, concurrency=1)
    with caplog.at_level(logging.WARNING, logger="arclip.billing"):
        decisions = [await limiter.acquire("k", limit) for _ in range(5)]
    assert all(d.allowed and d.degraded for d in decisions)
    warnings = [r for r in caplog.records if "rate limiter unavailable" in r.getMessage()]
    assert len(warnings) == 1  # logged, but not once per request


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
async def redis_limiters(redis_server_url: str):
    """Two limiters with their own clients and one key space: two replicas."""
    prefix = "rl" + uuid.uuid4().hex[:8]
    clients = [Redis.from_url(redis_server_url), Redis.from_url(redis_server_url)]
    yield [RateLimiter(RedisLimiterStore(c, prefix=prefix)) for c in clients]
    for client in clients:
        await client.aclose()


async def test_redis_bucket_is_shared_and_atomic(redis_limiters) -> None:
    one, two = redis_limiters
    limit = Limit(rate=0.5, burst=10, concurrency=1000)

    async def attempt(limiter):
        try:
            decision = await limiter.acquire("key_1", limit)
        except RateLimited as exc:
            return exc.decision
        await limiter.release(decision)
        return decision

    decisions = await asyncio.gather(*(attempt(one if i % 2 else two) for i in range(40)))
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 10  # exactly the burst, across both replicas
    assert sorted(d.remaining for d in allowed) == list(range(10))
    refused = [d for d in decisions if not d.allowed]
    assert all(1.5 <= d.retry_after <= 2.0 for d in refused)  # a token every 2 s


async def test_redis_concurrency_cap_is_shared(redis_limiters) -> None:
    one, two = redis_limiters
    limit = Limit(rate=100.0, burst=100, concurrency=3)
    held = [await one.acquire("key_2", limit), await two.acquire("key_2", limit), await one.acquire("key_2", limit)]
    with pytest.raises(RateLimited) as refused:
        await two.acquire("key_2", limit)
    assert refused.value.reason == "concurrency"
    await one.release(held[0])
    held.append(await two.acquire("key_2", limit))
    for decision in held[1:]:
        await one.release(decision)


async def test_redis_down_fails_open() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, socket_connect_timeout=0.2)
    limiter = RateLimiter(RedisLimiterStore(dead))
    try:
        decision = await limiter.acquire("k", Limit(rate=1.0, burst=1, concurrency=1))
        assert decision.allowed and decision.degraded
        await limiter.release(decision)
    finally:
        await dead.aclose()
