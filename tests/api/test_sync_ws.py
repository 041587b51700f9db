"""``WS /v1/sync``: refusals, live delivery, resume, restarts and shutdown, and two replicas sharing Redis.

Most tests run a real uvicorn on loopback and talk to it with the ``websockets``
client; the refusals also run through Starlette's TestClient.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from sync.hub.testing import RedisServer
from tests.conftest import disk_model, make_settings

# -- a real server ---------------------------------------------------------------------------------------


@dataclass
class Server:
    app: Any
    server: uvicorn.Server
    http: str
    ws: str

    @property
    def services(self) -> Any:
        return self.app.state.services


@contextlib.asynccontextmanager
async def serve(settings: Any) -> AsyncIterator[Server]:
    """The app under uvicorn on a free loopback port, in this event loop."""
    app = create_app(settings, model=disk_model())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            await task  # raises what stopped it
            raise RuntimeError("uvicorn did not start")
        yield Server(app, server, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
        sock.close()


def client(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.http, trust_env=False, timeout=10)


async def pair(server: Server) -> tuple[dict[str, Any], dict[str, Any]]:
    async with client(server) as http:
        opened = (await http.post("/v1/pairings")).json()
        claimed = (await http.post("/v1/pairings/claim", json={"code": opened["code"]})).json()
    return opened, claimed


@contextlib.asynccontextmanager
async def sync_socket(server: Server, token: str) -> AsyncIterator[ClientConnection]:
    async with connect(f"{server.ws}/v1/sync?token={token}", proxy=None, open_timeout=5) as ws:
        yield ws


PRESENCE = ("peer.online", "peer.offline")


async def frame(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame that is neither a heartbeat nor presence (control frames that come when they like)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["type"] != "ping" and message["type"] not in PRESENCE:
            return message


async def presence(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next presence frame (others skipped)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["type"] in PRESENCE:
            assert message["id"] is None, message  # control: not in the log, never replayed
            return message


async def close_code(ws: ClientConnection, timeout: float = 5.0) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    assert closed.value.rcvd is not None, "the server closed without a close frame"
    return closed.value.rcvd.code


# -- refusals ---------------------------------------------------------------------------------------------


async def test_refused_tokens_get_close_codes_browsers_can_read(tmp_path: Path) -> None:
    async with serve(make_settings(tmp_path / "data")) as server, client(server) as http:
        opened = (await http.post("/v1/pairings")).json()
        for token, code in [("", 4401), ("arcd_wrong", 4403)]:
            async with sync_socket(server, token) as ws:
                assert await close_code(ws) == code
        await http.delete(
            f"/v1/pairings/{opened['pairing_id']}", headers={"Authorization": f"Bearer {opened['desktop_token']}"}
        )
        async with sync_socket(server, opened["desktop_token"]) as ws:
            assert await close_code(ws) == 4410
            assert ws.close_reason == "pairing_closed"


async def test_the_token_may_come_as_a_bearer_header(tmp_path: Path) -> None:
    async with serve(make_settings(tmp_path / "data")) as server:
        opened, claimed = await pair(server)
        headers = {"Authorization": f"Bearer {claimed['phone_token']}"}
        async with connect(f"{server.ws}/v1/sync", proxy=None, additional_headers=headers) as ws:
            hello = await frame(ws)
            assert (hello["type"], hello["data"]["role"], hello["data"]["pairing_id"]) == (
                "hello", "phone", opened["pairing_id"]
            )


# -- real sockets ------------------------------------------------------------------------------------------


async def test_live_delivery_ack_and_resume_over_a_real_socket(tmp_path: Path) -> None:
    async with serve(make_settings(tmp_path / "data")) as server, client(server) as http:
        opened = (await http.post("/v1/pairings")).json()
        async with sync_socket(server, opened["desktop_token"]) as desk:
            assert (await frame(desk))["type"] == "hello"
            claimed = (await http.post("/v1/pairings/claim", json={"code": opened["code"]})).json()
            assert (await frame(desk))["type"] == "peer.joined"
            hub = server.services.hub
            await hub.publish(opened["pairing_id"], "asset.created", {"asset_id": "ast_1"})
            created = await frame(desk)
            assert created == {"id": 2, "type": "asset.created", "data": {"asset_id": "ast_1"}}
            await desk.send(json.dumps({"type": "ack", "id": 2}))
            await desk.send(json.dumps({"type": "ping"}))
            assert (await frame(desk))["type"] == "pong"

        # offline: two more, then back with resume
        await hub.publish(opened["pairing_id"], "asset.created", {"asset_id": "ast_2"})
        await hub.publish(opened["pairing_id"], "asset.placed", {"asset_id": "ast_2", "x": 10, "y": 20})
        async with sync_socket(server, opened["desktop_token"]) as desk:
            hello = await frame(desk)
            assert hello["data"]["acked_id"] == 2 and hello["data"]["last_id"] == 4
            # delivery starts after the ack (3, 4); resume asks for more (2, 3, 4), duplicates allowed
            await desk.send(json.dumps({"type": "resume", "last_id": 1}))
            seen: list[tuple[int, str]] = []
            while not seen or seen[-1][0] != 4 or 2 not in [i for i, _ in seen]:
                message = await frame(desk)
                seen.append((message["id"], message["type"]))
            assert seen[-3:] == [(2, "asset.created"), (3, "asset.created"), (4, "asset.placed")]
        # the phone has its own channel on the same pairing
        async with sync_socket(server, claimed["phone_token"]) as phone:
            assert (await frame(phone))["data"]["role"] == "phone"
            assert [(await frame(phone))["id"] for _ in range(4)] == [1, 2, 3, 4]


async def test_a_restart_loses_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    async with serve(settings) as server:
        opened, _ = await pair(server)  # the desktop is offline throughout
        await server.services.hub.publish(opened["pairing_id"], "asset.created", {"asset_id": "ast_1"})
    # a new process over the same SQLite file
    async with serve(settings) as restarted, sync_socket(restarted, opened["desktop_token"]) as desk:
        assert (await frame(desk))["data"]["last_id"] == 2
        assert [(await frame(desk))["type"] for _ in range(2)] == ["peer.joined", "asset.created"]
        assert await restarted.services.hub.publish(opened["pairing_id"], "asset.created", {}) == 3
        assert (await frame(desk))["id"] == 3


async def test_shutdown_closes_sockets_with_1012(tmp_path: Path) -> None:
    async with serve(make_settings(tmp_path / "data")) as server:
        opened, _ = await pair(server)
        async with sync_socket(server, opened["desktop_token"]) as desk:
            await frame(desk)
            server.server.should_exit = True
            assert await close_code(desk, timeout=10) == 1012


# -- two replicas, one Redis -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with RedisServer(tmp_path_factory.mktemp("redis")) as url:
        yield url


async def test_two_replicas_share_redis(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path / "data", redis_url=redis_url)  # one database, one Redis
    async with serve(settings) as a, serve(settings) as b:
        assert type(a.services.hub).__name__ == "RedisHub"
        async with client(a) as http_a, client(b) as http_b:
            opened = (await http_a.post("/v1/pairings")).json()
            async with sync_socket(b, opened["desktop_token"]) as desk:  # the desktop is on B
                assert (await frame(desk))["type"] == "hello"
                claimed = (await http_a.post("/v1/pairings/claim", json={"code": opened["code"]})).json()
                joined = await frame(desk)
                assert (joined["type"], joined["data"]["device_id"]) == ("peer.joined", claimed["device_id"])

                async with sync_socket(a, claimed["phone_token"]) as phone:  # the phone is on A
                    assert (await frame(phone))["type"] == "hello"
                    assert (await frame(phone))["id"] == joined["id"]
                    # ids start from Redis's clock (sync.hub.redis_streams), one apart
                    first = joined["id"]
                    await a.services.hub.publish(opened["pairing_id"], "asset.created", {"asset_id": "ast_1"})
                    assert (await frame(desk))["data"] == {"asset_id": "ast_1"}
                    assert (await frame(phone))["id"] == first + 1
                    await desk.send(json.dumps({"type": "ack", "id": first + 1}))
                    await desk.send(json.dumps({"type": "ping"}))
                    assert (await frame(desk))["type"] == "pong"

                    # the desktop drops off B; two more land while it is away
                    await desk.close()
                    await a.services.hub.publish(opened["pairing_id"], "asset.created", {"asset_id": "ast_2"})
                    await b.services.hub.publish(opened["pairing_id"], "asset.placed", {"asset_id": "ast_2"})

                    async with sync_socket(a, opened["desktop_token"]) as desk_again:  # and comes back on A
                        hello = await frame(desk_again)
                        assert (hello["data"]["acked_id"], hello["data"]["last_id"]) == (first + 1, first + 3)
                        await desk_again.send(json.dumps({"type": "resume", "last_id": first + 1}))
                        seen = {(await frame(desk_again))["id"] for _ in range(2)}
                        assert seen == {first + 2, first + 3}

                        # unpaired on B: the phone's socket on A is told and closed
                        gone = await http_b.delete(
                            f"/v1/pairings/{opened['pairing_id']}",
                            headers={"Authorization": f"Bearer {opened['desktop_token']}"},
                        )
                        assert gone.status_code == 204
                        while (await frame(phone))["type"] != "pairing.closed":
                            pass
                        assert await close_code(phone) == 4410
                        assert await close_code(desk_again) == 4410


# -- presence: is the other device connected right now? ------------------------------------------------------


def peer(device_id: str, role: str) -> dict[str, str]:
    return {"device_id": device_id, "role": role}


async def test_presence_in_one_process(tmp_path: Path) -> None:
    async with serve(make_settings(tmp_path / "data", hub_presence_grace_s=0.1)) as server:
        opened, claimed = await pair(server)
        desktop, phone = peer(opened["device_id"], "desktop"), peer(claimed["device_id"], "phone")
        async with sync_socket(server, opened["desktop_token"]) as desk:
            assert (await frame(desk))["data"]["peers"] == []
            async with sync_socket(server, claimed["phone_token"]) as tab_1:
                assert (await frame(tab_1))["data"]["peers"] == [desktop]  # the phone learns at once
                assert await presence(desk) == {"id": None, "type": "peer.online", "data": phone}
                async with sync_socket(server, claimed["phone_token"]) as tab_2:  # a second tab of the phone
                    await frame(tab_2)
                    await tab_1.close()
                    await asyncio.sleep(0.5)  # well past the grace: the second tab keeps the phone online
                    async with sync_socket(server, opened["desktop_token"]) as desk_2:
                        assert (await frame(desk_2))["data"]["peers"] == [phone]
                assert await presence(desk) == {"id": None, "type": "peer.offline", "data": phone}
            # presence never enters the log: a resume from 0 replays only peer.joined
            await desk.send(json.dumps({"type": "resume", "last_id": 0}))
            assert await frame(desk) == {
                "id": 1, "type": "peer.joined", "data": {"device_id": claimed["device_id"], "role": "phone"}
            }


async def test_presence_across_replicas_without_flapping(tmp_path: Path, redis_server_url: str) -> None:
    settings = make_settings(tmp_path / "data", redis_url=redis_server_url, hub_presence_grace_s=30.0)
    async with serve(settings) as a, serve(settings) as b:
        opened, claimed = await pair(a)
        desktop, phone = peer(opened["device_id"], "desktop"), peer(claimed["device_id"], "phone")
        async with sync_socket(b, opened["desktop_token"]) as desk:  # the desktop on B
            assert (await frame(desk))["data"]["peers"] == []
            async with sync_socket(a, claimed["phone_token"]) as handset:  # the phone on A
                assert (await frame(handset))["data"]["peers"] == [desktop]
                assert await presence(desk) == {"id": None, "type": "peer.online", "data": phone}
            # the phone drops off A and is back on B within the grace: the desktop hears nothing of it
            async with sync_socket(b, claimed["phone_token"]) as handset:
                assert (await frame(handset))["data"]["peers"] == [desktop]
                async with client(a) as http:  # a second phone joins: the next thing the desktop hears
                    code = (
                        await http.post(
                            f"/v1/pairings/{opened['pairing_id']}/code",
                            headers={"Authorization": f"Bearer {opened['desktop_token']}"},
                        )
                    ).json()["code"]
                    second = (await http.post("/v1/pairings/claim", json={"code": code})).json()
                async with sync_socket(a, second["phone_token"]) as other:
                    await frame(other)
                    assert await presence(desk) == {
                        "id": None, "type": "peer.online", "data": peer(second["device_id"], "phone")
                    }
                    # unpaired: the phone is gone for good, no grace
                    async with client(a) as http:
                        await http.delete(
                            f"/v1/pairings/{opened['pairing_id']}",
                            headers={"Authorization": f"Bearer {second['phone_token']}"},
                        )
                    assert await presence(desk) == {
                        "id": None, "type": "peer.offline", "data": peer(second["device_id"], "phone")
                    }
