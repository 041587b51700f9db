"""``WS /v1/sync`` under bad luck, on a live server: a burst of connects, a locked database, Redis gone.

A fault of a backing service closes a socket with 1013 after an ``error`` frame
with a stable code (never 1011, never a drop without a close frame), and a
client that reconnects and resumes once the fault clears misses nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sync.hub import HubUnavailable
from sync.hub.testing import RedisServer
from tests.api.test_sync_ws import Server, frame, pair, serve, sync_socket
from tests.conftest import make_settings, sqlite_locked


async def closed_after_error(ws: ClientConnection, timeout: float = 10.0) -> tuple[dict[str, Any], int, str]:
    """The ``error`` frame the server sent last, then its close code and reason (a close frame is required)."""
    error: dict[str, Any] = {}
    try:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if message["type"] == "error":
                error = message
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the server dropped the socket without a close frame"
        return error, closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("unreachable")


async def replay_after(server: Server, token: str, last_id: int, until: int) -> list[int]:
    """Reconnect, resume after ``last_id``, and collect message ids up to ``until``."""
    seen: list[int] = []
    async with sync_socket(server, token) as ws:
        assert (await frame(ws))["type"] == "hello"
        await ws.send(json.dumps({"type": "resume", "last_id": last_id}))
        while not seen or seen[-1] < until:
            message = await frame(ws)
            if message["id"] is not None and message["id"] > last_id:
                seen.append(message["id"])
    return sorted(set(seen))


# -- a burst of connects on the embedded default ---------------------------------------------------------


async def test_300_sockets_opening_at_once_all_connect(tmp_path: Path) -> None:
    """SQLite serves one writer at a time: the hub's reads take turns instead of racing past the busy timeout."""
    async with serve(make_settings(tmp_path / "data")) as server:
        opened, claimed = await pair(server)
        tokens = [opened["desktop_token"], claimed["phone_token"]]
        outcomes: collections.Counter[str] = collections.Counter()

        async def one(token: str) -> None:
            try:
                async with connect(f"{server.ws}/v1/sync?token={token}", proxy=None, open_timeout=60) as ws:
                    hello = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    replayed = await frame(ws, timeout=60)
                    outcomes[f"{hello['type']} then {replayed['type']}"] += 1
            except ConnectionClosed as closed:
                outcomes[f"closed {closed.rcvd.code if closed.rcvd else 'without a frame'}"] += 1

        await asyncio.gather(*(one(tokens[i % 2]) for i in range(300)))
        assert outcomes == {"hello then peer.joined": 300}


# -- the database locked ---------------------------------------------------------------------------------


async def test_a_locked_database_closes_with_1013_and_a_resume_afterwards_loses_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", database_busy_timeout_s=0.3)
    database = Path(settings.resolved_database_url.split("///", 1)[1])
    async with serve(settings) as server:
        opened, _ = await pair(server)
        pairing_id, token = opened["pairing_id"], opened["desktop_token"]
        hub = server.services.hub
        first = await hub.publish(pairing_id, "asset.created", {"asset_id": "ast_1"})
        async with sync_socket(server, token) as desk:
            assert (await frame(desk))["type"] == "hello"
            assert [(await frame(desk))["id"] for _ in range(2)] == [first - 1, first]
            with sqlite_locked(database):
                await desk.send(json.dumps({"type": "ack", "id": first}))  # needs the database: cannot have it
                error, code, reason = await closed_after_error(desk)
                assert (code, reason) == (1013, "hub_unavailable")
                assert error["id"] is None and error["data"]["code"] == "hub_unavailable"
                assert error["data"]["retry_after"] > 0
                # a new socket cannot even be authenticated: 1013 too, never 1011
                async with sync_socket(server, token) as late:
                    _, code, reason = await closed_after_error(late)
                    assert (code, reason) == (1013, "database_unavailable")
        later = await hub.publish(pairing_id, "asset.created", {"asset_id": "ast_2"})
        # back after the fault: everything after what the client had, nothing missing
        assert await replay_after(server, token, first - 1, later) == [first, later]


async def publish_when_back(hub: Any, pairing_id: str) -> int:
    """Publish as soon as the app's Redis client has reconnected (its pooled connections died with the server)."""
    for _ in range(50):
        with contextlib.suppress(HubUnavailable):
            return int(await hub.publish(pairing_id, "asset.created", {"asset_id": "ast_2"}))
        await asyncio.sleep(0.1)
    raise AssertionError("the hub did not reconnect to Redis")


# -- Redis gone and back -----------------------------------------------------------------------------------


async def test_redis_stopped_closes_with_1013_and_a_resume_after_its_restart_loses_nothing(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", appendonly=True)
    url = redis.start()
    try:
        async with serve(make_settings(tmp_path / "data", redis_url=url)) as server:
            opened, _ = await pair(server)
            pairing_id, token = opened["pairing_id"], opened["desktop_token"]
            hub = server.services.hub
            async with sync_socket(server, token) as desk:
                assert (await frame(desk))["type"] == "hello"
                joined = (await frame(desk))["id"]
                first = await hub.publish(pairing_id, "asset.created", {"asset_id": "ast_1"})
                assert (await frame(desk))["id"] == first
                redis.stop()
                error, code, reason = await closed_after_error(desk)
                assert (code, reason, error["data"]["code"]) == (1013, "hub_unavailable", "hub_unavailable")
            redis.start(port=redis.port)  # the same data (append-only file)
            later = await publish_when_back(hub, pairing_id)
            assert later == first + 1  # the stream survived: ids carry on
            assert await replay_after(server, token, joined, later) == [first, later]
    finally:
        redis.stop()
