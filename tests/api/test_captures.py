"""The capture, screen, paste and asset routes (SPEC §6), over the ASGI app.

The clipper runs an in-memory disk model (fast, predictable); the locator is the real
one on simulated phone photos. The end-to-end test over real HTTP, websockets and the
real model is test_end_to_end.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from benchmarks.locate.camera import Shot, render, truth_point
from benchmarks.locate.screens import make_screen
from sync.assets import UrlSigner, load_signing_key
from tests.conftest import RunningApp, assert_problem, disk_model, jpeg

SHOT = Shot(
    view_w=1440, view_h=1080, hfov_deg=65, screen_cm=30, target=(500.0, 300.0), distance_cm=32,
    yaw_deg=-10, pitch_deg=8, roll_deg=-5, defocus=0.8, motion_px=0, moire=0.1, glare=0, reflection=0,
    gain=1.0, gamma=1.0, noise=2, jpeg_q=90, seed=7,
)


def png(pixels: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", pixels)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def scene() -> tuple[bytes, bytes, tuple[float, float]]:
    screen = make_screen("desktop", 11)
    view, H = render(screen, SHOT)
    ok, buf = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return png(screen), buf.tobytes(), truth_point(H, SHOT.view_w, SHOT.view_h)


@dataclass
class Pair:
    pairing_id: str
    desktop: str
    phone: str

    @property
    def desktop_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.desktop}"}

    @property
    def phone_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.phone}"}


async def pair(api: RunningApp) -> Pair:
    pairings = api.services.pairings  # type: ignore[attr-defined]
    opened = await pairings.open("127.0.0.1")
    claimed = await pairings.claim(opened.code, "127.0.0.1")
    return Pair(opened.pairing_id, opened.desktop_token, claimed.phone_token)


async def hub_messages(api: RunningApp, pairing_id: str, *types: str, after: int = 0, wait: float = 5.0) -> list[dict[str, Any]]:
    """The pairing's messages of ``types`` so far (waiting up to ``wait`` s for at least one)."""
    hub = api.services.hub  # type: ignore[attr-defined]
    last = await hub.last_id(pairing_id)
    found: list[dict[str, Any]] = []
    if last <= after:
        return found

    async def collect() -> None:
        async with contextlib.aclosing(hub.follow(pairing_id, after)) as stream:
            async for message in stream:
                if message.type in types:
                    found.append(message.to_json())
                if message.id >= last:
                    return

    await asyncio.wait_for(collect(), wait)
    return found


@pytest.fixture
async def api(app_factory) -> AsyncIterator[RunningApp]:
    async with app_factory(disk_model()) as running:
        yield running


async def capture(api: RunningApp, who: Pair, image: bytes | None = None, **params: str) -> httpx.Response:
    return await api.client.post(
        "/v1/captures", headers=who.phone_auth, params=params,
        files={"image_file": ("photo.jpg", image or jpeg(640, 480), "image/jpeg")},
    )


# ---------------------------------------------------------------------------
# POST /v1/captures
# ---------------------------------------------------------------------------


