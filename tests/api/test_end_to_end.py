"""The whole product over real HTTP and real websockets: uvicorn on a loopback port, the
real u2netp model, the real locator.

pair → desktop connects → phone captures → desktop gets ``asset.created`` and fetches the
PNG → desktop uploads its screen → phone pastes with a (simulated) photo of that screen →
desktop gets ``asset.placed`` within a few pixels of the true point. Then: the desktop is
offline during a capture and the server restarts → on resume nothing is lost; and the
refusals: a reused code, a bad token, another pairing's asset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from benchmarks.sync.scene import SHOT, desktop_scene, object_photo
from tests.conftest import LiveServer, assert_problem, make_settings

WAIT = 30.0  # seconds for any one server message (CPU inference on a small machine)


# ---------------------------------------------------------------------------
# A real server
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def serving(data_dir: Path, model: Any) -> Iterator[LiveServer]:
    with LiveServer(make_settings(data_dir, workers=2), model) as server:
        yield server


@dataclass
class Desk:
    """The desktop companion's live channel: remembers the last id it saw and acks it."""

    ws: ClientConnection
    hello: dict[str, Any]
    last_id: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, server: LiveServer, token: str, resume: int | None = None) -> AsyncIterator[Desk]:
        async with connect(f"{server.ws_base}/v1/sync?token={token}", open_timeout=WAIT) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert hello["type"] == "hello", hello
            desk = cls(ws, hello)
            if resume is not None:
                await ws.send(json.dumps({"type": "resume", "last_id": resume}))
                desk.last_id = resume
            yield desk

    async def next(self, *types: str) -> dict[str, Any]:
        """The next logged message of one of ``types`` (others are recorded and acked)."""
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT))
            if frame["id"] is None:  # control: hello, ping, pong, error
                if frame["type"] == "ping":
                    await self.ws.send(json.dumps({"type": "pong"}))
                continue
            assert frame["id"] > self.last_id, (frame, self.last_id)  # increasing ids
            self.last_id = frame["id"]
            self.seen.append(frame)
            await self.ws.send(json.dumps({"type": "ack", "id": frame["id"]}))
            if frame["type"] in types:
                return frame


@pytest.fixture(scope="module")
def scene() -> tuple[bytes, bytes, tuple[float, float]]:
    """The companion's screen picture (PNG), a phone photo of it (JPEG), the true point under the photo's centre."""
    return desktop_scene()


