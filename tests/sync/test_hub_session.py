"""The sync protocol (SyncSession, SyncGateway) over an in-memory socket and a real SqlHub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.database import create_database, create_schema, session_factory
from sync.hub import (
    PEER_OFFLINE,
    PEER_ONLINE,
    CloseCode,
    HubUnavailable,
    SessionConfig,
    SessionState,
    SocketClosed,
    SqlHub,
    SyncGateway,
)
from sync.pairing import PAIRING_CLOSED, PEER_LEFT, Device

DESKTOP = Device("pr_1", "desktop", "dev_desk")
PHONE = Device("pr_1", "phone", "dev_phone")


class FakeSocket:
    """The client's end: ``send``/``next`` frames; ``closed`` is the server's close, if any."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed: tuple[int, str] | None = None

    # the server's side (sync.hub.Socket)
    async def receive_text(self) -> str:
        item = await self._inbox.get()
        if item is None:
            raise SocketClosed(1000)
        return item

    async def send_text(self, text: str) -> None:
        if self.closed:
            raise SocketClosed()
        await self._outbox.put(json.loads(text))

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)

    # the client's side
    def send(self, **frame: Any) -> None:
        self._inbox.put_nowait(json.dumps(frame))

    def send_raw(self, text: str) -> None:
        self._inbox.put_nowait(text)

    def hang_up(self) -> None:
        self._inbox.put_nowait(None)

    async def next(self, *, pings: bool = False, presence: bool = False, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame, heartbeats and presence frames skipped unless asked for."""
        while True:
            frame = await asyncio.wait_for(self._outbox.get(), timeout)
            if frame["type"] == "ping" and not pings:
                continue
            if frame["type"] in (PEER_ONLINE, PEER_OFFLINE) and not presence:
                continue
            return frame

    async def stream(self, count: int) -> list[dict[str, Any]]:
        return [await self.next() for _ in range(count)]


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[SqlHub]:
    engine = create_database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await create_schema(engine)
    hub = SqlHub(session_factory(engine), max_messages=5)
    try:
        yield hub
    finally:
        await hub.close()
        await engine.dispose()


def gateway(hub: SqlHub, **config: float) -> SyncGateway:
    live = SyncGateway(hub, SessionConfig(**{"heartbeat_s": 5.0, "idle_timeout_s": 30.0, **config}))

    async def pairing_snapshot(pairing_id: str) -> dict[str, Any]:
        return {"state": "active", "devices": [{"device_id": DESKTOP.device_id, "role": "desktop"}]}

    live.add_snapshot_source("pairing", pairing_snapshot)
    return live


class Connection:
    def __init__(self, live: SyncGateway, device: Device) -> None:
        self.socket = FakeSocket()
        self.task = asyncio.create_task(live.serve(self.socket, device))

    async def hello(self) -> dict[str, Any]:
        frame = await self.socket.next()
        assert frame["type"] == "hello" and frame["id"] is None
        return frame["data"]

    async def ended(self, timeout: float = 5.0) -> int:
        return await asyncio.wait_for(self.task, timeout)


async def test_hello_then_history_then_live(hub: SqlHub) -> None:
    live = gateway(hub)
    await hub.publish("pr_1", "peer.joined", {"device_id": PHONE.device_id})
    conn = Connection(live, DESKTOP)
    hello = await conn.hello()
    assert hello == {
        "pairing_id": "pr_1", "device_id": "dev_desk", "role": "desktop", "last_id": 1, "acked_id": 0,
        "heartbeat_s": 5.0, "idle_timeout_s": 30.0, "peers": [], "presence_grace_s": 5.0,
    }
    assert await conn.socket.next() == {"id": 1, "type": "peer.joined", "data": {"device_id": "dev_phone"}}
    await hub.publish("pr_1", "asset.created", {"asset_id": "ast_1"})
    assert await conn.socket.next() == {"id": 2, "type": "asset.created", "data": {"asset_id": "ast_1"}}
    assert live.connections == 1
    conn.socket.hang_up()
    assert await conn.ended() == 1000
    assert conn.socket.closed is None  # the client left: nothing to close
    assert live.connections == 0


async def test_acks_decide_where_the_next_connection_starts(hub: SqlHub) -> None:
    live = gateway(hub)
    for i in range(3):
        await hub.publish("pr_1", "t", {"n": i})
    conn = Connection(live, DESKTOP)
    await conn.hello()
    assert [f["id"] for f in await conn.socket.stream(3)] == [1, 2, 3]
    conn.socket.send(type="ack", id=2)
    conn.socket.send(type="ping")  # a round trip, so the ack has been handled
    assert (await conn.socket.next())["type"] == "pong"
    conn.socket.hang_up()
    await conn.ended()
    assert await hub.acked("pr_1", "dev_desk") == 2

    await hub.publish("pr_1", "t", {"n": 3})  # while offline
    again = Connection(live, DESKTOP)
    assert (await again.hello())["acked_id"] == 2
    assert [f["id"] for f in await again.socket.stream(2)] == [3, 4]
    again.socket.hang_up()
    await again.ended()


async def test_an_ack_of_an_id_never_given_out_is_refused_and_not_stored(hub: SqlHub) -> None:
    live = gateway(hub)
    await hub.publish("pr_1", "t", {})
    conn = Connection(live, DESKTOP)
    await conn.hello()
    await conn.socket.next()
    conn.socket.send(type="ack", id=99)
    refused = await conn.socket.next()
    assert (refused["type"], refused["data"]["code"]) == ("error", "bad_ack")
    assert await hub.acked("pr_1", "dev_desk") == 0
    await hub.publish("pr_1", "t", {})  # given out since hello, not yet delivered: a fair ack
    conn.socket.send(type="ack", id=2)
    conn.socket.send(type="ping")
    while (await conn.socket.next())["type"] != "pong":
        pass
    assert await hub.acked("pr_1", "dev_desk") == 2
    conn.socket.hang_up()
    await conn.ended()


@pytest.mark.parametrize("value", [2**63, 10**30, -1, 1.5, True, "3", None, [1]])
async def test_ids_out_of_range_are_refused_without_closing(hub: SqlHub, value: Any) -> None:
    live = gateway(hub)
    await hub.publish("pr_1", "t", {})
    conn = Connection(live, DESKTOP)
    await conn.hello()
    await conn.socket.next()
    conn.socket.send(type="resume", last_id=value)
    assert (await conn.socket.next())["data"]["code"] == "bad_resume"
    conn.socket.send(type="ack", id=value)
    assert (await conn.socket.next())["data"]["code"] == "bad_ack"
    await hub.publish("pr_1", "t", {})
    assert (await conn.socket.next())["id"] == 2  # still open and live
    assert await hub.acked("pr_1", "dev_desk") == 0
    conn.socket.hang_up()
    assert await conn.ended() == 1000


@pytest.mark.parametrize("beyond", [3, 2**62, 2**63 - 1])
async def test_a_resume_beyond_the_last_id_gets_a_reset_resync(hub: SqlHub, beyond: int) -> None:
    live = gateway(hub)
    for i in range(2):
        await hub.publish("pr_1", "t", {"n": i})
    conn = Connection(live, DESKTOP)
    await conn.hello()
    assert [f["id"] for f in await conn.socket.stream(2)] == [1, 2]
    conn.socket.send(type="resume", last_id=beyond)
    resync = await conn.socket.next()
    assert (resync["id"], resync["type"]) == (2, "resync")
    assert (resync["data"]["reason"], resync["data"]["last_id"]) == ("reset", 2)
    assert resync["data"]["snapshot"]["last_id"] == 2
    conn.socket.send(type="ack", id=beyond)  # still not an id of this pairing
    assert (await conn.socket.next())["data"]["code"] == "bad_ack"
    await hub.publish("pr_1", "t", {"n": 2})
    assert (await conn.socket.next())["id"] == 3  # carries on from the resync's last_id
    conn.socket.send(type="ack", id=3)
    conn.socket.send(type="ping")
    assert (await conn.socket.next())["type"] == "pong"
    assert await hub.acked("pr_1", "dev_desk") == 3
    conn.socket.hang_up()
    assert await conn.ended() == 1000


async def test_resume_replays_after_last_id(hub: SqlHub) -> None:
    live = gateway(hub)
    for i in range(4):
        await hub.publish("pr_1", "t", {"n": i})
    conn = Connection(live, DESKTOP)
    await conn.hello()
    assert [f["id"] for f in await conn.socket.stream(4)] == [1, 2, 3, 4]
    conn.socket.send(type="resume", last_id=2)
    assert [f["id"] for f in await conn.socket.stream(2)] == [3, 4]
    await hub.publish("pr_1", "t", {"n": 4})
    assert (await conn.socket.next())["id"] == 5
    conn.socket.hang_up()
    await conn.ended()


async def test_trimmed_history_gets_a_resync_snapshot(hub: SqlHub) -> None:
    live = gateway(hub)
    for i in range(8):  # the hub keeps 5: ids 4..8
        await hub.publish("pr_1", "t", {"n": i})
    conn = Connection(live, PHONE)
    await conn.hello()
    resync = await conn.socket.next()
    assert resync == {
        "id": 8,
        "type": "resync",
        "data": {
            "reason": "trimmed",
            "last_id": 8,
            "snapshot": {"last_id": 8, "pairing": {"state": "active", "devices": [{"device_id": "dev_desk", "role": "desktop"}]}},
        },
    }
    await hub.publish("pr_1", "t", {"n": 8})
    assert (await conn.socket.next())["id"] == 9
    conn.socket.send(type="resume", last_id=5)  # still kept: a plain replay
    assert [f["id"] for f in await conn.socket.stream(4)] == [6, 7, 8, 9]
    conn.socket.send(type="resume", last_id=1)  # before the snapshot this connection carried: on from it
    frame = await conn.socket.next()
    assert (frame["id"], frame["type"]) == (9, "t")
    conn.socket.hang_up()
    await conn.ended()


async def test_a_resume_racing_the_first_replay_gets_no_second_resync(hub: SqlHub) -> None:
    live = gateway(hub)
    for i in range(8):  # the hub keeps 5: ids 4..8
        await hub.publish("pr_1", "t", {"n": i})
    conn = Connection(live, PHONE)
    await conn.hello()
    assert (await conn.socket.next())["type"] == "resync"  # the replay hello started hit the gap
    conn.socket.send(type="resume", last_id=1)  # sent before the client saw that resync
    conn.socket.send(type="ping")
    assert (await conn.socket.next())["type"] == "pong"  # the resume has been handled
    await hub.publish("pr_1", "t", {"n": 8})
    frame = await conn.socket.next()
    assert (frame["id"], frame["type"]) == (9, "t")  # on from the snapshot, not a second one
    conn.socket.hang_up()
    await conn.ended()


async def test_app_level_heartbeat(hub: SqlHub) -> None:
    live = gateway(hub, heartbeat_s=0.05, idle_timeout_s=5.0)
    conn = Connection(live, DESKTOP)
    await conn.hello()
    assert await conn.socket.next(pings=True) == {"id": None, "type": "ping", "data": {}}
    conn.socket.send(type="ping")
    assert (await conn.socket.next())["type"] == "pong"
    conn.socket.hang_up()
    await conn.ended()


async def test_a_silent_client_is_closed_and_a_chatty_one_is_not(hub: SqlHub) -> None:
    live = gateway(hub, heartbeat_s=0.05, idle_timeout_s=0.3)
    silent, chatty = Connection(live, DESKTOP), Connection(live, PHONE)
    await silent.hello()
    await chatty.hello()
    for _ in range(10):  # 0.5 s of answering pings
        await chatty.socket.next(pings=True)
        chatty.socket.send(type="pong")
    assert await silent.ended() == CloseCode.IDLE_TIMEOUT
    assert silent.socket.closed == (4408, "idle timeout")
    assert not chatty.task.done()
    chatty.socket.hang_up()
    await chatty.ended()


async def test_bad_frames_get_errors_and_huge_ones_a_close(hub: SqlHub) -> None:
    live = gateway(hub)
    conn = Connection(live, DESKTOP)
    await conn.hello()
    for raw, code in [
        ("not json", "bad_frame"),
        ("[1, 2]", "bad_frame"),
        ('{"no": "type"}', "bad_frame"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "ack", "id": "7"}', "bad_ack"),
        ('{"type": "resume", "last_id": -1}', "bad_resume"),
    ]:
        conn.socket.send_raw(raw)
        frame = await conn.socket.next()
        assert frame["type"] == "error" and frame["id"] is None and frame["data"]["code"] == code
    conn.socket.send_raw('{"type": "ping", "pad": "' + "x" * 5000 + '"}')
    assert await conn.ended() == CloseCode.TOO_BIG


async def test_pairing_closed_ends_every_session(hub: SqlHub) -> None:
    live = gateway(hub)
    desk, phone = Connection(live, DESKTOP), Connection(live, PHONE)
    await desk.hello()
    await phone.hello()
    await hub.publish("pr_1", PAIRING_CLOSED, {"state": "closed", "reason": "unpaired"})
    for conn in (desk, phone):
        assert (await conn.socket.next())["type"] == PAIRING_CLOSED  # told why, then closed
        assert await conn.ended() == CloseCode.GONE
        assert conn.socket.closed == (4410, "pairing closed")


async def test_a_removed_device_is_closed_and_the_others_told(hub: SqlHub) -> None:
    live = gateway(hub)
    desk, phone = Connection(live, DESKTOP), Connection(live, PHONE)
    await desk.hello()
    await phone.hello()
    await hub.publish("pr_1", PEER_LEFT, {"device_id": PHONE.device_id, "role": "phone", "reason": "unpaired"})
    assert (await phone.socket.next())["type"] == PEER_LEFT
    assert await phone.ended() == CloseCode.FORBIDDEN
    assert (await desk.socket.next())["type"] == PEER_LEFT
    assert not desk.task.done()
    desk.socket.hang_up()
    await desk.ended()


async def test_shutdown_closes_with_1012(hub: SqlHub) -> None:
    live = gateway(hub)
    conns = [Connection(live, DESKTOP), Connection(live, PHONE)]
    for conn in conns:
        await conn.hello()
    await live.shutdown()
    for conn in conns:
        assert await conn.ended() == CloseCode.SERVICE_RESTART
        assert conn.socket.closed is not None and conn.socket.closed[0] == 1012
    late = FakeSocket()
    assert await live.serve(late, DESKTOP) == 1012 and late.closed is not None


class DownHub(SqlHub):
    async def acked(self, pairing_id: str, device_id: str) -> int:
        raise HubUnavailable("down")


async def test_an_unavailable_hub_closes_with_1013_after_an_error_frame(hub: SqlHub, tmp_path: Path) -> None:
    engine = create_database(f"sqlite+aiosqlite:///{tmp_path / 'down.db'}")
    live = SyncGateway(DownHub(session_factory(engine)))
    socket = FakeSocket()
    try:
        assert await live.serve(socket, DESKTOP) == CloseCode.TRY_AGAIN_LATER
        error = await socket.next()
        assert (error["id"], error["type"], error["data"]["code"]) == (None, "error", "hub_unavailable")
        assert error["data"]["retry_after"] > 0
        assert socket.closed == (1013, "hub_unavailable")
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class DiskFull:
    code: str = "storage_full"
    detail: str = "no room"
    retry_after: int = 30


class FailingAcks(SqlHub):
    """Acks fail with whatever ``failure`` is (a vendor error the hub did not translate, or a bug)."""

    failure: Exception = OSError(28, "No space left on device")

    async def ack(self, pairing_id: str, device_id: str, message_id: int) -> None:
        raise self.failure


@pytest.mark.parametrize(
    ("failure", "code", "frame"),
    [(OSError(28, "No space left on device"), 1013, "storage_full"), (KeyError("a bug"), 1011, None)],
)
async def test_the_injected_classifier_tells_faults_from_bugs(
    tmp_path: Path, failure: Exception, code: int, frame: str | None
) -> None:
    engine = create_database(f"sqlite+aiosqlite:///{tmp_path / 'acks.db'}")
    await create_schema(engine)
    hub = FailingAcks(session_factory(engine))
    hub.failure = failure
    live = SyncGateway(hub, faults=lambda exc: DiskFull() if isinstance(exc, OSError) else None)
    try:
        await hub.publish("pr_1", "t", {})
        conn = Connection(live, DESKTOP)
        await conn.hello()
        await conn.socket.next()
        conn.socket.send(type="ack", id=1)
        assert await conn.ended() == code
        if frame is not None:
            error = await conn.socket.next()
            assert error == {"id": None, "type": "error", "data": {"code": frame, "detail": "no room", "retry_after": 30}}
            assert conn.socket.closed == (1013, frame)
        else:
            assert conn.socket.closed == (1011, "server error")
    finally:
        await engine.dispose()


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyError("a bug")])
async def test_a_snapshot_source_down_closes_with_1013_while_a_buggy_one_is_left_out(
    hub: SqlHub, failure: Exception
) -> None:
    live = SyncGateway(hub, faults=lambda exc: DiskFull() if isinstance(exc, OSError) else None)

    async def assets(pairing_id: str) -> dict[str, Any]:
        raise failure

    live.add_snapshot_source("assets", assets)
    for i in range(8):  # the hub keeps 5: a new device needs a resync
        await hub.publish("pr_1", "t", {"n": i})
    conn = Connection(live, PHONE)
    await conn.hello()
    frame = await conn.socket.next()
    if isinstance(failure, OSError):  # no resync that lacks the assets: the client comes back for all of it
        assert (frame["type"], frame["data"]["code"]) == ("error", "storage_full")
        assert await conn.ended() == 1013
    else:
        assert frame["type"] == "resync" and "assets" not in frame["data"]["snapshot"]
        conn.socket.hang_up()
        assert await conn.ended() == 1000


async def test_session_states(hub: SqlHub) -> None:
    from sync.hub import SyncSession

    socket = FakeSocket()
    session = SyncSession(socket, DESKTOP, hub)
    assert session.state is SessionState.CONNECTING
    task = asyncio.create_task(session.run())
    await socket.next()
    assert session.state is SessionState.OPEN
    session.close(1000, "bye")
    session.close(4000, "ignored: already closing")
    assert await task == 1000
    assert session.state is SessionState.CLOSED and socket.closed == (1000, "bye")
    with pytest.raises(ValueError):
        SessionConfig(heartbeat_s=10, idle_timeout_s=5)
