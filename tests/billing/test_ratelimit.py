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
from sync.hub.testing import RedisServer
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


class FlakyStore(MemoryLimiterStore):
    """A shared store that can be switched off (as Redis going down) and on again."""

    def __init__(self) -> None:
        super().__init__()
        self.up = True
        self.calls = 0

    async def take(self, key, limit):
        self.calls += 1
        if not self.up:
            raise LimiterUnavailable("connection refused")
        return await super().take(key, limit)

    async def acquire(self, key, lease, limit, ttl):
        if not self.up:
            raise LimiterUnavailable("connection refused")
        return await super().acquire(key, lease, limit, ttl)


def switch_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split(",")[0] for r in caplog.records if "rate limiter store" in r.getMessage()]


async def test_store_failure_limits_in_process_and_logs_once_each_way(caplog: pytest.LogCaptureFixture) -> None:
    ticks = Ticks()
    shared = FlakyStore()
    limiter = RateLimiter(shared, clock=ticks, probe_interval=5.0)
    limit = Limit(rate=1.0, burst=2, concurrency=10)
    shared.up = False
    with caplog.at_level(logging.INFO, logger="arclip.billing"):
        decisions = [await limiter.acquire("k", limit) for _ in range(2)]
        with pytest.raises(RateLimited) as refused:  # never unlimited: the local bucket is empty
            await limiter.acquire("k", limit)
        assert all(d.allowed and d.degraded and d.local for d in decisions) and limiter.degraded
        assert refused.value.reason == "rate" and refused.value.decision.degraded
        assert shared.calls == 1  # a dead store is not asked again before the probe is due
        shared.up = True
        ticks.now += 5.0
        back = await limiter.acquire("k", limit)
        await limiter.acquire("k", limit)
        assert not back.degraded and not back.local and not limiter.degraded
        assert back.remaining == 1  # the shared bucket's own count, untouched by the outage
    assert switch_logs(caplog) == ["rate limiter store unavailable", "rate limiter store is back"]


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


async def test_redis_down_limits_in_process() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, socket_connect_timeout=0.2)
    limiter = RateLimiter(RedisLimiterStore(dead))
    limit = Limit(rate=1.0, burst=1, concurrency=1)
    try:
        decision = await limiter.acquire("k", limit)
        assert decision.allowed and decision.degraded and decision.local
        await limiter.release(decision)
        with pytest.raises(RateLimited):
            await limiter.acquire("k", limit)
    finally:
        await dead.aclose()


async def test_redis_killed_and_restarted(tmp_path, caplog) -> None:
    """Killed: a burst over the limit is still refused. Back: the limits are shared again, and a
    slot taken during the outage and given back after it goes to the store that holds it."""
    server = RedisServer(tmp_path / "redis", appendonly=False)
    url = server.start()
    ticks = Ticks()
    clients = [Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5), Redis.from_url(url)]
    prefix = "rl" + uuid.uuid4().hex[:8]
    limiter = RateLimiter(RedisLimiterStore(clients[0], prefix=prefix), clock=ticks, probe_interval=1.0)
    other = RateLimiter(RedisLimiterStore(clients[1], prefix=prefix))  # another replica
    burst = Limit(rate=0.01, burst=3, concurrency=100)
    single = Limit(rate=100.0, burst=100, concurrency=1)
    try:
        await limiter.release(await limiter.acquire("slot", single))
        server.stop()
        with caplog.at_level(logging.INFO, logger="arclip.billing"):
            allowed = [await limiter.acquire("burst", burst) for _ in range(3)]
            with pytest.raises(RateLimited) as refused:
                await limiter.acquire("burst", burst)
            assert all(d.degraded for d in allowed) and refused.value.reason == "rate"
            held = await limiter.acquire("slot", single)
            assert held.local
            with pytest.raises(RateLimited) as busy:
                await limiter.acquire("slot", single)
            assert busy.value.reason == "concurrency"

            assert server.start(port=server.port) == url  # restarted where clients point; its data lost
            ticks.now += 1.0
            shared = await limiter.acquire("burst", burst)
            assert not shared.degraded and shared.remaining == 2
            assert (await other.acquire("burst", burst)).remaining == 1  # one bucket for both replicas

            remote = await limiter.acquire("slot", single)
            assert not remote.local
            await limiter.release(held)  # the outage's slot, given back after it
        assert await limiter.local.acquire("slot", "probe", single, 60) == (True, 1)  # freed in process
        with pytest.raises(RateLimited):  # and the shared slot still counts
            await other.acquire("slot", single)
        await limiter.release(remote)
        await other.release(await other.acquire("slot", single))
        assert switch_logs(caplog) == ["rate limiter store unavailable", "rate limiter store is back"]
    finally:
        for client in clients:
            await client.aclose()
        server.stop()