async def open_pairing(http: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    opened = await http.post("/v1/pairings")
    assert opened.status_code == 201, opened.text
    claimed = await http.post("/v1/pairings/claim", json={"code": opened.json()["code"]})
    assert claimed.status_code == 201, claimed.text
    return opened.json(), claimed.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------


async def test_pair_capture_paste_resume_and_refusals(tmp_path: Path, u2netp_model, scene) -> None:
    screen_png, view_jpeg, (tx, ty) = scene
    data_dir = tmp_path / "data"

    with serving(data_dir, u2netp_model) as server:
        async with httpx.AsyncClient(base_url=server.base, timeout=WAIT) as http:
            # -- pair; the desktop connects ---------------------------------------------------
            opened = await http.post("/v1/pairings")
            assert opened.status_code == 201, opened.text
            pairing_id, code, desktop_token = (opened.json()[k] for k in ("pairing_id", "code", "desktop_token"))
            async with Desk.connect(server, desktop_token) as desk:
                assert desk.hello["data"]["role"] == "desktop"
                claimed = await http.post("/v1/pairings/claim", json={"code": code})
                assert claimed.status_code == 201, claimed.text
                phone_token = claimed.json()["phone_token"]
                assert claimed.json()["pairing_id"] == pairing_id
                await desk.next("peer.joined")

                # -- the cut ------------------------------------------------------------------
                photo = object_photo()
                captured = await http.post(
                    "/v1/captures", headers=bearer(phone_token), files={"image_file": ("mug.jpg", photo, "image/jpeg")}
                )
                assert captured.status_code == 201, captured.text
                asset = captured.json()
                created = await desk.next("asset.created")
                assert created["data"] == asset

                fetched = await http.get(created["data"]["url"])  # the signed URL alone
                assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
                rgba = cv2.imdecode(np.frombuffer(fetched.content, np.uint8), cv2.IMREAD_UNCHANGED)
                assert rgba.shape == (asset["height"], asset["width"], 4)
                alpha = rgba[:, :, 3]
                box = asset["bbox"]
                # the mug (300x410 px body) was cut out: opaque in its middle, clear at the crop's corners
                assert 250 <= box["width"] <= 520 and 330 <= box["height"] <= 560, box
                mid = alpha[box["top"] + box["height"] // 2 - 20 : box["top"] + box["height"] // 2 + 20,
                            box["left"] + box["width"] // 3 : box["left"] + box["width"] // 3 + 40]
                assert mid.mean() > 200
                assert alpha[:3, :3].max() < 30 and alpha[-3:, :3].max() < 30

                # -- the screen and the paste --------------------------------------------------
                put = await http.put(
                    f"/v1/pairings/{pairing_id}/screen", content=screen_png,
                    headers={**bearer(desktop_token), "Content-Type": "image/png"},
                )
                assert put.status_code == 200, put.text
                assert put.json()["locatable"] is True

                pasted = await http.post(
                    f"/v1/captures/{asset['asset_id']}/paste", headers=bearer(phone_token),
                    files={"view": ("view.jpg", view_jpeg, "image/jpeg")},
                )
                assert pasted.status_code == 200, pasted.text
                placed = await desk.next("asset.placed")
                data = placed["data"]
                assert data["asset_id"] == asset["asset_id"]
                assert abs(data["x"] - tx) <= 3 and abs(data["y"] - ty) <= 3, (data, (tx, ty))
                assert data["scale"] > 0 and abs(abs(data["rotation_deg"]) - abs(SHOT.roll_deg)) < 6, data
                assert pasted.json()["x"] == data["x"] and pasted.json()["y"] == data["y"]
                last_seen = desk.last_id

            # -- the desktop is offline: a capture happens, the server restarts ------------------
            offline = await http.post(
                "/v1/captures", headers=bearer(phone_token), files={"image_file": ("mug.jpg", photo, "image/jpeg")}
            )
            assert offline.status_code == 201, offline.text
    missed = offline.json()

    with serving(data_dir, u2netp_model) as server:  # same data dir: a restarted server
        async with httpx.AsyncClient(base_url=server.base, timeout=WAIT) as http:
            async with Desk.connect(server, desktop_token, resume=last_seen) as desk:
                resumed = await desk.next("asset.created")
                assert resumed["data"] == missed  # nothing lost
                assert resumed["id"] > last_seen
                # signing key and bytes survived the restart (the test server's port did not: same path and query)
                signed = httpx.URL(resumed["data"]["url"])
                again = await http.get(signed.raw_path.decode())
                assert again.status_code == 200 and again.headers["content-type"] == "image/png"

                # the screen picture survived too: paste the missed asset without a new upload
                pasted = await http.post(
                    f"/v1/captures/{missed['asset_id']}/paste", headers=bearer(phone_token),
                    files={"view": ("view.jpg", view_jpeg, "image/jpeg")},
                )
                assert pasted.status_code == 200, pasted.text
                placed = await desk.next("asset.placed")
                assert abs(placed["data"]["x"] - tx) <= 3 and abs(placed["data"]["y"] - ty) <= 3

            # -- refusals ------------------------------------------------------------------------
            reused = await http.post("/v1/pairings/claim", json={"code": code})
            assert reused.status_code in (400, 403, 404, 409, 410), reused.text
            assert_problem(reused, reused.status_code)

            assert_problem(
                await http.post("/v1/captures", headers=bearer("not-a-real-token"),
                                files={"image_file": ("m.jpg", photo, "image/jpeg")}),
                403, "invalid_token",
            )
            assert_problem(await http.get(f"/v1/assets/{missed['asset_id']}", params={"token": "forged"}), 403, "invalid_token")
            assert_problem(await http.get(f"/v1/assets/{missed['asset_id']}"), 401)
            with pytest.raises(ConnectionClosed) as closed:
                async with connect(f"{server.ws_base}/v1/sync?token=forged", open_timeout=WAIT) as ws:
                    await asyncio.wait_for(ws.recv(), WAIT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403  # 4000 + 403: do not reconnect

            other_opened, other_claimed = await open_pairing(http)
            stranger_desk, stranger_phone = other_opened["desktop_token"], other_claimed["phone_token"]
            assert_problem(
                await http.get(f"/v1/assets/{missed['asset_id']}", headers=bearer(stranger_desk)), 404, "asset_not_found"
            )
            assert_problem(
                await http.post(
                    f"/v1/captures/{missed['asset_id']}/paste", headers=bearer(stranger_phone),
                    files={"view": ("view.jpg", view_jpeg, "image/jpeg")},
                ),
                404, "asset_not_found",
            )
            assert_problem(
                await http.put(
                    f"/v1/pairings/{pairing_id}/screen", content=screen_png,
                    headers={**bearer(stranger_desk), "Content-Type": "image/png"},
                ),
                404, "pairing_not_found",
            )