async def test_capture_created_announced_and_readable(api: RunningApp) -> None:
    who = await pair(api)
    response = await capture(api, who)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"asset_id", "url", "width", "height", "bbox"}
    assert response.headers["location"] == f"/v1/assets/{body['asset_id']}"
    assert body["url"].startswith(f"http://testserver/v1/assets/{body['asset_id']}?expires=")
    box = body["bbox"]
    assert set(box) == {"left", "top", "width", "height"}
    assert 0 < box["width"] <= body["width"] and 0 < box["height"] <= body["height"]

    created = await hub_messages(api, who.pairing_id, "asset.created")
    assert [m["data"] for m in created] == [body]

    # the signed URL, alone
    signed = await api.client.get(body["url"], headers={"X-Api-Key": ""})
    assert signed.status_code == 200
    assert signed.headers["content-type"] == "image/png"
    pixels = cv2.imdecode(np.frombuffer(signed.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert pixels.shape == (body["height"], body["width"], 4)
    # either device's token, as a header or a query parameter
    path = f"/v1/assets/{body['asset_id']}"
    for request in (
        {"headers": who.desktop_auth}, {"headers": who.phone_auth}, {"params": {"token": who.desktop}},
    ):
        again = await api.client.get(path, **request)
        assert again.status_code == 200 and again.content == signed.content


async def test_capture_needs_the_phone(api: RunningApp) -> None:
    who = await pair(api)
    no_token = await api.client.post("/v1/captures", files={"image_file": ("p.jpg", jpeg(), "image/jpeg")})
    assert_problem(no_token, 401)
    as_desktop = await api.client.post(
        "/v1/captures", headers=who.desktop_auth, files={"image_file": ("p.jpg", jpeg(), "image/jpeg")}
    )
    assert_problem(as_desktop, 403)
    forged = await api.client.post(
        "/v1/captures", headers={"Authorization": "Bearer not-a-token"}, files={"image_file": ("p.jpg", jpeg(), "image/jpeg")}
    )
    assert forged.status_code in (401, 403)
    assert await hub_messages(api, who.pairing_id, "asset.created") == []


async def test_bad_captures_store_and_announce_nothing(api: RunningApp) -> None:
    who = await pair(api)
    assert_problem(await capture(api, who, b"definitely not an image"), 415, "unsupported_media_type")
    assert_problem(await capture(api, who, jpeg()[:200]), 400)
    assert_problem(await capture(api, who, size="gigantic"), 422, "invalid_option")
    missing = await api.client.post("/v1/captures", headers=who.phone_auth, files={"other": ("p.jpg", jpeg(), "image/jpeg")})
    assert_problem(missing, 422, "missing_image_file")
    assert await hub_messages(api, who.pairing_id, "asset.created") == []
    assert not (api.services.settings.data_dir / "assets").exists()  # type: ignore[attr-defined]


async def test_capture_options_and_public_url(app_factory) -> None:
    async with app_factory(disk_model(), public_url="https://arclip.example/") as api:
        who = await pair(api)
        full = (await capture(api, who, crop="false")).json()
        assert (full["width"], full["height"]) == (640, 480)
        assert full["url"].startswith(f"https://arclip.example/v1/assets/{full['asset_id']}?")
        cropped = (await capture(api, who)).json()
        assert cropped["width"] < 640 and cropped["height"] < 480


# ---------------------------------------------------------------------------
# GET /v1/assets/{id}: who may read
# ---------------------------------------------------------------------------


async def test_assets_are_private_to_their_pairing(api: RunningApp) -> None:
    mine, theirs = await pair(api), await pair(api)
    body = (await capture(api, mine)).json()
    path = f"/v1/assets/{body['asset_id']}"
    assert_problem(await api.client.get(path), 401)
    assert_problem(await api.client.get(path, headers=theirs.desktop_auth), 404, "asset_not_found")
    assert_problem(await api.client.get(path, params={"token": theirs.phone}), 404, "asset_not_found")
    assert (await api.client.get(path, headers={"Authorization": "Bearer nope"})).status_code in (401, 403)
    assert_problem(await api.client.get("/v1/assets/ast_nothing", headers=mine.desktop_auth), 404, "asset_not_found")


async def test_signed_urls_are_exact_and_expire(api: RunningApp) -> None:
    who = await pair(api)
    body = (await capture(api, who)).json()
    other = (await capture(api, who)).json()
    path = f"/v1/assets/{body['asset_id']}"
    query = dict(p.split("=", 1) for p in body["url"].split("?", 1)[1].split("&"))
    assert_problem(await api.client.get(path, params={**query, "sig": query["sig"][:-3] + "abc"}), 403, "bad_signature")
    assert_problem(await api.client.get(path, params={**query, "expires": int(query["expires"]) + 60}), 403, "bad_signature")
    assert_problem(await api.client.get(path, params={"expires": query["expires"]}), 403, "bad_signature")
    other_path = f"/v1/assets/{other['asset_id']}"
    assert_problem(await api.client.get(other_path, params=query), 403, "bad_signature")
    key = load_signing_key(None, api.services.settings.data_dir)  # type: ignore[attr-defined]
    stale = UrlSigner(key).sign(body["asset_id"], ttl=-5)
    assert_problem(await api.client.get(path, params={"expires": stale.expires, "sig": stale.sig}), 403, "url_expired")


async def test_assets_go_with_their_pairing(api: RunningApp) -> None:
    who, bystander = await pair(api), await pair(api)
    body = (await capture(api, who)).json()
    kept = (await capture(api, bystander)).json()
    await api.services.pairings.close(who.pairing_id)  # type: ignore[attr-defined]
    assert_problem(await api.client.get(body["url"]), 404, "asset_not_found")
    data_dir = api.services.settings.data_dir  # type: ignore[attr-defined]
    assert not (data_dir / "assets" / who.pairing_id).exists()
    assert (await api.client.get(kept["url"])).status_code == 200


async def test_retention_sweep_runs_in_the_app(app_factory) -> None:
    async with app_factory(disk_model(), asset_retention_s=1, retention_sweep_s=0.1) as api:
        who = await pair(api)
        body = (await capture(api, who)).json()
        folder = api.services.settings.data_dir / "assets" / who.pairing_id  # type: ignore[attr-defined]
        assert any(folder.iterdir())
        for _ in range(60):
            await asyncio.sleep(0.1)
            if not any(folder.iterdir()):
                break
        assert not any(folder.iterdir())
        assert_problem(await api.client.get(body["url"]), 403, "url_expired")  # capped at the asset's expiry
        path = f"/v1/assets/{body['asset_id']}"
        assert_problem(await api.client.get(path, headers=who.desktop_auth), 404, "asset_not_found")


# ---------------------------------------------------------------------------
# PUT /v1/pairings/{id}/screen
# ---------------------------------------------------------------------------


async def test_put_screen_raw_or_multipart(api: RunningApp, scene) -> None:
    who = await pair(api)
    screen_png = scene[0]
    url = f"/v1/pairings/{who.pairing_id}/screen"
    raw = await api.client.put(url, content=screen_png, headers={**who.desktop_auth, "Content-Type": "image/png"})
    assert raw.status_code == 200, raw.text
    info = raw.json()
    assert (info["width"], info["height"]) == (1366, 768)  # the picture's own pixels
    assert info["pairing_id"] == who.pairing_id and info["locatable"] is True and info["features"] > 100
    multipart = await api.client.put(url, headers=who.desktop_auth, files={"image_file": ("s.png", screen_png, "image/png")})
    assert multipart.status_code == 200 and multipart.json()["version"] != info["version"]


async def test_put_screen_refusals(api: RunningApp, scene) -> None:
    who, other = await pair(api), await pair(api)
    url = f"/v1/pairings/{who.pairing_id}/screen"
    body = {"content": scene[0]}
    assert_problem(await api.client.put(url, headers={**who.phone_auth, "Content-Type": "image/png"}, **body), 403)
    assert_problem(
        await api.client.put(url, headers={**other.desktop_auth, "Content-Type": "image/png"}, **body),
        404, "pairing_not_found",
    )
    assert_problem(await api.client.put(url, headers={"Content-Type": "image/png"}, **body), 401)
    assert_problem(
        await api.client.put(url, headers={**who.desktop_auth, "Content-Type": "image/png"}, content=b"junk"),
        415, "unsupported_media_type",
    )
    tiny = png(np.zeros((8, 8, 3), np.uint8))
    assert_problem(
        await api.client.put(url, headers={**who.desktop_auth, "Content-Type": "image/png"}, content=tiny),
        422, "invalid_screen",
    )
    assert_problem(
        await api.client.put(url + "?fiducials=maybe", headers={**who.desktop_auth, "Content-Type": "image/png"}, **body),
        422, "invalid_parameter",
    )


async def test_blank_canvas_needs_the_pattern(api: RunningApp) -> None:
    who = await pair(api)
    url = f"/v1/pairings/{who.pairing_id}/screen"
    blank = png(np.full((720, 1280, 3), 245, np.uint8))
    headers = {**who.desktop_auth, "Content-Type": "image/png"}
    assert (await api.client.put(url, content=blank, headers=headers)).json()["locatable"] is False
    shown = (await api.client.put(url, content=blank, headers=headers, params={"fiducials": "true"})).json()
    assert shown["locatable"] is True and shown["markers"] >= 2


# ---------------------------------------------------------------------------
# POST /v1/captures/{id}/paste
# ---------------------------------------------------------------------------


async def paste(api: RunningApp, who: Pair, asset_id: str, view: bytes) -> httpx.Response:
    return await api.client.post(
        f"/v1/captures/{asset_id}/paste", headers=who.phone_auth, files={"view": ("view.jpg", view, "image/jpeg")}
    )


async def test_paste_places_the_asset(api: RunningApp, scene) -> None:
    screen_png, view, (tx, ty) = scene
    who = await pair(api)
    asset_id = (await capture(api, who)).json()["asset_id"]
    put = await api.client.put(
        f"/v1/pairings/{who.pairing_id}/screen", content=screen_png, headers={**who.desktop_auth, "Content-Type": "image/png"}
    )
    assert put.status_code == 200
    response = await paste(api, who, asset_id, view)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["found"] is True
    assert abs(body["x"] - tx) < 4 and abs(body["y"] - ty) < 4
    assert body["scale"] > 0 and abs(body["rotation_deg"]) < 45 and 0 < body["confidence"] <= 1
    placed = await hub_messages(api, who.pairing_id, "asset.placed")
    assert [m["data"] for m in placed] == [{k: body[k] for k in ("asset_id", "x", "y", "scale", "rotation_deg", "confidence")}]


async def test_paste_failures_tell_phone_and_desktop(api: RunningApp, scene) -> None:
    view = scene[1]
    who = await pair(api)
    asset_id = (await capture(api, who)).json()["asset_id"]

    no_screen = assert_problem(await paste(api, who, asset_id, view), 409, "no_screen")
    assert no_screen["hint"]

    await api.client.put(
        f"/v1/pairings/{who.pairing_id}/screen", content=png(make_screen("text", 4)),
        headers={**who.desktop_auth, "Content-Type": "image/png"},
    )
    lost = assert_problem(await paste(api, who, asset_id, view), 422, "screen_not_found")
    assert isinstance(lost["hint"], str) and lost["hint"]

    failed = await hub_messages(api, who.pairing_id, "paste.failed")
    assert [m["data"] for m in failed] == [
        {"asset_id": asset_id, "hint": no_screen["hint"]}, {"asset_id": asset_id, "hint": lost["hint"]},
    ]
    assert await hub_messages(api, who.pairing_id, "asset.placed") == []


async def test_paste_refusals(api: RunningApp, scene) -> None:
    who, other = await pair(api), await pair(api)
    asset_id = (await capture(api, who)).json()["asset_id"]
    view = scene[1]
    assert_problem(await paste(api, other, asset_id, view), 404, "asset_not_found")
    assert_problem(await paste(api, who, "ast_missing", view), 404, "asset_not_found")
    as_desktop = await api.client.post(
        f"/v1/captures/{asset_id}/paste", headers=who.desktop_auth, files={"view": ("v.jpg", view, "image/jpeg")}
    )
    assert_problem(as_desktop, 403)
    wrong_field = await api.client.post(
        f"/v1/captures/{asset_id}/paste", headers=who.phone_auth, files={"image_file": ("v.jpg", view, "image/jpeg")}
    )
    assert_problem(wrong_field, 422, "missing_image_file")
    assert await hub_messages(api, who.pairing_id, "paste.failed", "asset.placed") == []


# ---------------------------------------------------------------------------
# Overload and outages
# ---------------------------------------------------------------------------


async def test_storage_outage_is_503_and_announces_nothing(api: RunningApp, monkeypatch: pytest.MonkeyPatch) -> None:
    from sync.storage import StorageUnavailable

    who = await pair(api)

    async def down(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("disk on fire")

    monkeypatch.setattr(api.services.store, "put", down)  # type: ignore[attr-defined]
    body = assert_problem(await capture(api, who), 503, "storage_unavailable")
    assert "fire" not in body["detail"]  # the backend's words stay in the log
    assert await hub_messages(api, who.pairing_id, "asset.created") == []


async def test_paste_overload_is_503_with_retry_after(app_factory, scene) -> None:
    async with app_factory(disk_model(), locate_max_queue=1) as api:
        who = await pair(api)
        asset_id = (await capture(api, who)).json()["asset_id"]
        async with api.services.screens.admission():  # type: ignore[attr-defined]  # the one place is taken
            busy = await paste(api, who, asset_id, scene[1])
        body = assert_problem(busy, 503, "overloaded")
        assert int(busy.headers["retry-after"]) >= 1 and body["detail"]
        assert await hub_messages(api, who.pairing_id, "paste.failed", "asset.placed") == []


# ---------------------------------------------------------------------------
# POST /v1/captures with an Idempotency-Key
# ---------------------------------------------------------------------------


async def keyed_capture(api: RunningApp, who: Pair, key: str | bytes, image: bytes, **params: str) -> httpx.Response:
    return await api.client.post(
        "/v1/captures", headers={**who.phone_auth, "Idempotency-Key": key}, params=params,
        files={"image_file": ("photo.jpg", image, "image/jpeg")},
    )


async def test_a_retried_capture_is_replayed_and_announced_once(api: RunningApp) -> None:
    who = await pair(api)
    photo = jpeg(640, 480)
    first = await keyed_capture(api, who, "cut-7f3a", photo)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = await keyed_capture(api, who, "cut-7f3a", photo)  # the phone never got the first answer
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    body, replay = first.json(), again.json()
    assert {k: v for k, v in replay.items() if k != "url"} == {k: v for k, v in body.items() if k != "url"}
    assert (await api.client.get(replay["url"], headers={"X-Api-Key": ""})).status_code == 200

    created = await hub_messages(api, who.pairing_id, "asset.created")
    assert [m["data"]["asset_id"] for m in created] == [body["asset_id"]]  # the desktop hears of it once
    assert (await keyed_capture(api, who, "cut-8b1c", photo)).json()["asset_id"] != body["asset_id"]  # a new key


async def test_a_key_reused_for_another_photo_is_refused(api: RunningApp) -> None:
    who = await pair(api)
    assert (await keyed_capture(api, who, "cut-1", jpeg(640, 480))).status_code == 201
    refused = await keyed_capture(api, who, "cut-1", jpeg(640, 480, seed=9))
    assert_problem(refused, 422, "idempotency_key_mismatch")
    assert_problem(await keyed_capture(api, who, "cut-1", jpeg(640, 480), crop="false"), 422, "idempotency_key_mismatch")
    assert len(await hub_messages(api, who.pairing_id, "asset.created")) == 1


async def test_capture_keys_are_checked_and_scoped_to_the_pairing(api: RunningApp) -> None:
    mine, theirs = await pair(api), await pair(api)
    for bad in ("", "x" * 256, "spaces are not allowed", "caf\u00e9".encode("latin-1")):
        assert_problem(await keyed_capture(api, mine, bad, jpeg()), 422, "invalid_idempotency_key")
    photo = jpeg()
    one = (await keyed_capture(api, mine, "same-key", photo)).json()
    other = await keyed_capture(api, theirs, "same-key", photo)
    assert other.status_code == 201 and "idempotent-replayed" not in other.headers
    assert other.json()["asset_id"] != one["asset_id"]


async def test_a_failed_capture_frees_its_key(api: RunningApp) -> None:
    who = await pair(api)
    assert_problem(await keyed_capture(api, who, "cut-retry", jpeg()[:200]), 400)
    retried = await keyed_capture(api, who, "cut-retry", jpeg())  # only successes are kept
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers


async def test_captures_without_a_key_are_never_merged(api: RunningApp) -> None:
    who = await pair(api)
    photo = jpeg()
    first, second = (await capture(api, who, photo)).json(), (await capture(api, who, photo)).json()
    assert first["asset_id"] != second["asset_id"]
    assert len(await hub_messages(api, who.pairing_id, "asset.created")) == 2


async def test_a_duplicate_while_the_first_runs_gets_409(app_factory) -> None:
    import threading

    from segmentation.models import PRESETS
    from segmentation.session import FunctionModel
    from tests.conftest import disk_saliency

    started, release = threading.Event(), threading.Event()

    def held(x: np.ndarray) -> np.ndarray:  # the first clip waits until the test lets it go
        started.set()
        release.wait(30)
        return disk_saliency(x)

    async with app_factory(FunctionModel(PRESETS["u2net"], held)) as api:
        who = await pair(api)
        photo = jpeg()
        first = asyncio.create_task(keyed_capture(api, who, "cut-slow", photo))
        try:
            assert await asyncio.to_thread(started.wait, 30)
            busy = await keyed_capture(api, who, "cut-slow", photo)
            assert_problem(busy, 409, "idempotency_key_in_use")
            assert busy.headers["retry-after"] == "1"
        finally:
            release.set()
        done = await first
        assert done.status_code == 201
        replay = await keyed_capture(api, who, "cut-slow", photo)
        assert replay.json()["asset_id"] == done.json()["asset_id"]
        assert len(await hub_messages(api, who.pairing_id, "asset.created")) == 1
