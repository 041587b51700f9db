"""The live channel: acks, at-least-once delivery turned into exactly-once-in-order, reconnect and
resume after a dropped connection and after a server restart, heartbeats."""

from __future__ import annotations

import asyncio

import pytest
from arclip_client import ASSET_CREATED, PEER_JOINED, DesktopDevice, EventStream, PhoneDevice, RetryPolicy

from tests.conftest import jpeg

from .conftest import LiveServer

WAIT = 20.0
FAST_RECONNECT = RetryPolicy(max_retries=40, initial_delay=0.05, max_delay=0.5, jitter=0.2)


async def pair(server: LiveServer) -> tuple[DesktopDevice, PhoneDevice]:
    desktop = await DesktopDevice.open(server.base_url, reconnect=FAST_RECONNECT)
    phone = await PhoneDevice.claim(server.base_url, desktop.code)  # type: ignore[arg-type]
    return desktop, phone


def drop(stream: EventStream) -> None:
    """Cut the connection under the stream, as a network failure would (no close frame)."""
    assert stream._ws is not None
    stream._ws.transport.abort()


async def test_reconnect_after_a_dropped_connection_resumes(server: LiveServer) -> None:
    desktop, phone = await pair(server)
    async with desktop.events() as events:
        await events.wait_for(PEER_JOINED, timeout=WAIT)
        first = await phone.capture(jpeg(64, 48))
        assert (await events.wait_for(ASSET_CREATED, timeout=WAIT)).asset == first

        drop(events)
        missed = [await phone.capture(jpeg(64 + i, 48)) for i in range(3)]  # while the desktop is away
        received = [await events.wait_for(timeout=WAIT) for _ in range(3)]
        assert [e.asset for e in received] == missed  # nothing lost, nothing twice, in order
        assert [e.id for e in received] == list(range(received[0].id, received[0].id + 3))
        assert events.reconnects >= 1 and events.connected

        with pytest.raises(TimeoutError):  # and nothing more
            await events.wait_for(timeout=0.3)
    await phone.aclose()
    await desktop.aclose()


async def test_reconnect_across_a_server_restart(server: LiveServer) -> None:
    desktop, phone = await pair(server)
    async with desktop.events() as events:
        joined = await events.wait_for(PEER_JOINED, timeout=WAIT)
        server.restart()  # same port and data directory; the socket gets 1012 "service restart"
        after = await phone.capture(jpeg(80, 60))
        created = await events.wait_for(timeout=WAIT)
        assert created.type == ASSET_CREATED and created.asset == after and created.id == joined.id + 1
        assert events.reconnects >= 1
    await phone.aclose()
    await desktop.aclose()


async def test_streams_continue_where_the_previous_stopped_and_acks_persist(server: LiveServer) -> None:
    desktop, phone = await pair(server)
    assets = [await phone.capture(jpeg(64 + i, 48)) for i in range(2)]
    async with desktop.events() as events:  # a fresh device gets everything it never acked
        seen = [await events.wait_for(timeout=WAIT) for _ in range(3)]
    assert [e.type for e in seen] == [PEER_JOINED, ASSET_CREATED, ASSET_CREATED]
    assert [e.asset for e in seen[1:]] == assets

    third = await phone.capture(jpeg(90, 48))
    async with desktop.events() as events:  # the same device object: carries on after what it handed out
        nxt = await events.wait_for(timeout=WAIT)
    assert nxt.asset == third and nxt.id == seen[-1].id + 1

    # a new process with the same token starts after the server-side ack, not from the beginning
    fourth = await phone.capture(jpeg(100, 48))
    again = DesktopDevice.attach(server.base_url, token=desktop.token, pairing_id=desktop.pairing_id)
    async with again.events() as events:
        assert (await events.wait_for(timeout=WAIT)).asset == fourth
    async with again.events(since=0) as events:  # since=0 replays the whole kept log
        replay = [await events.wait_for(timeout=WAIT) for _ in range(5)]
    assert [e.id for e in replay] == list(range(1, 6))

    for device in (again, phone, desktop):
        await device.aclose()


async def test_heartbeats_are_answered(server_factory) -> None:  # type: ignore[no-untyped-def]
    """The server pings every 0.2 s and closes a socket silent for 0.8 s: the stream stays up."""
    server = server_factory(hub_heartbeat_s=0.2, hub_idle_timeout_s=0.8)
    desktop, phone = await pair(server)
    async with desktop.events() as events:
        await events.wait_for(PEER_JOINED, timeout=WAIT)
        await asyncio.sleep(2.0)  # two and a half idle timeouts
        assert events.reconnects == 0 and events.connected
        asset = await phone.capture(jpeg(64, 48))
        assert (await events.wait_for(timeout=WAIT)).asset == asset
    await phone.aclose()
    await desktop.aclose()


async def test_a_consumer_that_stops_reading_misses_nothing(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(hub_heartbeat_s=0.2, hub_idle_timeout_s=0.8)
    desktop, phone = await pair(server)
    events = await desktop.events().connect()
    assets = [await phone.capture(jpeg(64 + i, 48)) for i in range(3)]
    await asyncio.sleep(1.6)  # not iterating: the background task keeps the socket alive
    got = [e async for e in _take(events, 4)]
    assert [e.type for e in got] == [PEER_JOINED] + [ASSET_CREATED] * 3
    assert [e.asset for e in got[1:]] == assets and events.reconnects == 0
    await events.aclose()
    assert [e async for e in events] == []  # a closed stream just ends
    await phone.aclose()
    await desktop.aclose()


async def _take(stream: EventStream, n: int):  # type: ignore[no-untyped-def]
    for _ in range(n):
        async with asyncio.timeout(WAIT):
            yield await stream.__anext__()


async def test_messages_buffered_but_not_handed_out_come_again(server: LiveServer) -> None:
    desktop, phone = await pair(server)
    async with desktop.events() as events:
        assert (await events.wait_for(timeout=WAIT)).type == PEER_JOINED
        assets = [await phone.capture(jpeg(64 + i, 48)) for i in range(2)]
        await asyncio.sleep(0.3)  # received by the background task, not yet asked for
    async with desktop.events() as events:
        got = [await events.wait_for(timeout=WAIT) for _ in range(2)]
    assert [e.asset for e in got] == assets
    await phone.aclose()
    await desktop.aclose()


async def test_manual_acks(server: LiveServer) -> None:
    desktop, phone = await pair(server)
    asset = await phone.capture(jpeg(64, 48))

    def fresh() -> DesktopDevice:  # another process holding the same token: only server-side acks count
        return DesktopDevice.attach(server.base_url, token=desktop.token, pairing_id=desktop.pairing_id)

    async with desktop.events(auto_ack=False) as events:
        seen = [await events.wait_for(timeout=WAIT) for _ in range(2)]
    assert [e.type for e in seen] == [PEER_JOINED, ASSET_CREATED]
    async with fresh() as other, other.events(auto_ack=False) as events:
        assert (await events.wait_for(timeout=WAIT)).id == seen[0].id  # nothing was acked: all again
        await events.ack(seen[0].id)
    async with fresh() as other, other.events() as events:
        assert (await events.wait_for(timeout=WAIT)).asset == asset  # resumes after the ack
    await phone.aclose()
    await desktop.aclose()
