"""RedisHub specifics, against a real redis-server: replicas see each other; the shared throttle."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from sync.hub import HistoryTrimmed, HubUnavailable, Message, RedisHub
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
    one = await b.publish("p", "one", {})
    two = await b.publish("p", "two", {"x": 1})
    assert [(m.id, m.type) for m in await follower] == [(one, "one"), (two, "two")]
    assert two == one + 1


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
    ids = [await a.publish("p", "t", {"n": i}) for i in range(4)]
    await a.ack("p", "dev", ids[1])
    assert await b.acked("p", "dev") == ids[1]
    assert [m.data["n"] for m in await take(b, "p", ids[1], 2)] == [2, 3]


# -- Redis loses its data: ids never repeat, and followers holding old ids resync -----------------------------


async def test_ids_never_repeat_after_flushall(replicas: tuple[RedisHub, RedisHub]) -> None:
    a, b = replicas
    before = [await a.publish("p", "t", {"n": i}) for i in range(3)]
    await a.ack("p", "dev", before[-1])
    await a._redis.flushall()  # everything gone: the stream, the acks
    assert await b.acked("p", "dev") == 0
    head = await b.last_id("p")  # the stream made again, empty, above every id given out before
    assert head > before[-1]
    after = [await b.publish("p", "t", {"n": i}) for i in range(3, 5)]
    assert after == [head + 1, head + 2]
    # A client still holding an old id is told to resync, whichever old id it holds ...
    for old in (before[0], before[-1]):
        with pytest.raises(HistoryTrimmed) as gap:
            await take(a, "p", old, 1)
        assert (gap.value.last_id, gap.value.reason) == (after[-1], "reset")
    # ... and one starting afresh gets the new stream from its first message.
    assert [m.data["n"] for m in await take(a, "p", 0, 2)] == [3, 4]


async def test_a_live_follower_resyncs_when_redis_loses_the_stream(replicas: tuple[RedisHub, RedisHub]) -> None:
    a, b = replicas
    first = await b.publish("p", "t", {"n": 0})
    got: list[Message] = []

    async def follow() -> None:
        async with contextlib.aclosing(a.follow("p", 0)) as messages:
            async for message in messages:
                got.append(message)

    follower = asyncio.create_task(follow())
    while not got:
        await asyncio.sleep(0.01)
    await b._redis.flushall()
    later = await b.publish("p", "t", {"n": 1})
    assert later > first
    with pytest.raises(HistoryTrimmed) as gap:
        await asyncio.wait_for(follower, 10)
    assert gap.value.last_id == later and [m.id for m in got] == [first]


async def test_ids_never_repeat_after_a_restart_without_persistence(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=False)
    url = server.start()
    client = Redis.from_url(url)
    hub = RedisHub(client, block_ms=200)
    await hub.start()
    try:
        before = [await hub.publish("p", "t", {}) for _ in range(3)]
        server.stop()
        with pytest.raises(HubUnavailable):
            await hub.publish("p", "t", {})
        server.start(port=server.port)  # same address, no data
        after = await hub.publish("p", "t", {})
        assert after > before[-1]
        with pytest.raises(HistoryTrimmed) as gap:
            await take(hub, "p", before[-1], 1)
        assert gap.value.reason == "reset"
    finally:
        await hub.close()
        await client.aclose()
        server.stop()


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
