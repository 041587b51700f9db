"""The Hub contract, run against both backends: SqlHub (SQLite) and RedisHub (a real redis-server)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.database import create_database, create_schema, session_factory
from sync.hub import HistoryTrimmed, Hub, HubUnavailable, Message, RedisHub, SqlHub
from sync.hub.testing import RedisServer


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with RedisServer(tmp_path_factory.mktemp("redis")) as url:
        yield url


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Backend:
    """Builds hubs of one kind over one shared store; ``reopen`` is a fresh process on the same store."""

    def __init__(self, name: str, open_hub: Callable[..., Awaitable[Hub]]) -> None:
        self.name = name
        self._open = open_hub
        self.clock = Clock()

    async def hub(self, **options: Any) -> Hub:
        return await self._open(**options)


@pytest.fixture(params=["sql", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    closers: list[Callable[[], Awaitable[Any]]] = []
    if request.param == "sql":
        path = tmp_path / "hub.db"

        async def open_hub(**options: Any) -> Hub:
            engine = create_database(f"sqlite+aiosqlite:///{path}")
            await create_schema(engine)
            hub = SqlHub(session_factory(engine), clock=backend.clock, **options)
            await hub.start()
            closers.extend([engine.dispose, hub.close])
            return hub

    else:
        from redis.asyncio import Redis

        url = request.getfixturevalue("redis_url")
        prefix = "t" + uuid.uuid4().hex[:8]

        async def open_hub(**options: Any) -> Hub:
            client = Redis.from_url(url)
            hub = RedisHub(client, prefix=prefix, **options)
            await hub.start()
            closers.extend([client.aclose, hub.close])
            return hub

    backend = Backend(request.param, open_hub)
    try:
        yield backend
    finally:
        for close in reversed(closers):
            await close()


async def take(hub: Hub, pairing_id: str, after: int, count: int, timeout: float = 5.0) -> list[Message]:
    got: list[Message] = []

    async def run() -> None:
        async with contextlib.aclosing(hub.follow(pairing_id, after)) as messages:
            async for message in messages:
                got.append(message)
                if len(got) == count:
                    return

    await asyncio.wait_for(run(), timeout)
    return got


async def test_ids_are_consecutive_per_pairing(backend: Backend) -> None:
    hub = await backend.hub()
    a, b = await hub.last_id("a"), await hub.last_id("b")  # the origins: 0 in SQL, Redis's clock in Redis
    assert a == b == 0 if backend.name == "sql" else 10**15 < a <= b < 2**53
    ids = [await hub.publish(p, "t", {"n": i}) for i, p in enumerate(["a", "a", "b", "a"])]
    assert ids == [a + 1, a + 2, b + 1, a + 3]
    assert await hub.last_id("a") == a + 3 and await hub.last_id("b") == b + 1


async def test_messages_round_trip(backend: Backend) -> None:
    hub = await backend.hub()
    data = {"asset_id": "ast_1", "bbox": {"left": 1, "top": 2}, "text": "é ✂", "ok": True, "none": None}
    origin = await hub.last_id("p")
    await hub.publish("p", "asset.created", data)
    assert await take(hub, "p", 0, 1) == [Message(origin + 1, "asset.created", data)]


async def test_follow_replays_then_goes_live(backend: Backend) -> None:
    hub = await backend.hub()
    o = await hub.last_id("p")
    for i in range(3):
        await hub.publish("p", "t", {"n": i})
    follower = asyncio.create_task(take(hub, "p", o + 1, 4))
    await asyncio.sleep(0.2)
    for i in range(3, 5):
        await hub.publish("p", "t", {"n": i})
    assert [m.id - o for m in await follower] == [2, 3, 4, 5]


async def test_an_idle_follower_wakes_on_publish(backend: Backend) -> None:
    hub = await backend.hub()
    follower = asyncio.create_task(take(hub, "p", 0, 1))
    await asyncio.sleep(0.2)
    assert not follower.done()
    await hub.publish("p", "hello", {})
    assert [m.type for m in await follower] == ["hello"]


async def test_concurrent_publishes_get_distinct_consecutive_ids(backend: Backend) -> None:
    hub = await backend.hub()
    o = await hub.last_id("p")
    ids = await asyncio.gather(*(hub.publish("p", "t", {"n": i}) for i in range(30)))
    assert sorted(ids) == list(range(o + 1, o + 31))
    assert [m.id for m in await take(hub, "p", 0, 30)] == list(range(o + 1, o + 31))


async def test_trimmed_history_is_reported(backend: Backend) -> None:
    hub = await backend.hub(max_messages=3)
    o = await hub.last_id("p")
    for i in range(5):
        await hub.publish("p", "t", {"n": i})
    with pytest.raises(HistoryTrimmed) as gap:
        await take(hub, "p", o + 1, 1)
    assert (gap.value.last_id, gap.value.reason) == (o + 5, "trimmed")
    with pytest.raises(HistoryTrimmed):
        await take(hub, "p", 0, 1)
    assert [m.id - o for m in await take(hub, "p", o + 2, 3)] == [3, 4, 5]  # still all kept after 2


async def test_a_cursor_beyond_the_head_is_a_reset(backend: Backend) -> None:
    hub = await backend.hub()
    o = await hub.last_id("p")
    await hub.publish("p", "t", {})
    for beyond in (o + 7, 2**63 - 1):
        with pytest.raises(HistoryTrimmed) as gap:
            await take(hub, "p", beyond, 1)
        assert (gap.value.after, gap.value.last_id, gap.value.reason) == (beyond, o + 1, "reset")


async def test_acks_never_move_back(backend: Backend) -> None:
    hub = await backend.hub()
    assert await hub.acked("p", "dev_1") == 0
    await hub.ack("p", "dev_1", 3)
    await hub.ack("p", "dev_1", 2)
    assert await hub.acked("p", "dev_1") == 3
    await hub.ack("p", "dev_1", 5)
    assert await hub.acked("p", "dev_1") == 5
    assert await hub.acked("p", "dev_2") == 0


async def test_a_new_instance_over_the_same_store_loses_nothing(backend: Backend) -> None:
    first = await backend.hub()
    o = await first.last_id("p")
    for i in range(3):
        await first.publish("p", "asset.created", {"n": i})
    await first.ack("p", "dev_1", o + 2)
    await first.close()
    second = await backend.hub()  # "the server restarted"
    assert await second.last_id("p") == o + 3
    assert await second.acked("p", "dev_1") == o + 2
    assert [m.data["n"] for m in await take(second, "p", 0, 3)] == [0, 1, 2]
    assert await second.publish("p", "t", {}) == o + 4


async def test_forget_drops_the_log_after_a_grace(backend: Backend) -> None:
    hub = await backend.hub(forget_after=timedelta(seconds=1))
    o = await hub.last_id("p")
    await hub.publish("p", "t", {})
    await hub.ack("p", "dev", o + 1)
    await hub.forget("p")
    assert await hub.last_id("p") == o + 1  # followers still get the last messages
    if backend.name == "sql":
        backend.clock.now += timedelta(seconds=2)
        assert await hub.sweep() == 1
        assert await hub.last_id("p") == 0
    else:
        await asyncio.sleep(2.1)
        assert await hub.last_id("p") > o + 1  # gone; a stream made again starts above it
    assert await hub.acked("p", "dev") == 0


async def test_sql_retention_trims_old_messages(tmp_path: Path) -> None:
    engine = create_database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await create_schema(engine)
    clock = Clock()
    hub = SqlHub(session_factory(engine), retention=timedelta(hours=1), clock=clock)
    try:
        await hub.publish("p", "old", {})
        await hub.publish("p", "old", {})
        clock.now += timedelta(minutes=61)
        await hub.publish("p", "new", {})
        assert await hub.sweep() == 2
        with pytest.raises(HistoryTrimmed):
            await take(hub, "p", 0, 1)
        assert [m.type for m in await take(hub, "p", 2, 1)] == ["new"]
        clock.now += timedelta(minutes=61)
        assert await hub.sweep() == 1
        with pytest.raises(HistoryTrimmed) as gap:  # nothing left to read, but the head is past the cursor
            await take(hub, "p", 2, 1)
        assert (gap.value.last_id, gap.value.reason) == (3, "trimmed")
        assert await hub.publish("p", "next", {}) == 4
    finally:
        await engine.dispose()


async def test_a_locked_sqlite_file_is_hub_unavailable_for_every_queued_turn_then_recovers(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "hub.db"
    engine = create_database(f"sqlite+aiosqlite:///{path}", busy_timeout_s=0.2)
    await create_schema(engine)
    hub = SqlHub(session_factory(engine), one_at_a_time=True)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        await hub.publish("p", "t", {})
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        calls = [hub.publish("p", "t", {}), hub.ack("p", "dev", 1), hub.last_id("p"), hub.acked("p", "dev")]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, HubUnavailable) for o in outcomes), outcomes
        holder.execute("ROLLBACK")
        assert await hub.publish("p", "t", {}) == 2  # nothing half-written while locked
        await hub.ack("p", "dev", 2)
        assert (await hub.last_id("p"), await hub.acked("p", "dev")) == (2, 2)
        assert [m.id for m in await take(hub, "p", 0, 2)] == [1, 2]
    finally:
        holder.close()
        await hub.close()
        await engine.dispose()


async def test_an_unreachable_store_is_hub_unavailable(tmp_path: Path) -> None:
    from redis.asyncio import Redis

    from sync.hub.testing import free_port

    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    hub = RedisHub(client)
    try:
        with pytest.raises(HubUnavailable):
            await hub.publish("p", "t", {})
        with pytest.raises(HubUnavailable):
            await hub.last_id("p")
    finally:
        await client.aclose()
