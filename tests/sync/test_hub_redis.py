"""RedisHub specifics, against a real redis-server: replicas see each other; the shared throttle."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from sync.hub import RedisHub
from sync.hub.testing import RedisServer
from sync.pairing import Limit, RedisThrottle
from tests.sync.test_hub import take


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with RedisServer(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[tuple[RedisHub, RedisHub]]:
    """Two hubs with their own clients, like two processes; a long block to prove the tail is interrupted."""
    prefix = "r" + uuid.uuid4().hex[:8]
    clients = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
    hubs = [RedisHub(c, prefix=prefix, block_ms=30_000) for c in clients]
    for hub in hubs:
        await hub.start()
    try:
        yield hubs[0], hubs[1]
    finally:
        for hub in hubs:
            await hub.close()
        for client in clients:
            await client.aclose()


async def test_a_follower_on_one_replica_sees_publishes_on_another(replicas: tuple[RedisHub, RedisHub]) -> None:
    a, b = replicas
    follower = asyncio.create_task(take(a, "p", 0, 2))
    await asyncio.sleep(0.2)
    await b.publish("p", "one", {})
    await b.publish("p", "two", {"x": 1})
    assert [(m.id, m.type) for m in await follower] == [(1, "one"), (2, "two")]


async def test_a_newly_watched_stream_joins_the_blocked_tail_at_once(replicas: tuple[RedisHub, RedisHub]) -> None:
    a, b = replicas
    first = asyncio.create_task(take(a, "x", 0, 1, timeout=60))
    await asyncio.sleep(0.3)  # the tail is now blocked (30 s) on "x" alone
    second = asyncio.create_task(take(a, "y", 0, 1))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await b.publish("y", "hello", {})
    assert [m.type for m in await second] == ["hello"]
    assert time.monotonic() - started < 2.0
    await b.publish("x", "bye", {})
    assert [m.type for m in await first] == ["bye"]
    assert a.followers == 0


async def test_resume_across_replicas(replicas: tuple[RedisHub, RedisHub]) -> None:
    a, b = replicas
    for i in range(4):
        await a.publish("p", "t", {"n": i})
    await a.ack("p", "dev", 2)
    assert await b.acked("p", "dev") == 2
    assert [m.data["n"] for m in await take(b, "p", 2, 2)] == [2, 3]


async def test_the_throttle_is_shared_by_replicas(redis_url: str) -> None:
    prefix = "th" + uuid.uuid4().hex[:8]
    clients = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
    try:
        one, two = (RedisThrottle(c, prefix=prefix) for c in clients)
        limit = Limit(3, 60)
        assert await one.hit("k", limit) is None
        assert await two.hit("k", limit) is None
        assert await one.peek("k", limit) is None
        assert await two.hit("k", limit) is None
        assert await one.peek("k", limit) is not None
        retry = await one.hit("k", limit)
        assert retry is not None and 0 < retry <= 60
        assert await two.hit("other", limit) is None
    finally:
        for client in clients:
            await client.aclose()


async def test_a_busy_follower_can_always_be_cancelled(replicas: tuple[RedisHub, RedisHub]) -> None:
    """redis-py may swallow a cancellation that lands mid-command; the hub must not (sessions rely on it)."""
    a, b = replicas
    stop = asyncio.Event()

    async def publisher() -> None:
        while not stop.is_set():
            await b.publish("busy", "t", {})

    feeding = asyncio.create_task(publisher())
    try:
        for i in range(40):
            follower = asyncio.create_task(take(a, "busy", 0, 10**9, timeout=60))
            await asyncio.sleep(0.001 * (i % 9))
            follower.cancel()
            done, _ = await asyncio.wait([follower], timeout=2)
            assert done and follower.cancelled(), f"cancellation lost on try {i}"
    finally:
        stop.set()
        await feeding
    assert a.followers == 0
