"""Presence (who is connected now): MemoryPresence, RedisPresence across replicas, and the sessions' frames.

The websocket-level tests (real sockets, one process and two replicas) are in tests/api/test_sync_ws.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from api.database import create_database, create_schema, session_factory
from sync.hub import (
    PEER_OFFLINE,
    PEER_ONLINE,
    MemoryPresence,
    Peer,
    RedisPresence,
    SessionConfig,
    SqlHub,
    SyncGateway,
)
from sync.pairing import Device
from tests.sync.test_hub_session import Connection

DESKTOP = Device("pr_1", "desktop", "dev_desk")
PHONE = Device("pr_1", "phone", "dev_phone")
PHONE_2 = Device("pr_1", "phone", "dev_phone2")
STRANGER = Device("pr_2", "phone", "dev_other")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def wait_until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)


# -- MemoryPresence ----------------------------------------------------------------------------------------


async def test_two_connections_of_a_device_count_until_the_last_closes_and_then_a_grace() -> None:
    clock = Clock()
    presence = MemoryPresence(grace_s=5.0, clock=clock)
    first, second = await presence.connect(PHONE), await presence.connect(PHONE)
    await presence.connect(STRANGER)
    assert await presence.online("pr_1") == {Peer("dev_phone", "phone")}

    await presence.disconnect(PHONE, first)
    clock.now += 60
    assert await presence.online("pr_1") == {Peer("dev_phone", "phone")}  # the other tab is still open

    await presence.disconnect(PHONE, second)
    clock.now += 4.9
    assert await presence.online("pr_1") == {Peer("dev_phone", "phone")}  # within the grace
    clock.now += 0.2
    assert await presence.online("pr_1") == frozenset()
    assert await presence.online("pr_2") == {Peer("dev_other", "phone")}
    await presence.close()


async def test_a_reconnect_within_the_grace_keeps_the_device_online() -> None:
    clock = Clock()
    presence = MemoryPresence(grace_s=5.0, clock=clock)
    old = await presence.connect(PHONE)
    await presence.disconnect(PHONE, old)
    clock.now += 3
    await presence.connect(PHONE)
    clock.now += 60
    assert await presence.online("pr_1") == {Peer("dev_phone", "phone")}
    await presence.close()


async def test_watchers_are_woken_when_the_grace_runs_out() -> None:
    presence = MemoryPresence(grace_s=0.05)
    connection = await presence.connect(PHONE)
    with presence.watch("pr_1") as current:
        wake = current()
        await presence.disconnect(PHONE, connection)
        await asyncio.wait_for(wake.wait(), 5)
    assert await presence.online("pr_1") == frozenset()
    await presence.close()


async def test_a_removed_device_goes_offline_without_a_grace() -> None:
    presence = MemoryPresence(grace_s=60.0)
    connection = await presence.connect(PHONE)
    await presence.disconnect(PHONE, connection, linger=False)
    assert await presence.online("pr_1") == frozenset()
    await presence.close()


# -- RedisPresence: two replicas ---------------------------------------------------------------------------


@pytest.fixture
async def presences(redis_server_url: str) -> AsyncIterator[tuple[RedisPresence, RedisPresence]]:
    """Two presences with their own Redis clients, like two processes."""
    prefix = "p" + uuid.uuid4().hex[:8]
    clients = [Redis.from_url(redis_server_url), Redis.from_url(redis_server_url)]
    replicas = [RedisPresence(c, prefix=prefix, grace_s=0.2, ttl_s=30.0, refresh_s=10.0, poll_s=0.2) for c in clients]
    for replica in replicas:
        await replica.start()
    try:
        yield replicas[0], replicas[1]
    finally:
        for replica in replicas:
            await replica.close()
        for client in clients:
            await client.aclose()


async def test_a_connection_on_one_replica_is_seen_and_announced_on_another(
    presences: tuple[RedisPresence, RedisPresence],
) -> None:
    a, b = presences
    with b.watch("pr_1") as current:
        wake = current()
        first = await a.connect(PHONE)
        await asyncio.wait_for(wake.wait(), 5)  # b heard of it over pub/sub
    assert await b.online("pr_1") == {Peer("dev_phone", "phone")}

    second = await b.connect(PHONE)  # a second tab, on the other replica
    await a.disconnect(PHONE, first)
    await asyncio.sleep(0.5)  # well past the grace: the open tab keeps it online
    assert await a.online("pr_1") == {Peer("dev_phone", "phone")}

    with a.watch("pr_1") as current:
        wake = current()
        await b.disconnect(PHONE, second)
        assert await a.online("pr_1") == {Peer("dev_phone", "phone")}  # lingering
        await asyncio.wait_for(wake.wait(), 5)  # b announces the end of the grace
    await wait_until(lambda: _offline(a, "pr_1"))


async def test_redis_reconnect_within_the_grace_and_removal(presences: tuple[RedisPresence, RedisPresence]) -> None:
    a, b = presences
    old = await a.connect(DESKTOP)
    await a.disconnect(DESKTOP, old)
    await b.connect(DESKTOP)  # back, on the other replica, within the grace
    await asyncio.sleep(0.5)
    assert await a.online("pr_1") == {Peer("dev_desk", "desktop")}

    phone = await a.connect(PHONE)
    await a.disconnect(PHONE, phone, linger=False)
    assert await b.online("pr_1") == {Peer("dev_desk", "desktop")}


async def _offline(presence: RedisPresence, pairing_id: str) -> bool:
    return await presence.online(pairing_id) == frozenset()


# -- the sessions' frames -------------------------------------------------------------------------------------


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[SqlHub]:
    engine = create_database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await create_schema(engine)
    hub = SqlHub(session_factory(engine))
    try:
        yield hub
    finally:
        await hub.close()
        await engine.dispose()


def gateway(hub: SqlHub, grace_s: float) -> SyncGateway:
    return SyncGateway(hub, SessionConfig(heartbeat_s=5.0, idle_timeout_s=30.0), presence=MemoryPresence(grace_s))


async def presence_frame(conn: Connection) -> dict:
    while True:
        frame = await conn.socket.next(presence=True)
        if frame["type"] in (PEER_ONLINE, PEER_OFFLINE):
            assert frame["id"] is None  # control, not in the log
            return frame


async def test_sessions_report_peers_in_hello_and_as_they_come_and_go(hub: SqlHub) -> None:
    live = gateway(hub, grace_s=0.05)
    desk = Connection(live, DESKTOP)
    assert (await desk.hello())["peers"] == []
    phone = Connection(live, PHONE)
    assert (await phone.hello())["peers"] == [{"device_id": "dev_desk", "role": "desktop"}]
    assert await presence_frame(desk) == {"id": None, "type": PEER_ONLINE, "data": {"device_id": "dev_phone", "role": "phone"}}

    phone.socket.hang_up()
    await phone.ended()
    assert await presence_frame(desk) == {"id": None, "type": PEER_OFFLINE, "data": {"device_id": "dev_phone", "role": "phone"}}
    assert await hub.last_id("pr_1") == 0  # nothing of it went into the log
    desk.socket.hang_up()
    await desk.ended()


async def test_a_quick_reconnect_and_a_second_tab_do_not_flap(hub: SqlHub) -> None:
    live = gateway(hub, grace_s=60.0)
    desk = Connection(live, DESKTOP)
    await desk.hello()
    tab_1, tab_2 = Connection(live, PHONE), Connection(live, PHONE)
    await tab_1.hello()
    await tab_2.hello()
    assert (await presence_frame(desk))["data"]["device_id"] == "dev_phone"
    tab_1.socket.hang_up()
    await tab_1.ended()
    tab_2.socket.hang_up()
    await tab_2.ended()
    back = Connection(live, PHONE)  # a reload: back within the grace
    await back.hello()
    other = Connection(live, PHONE_2)  # the next change the desktop hears of is this one
    await other.hello()
    assert await presence_frame(desk) == {"id": None, "type": PEER_ONLINE, "data": {"device_id": "dev_phone2", "role": "phone"}}
    for conn in (back, other, desk):
        conn.socket.hang_up()
        await conn.ended()
