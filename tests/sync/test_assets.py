"""Assets, signed URLs, screen pictures and the capture/paste flow, below the HTTP layer.

Real SQLite database, in-memory or file object store, the real locator on simulated
phone photos (``benchmarks.locate``), an in-memory model for the clipper and a
recording hub.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from benchmarks.locate.camera import Shot, render, truth_point
from benchmarks.locate.dataset import encode_view_with_exif
from benchmarks.locate.screens import make_screen
from segmentation import ClipEngine, EngineConfig
from sync import db
from sync.assets import (
    ASSET_CREATED,
    ASSET_PLACED,
    PASTE_FAILED,
    AssetNotFound,
    AssetService,
    BadSignature,
    BBox,
    CaptureService,
    ExpiredSignature,
    InvalidScreen,
    LocatorBusy,
    NoScreen,
    ScreenNotLocated,
    ScreenService,
    Sweeper,
    UrlSigner,
    capture_options,
    load_signing_key,
)
from sync.assets.screens import HINT_NO_SCREEN
from sync.locate import Location, ScreenLocator
from sync.storage import FileStore, MemoryStore
from tests.conftest import disk_model, jpeg

KEY = b"k" * 32


class Clock:
    """A settable clock for both datetime- and unix-time consumers."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def unix(self) -> float:
        return self.now.timestamp()

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(db.Base.metadata.create_all)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def assets(sessions, store, clock) -> AssetService:
    return AssetService(
        sessions, store, UrlSigner(KEY, clock=clock.unix),
        retention=timedelta(hours=24), url_ttl=timedelta(minutes=15), clock=clock,
    )


@pytest.fixture
async def screens(sessions, store) -> AsyncIterator[ScreenService]:
    service = ScreenService(sessions, store, ScreenLocator(), workers=2)
    yield service
    await service.close()


def png_bytes(pixels: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", pixels)
    assert ok
    return buf.tobytes()


@dataclass
class RecordingHub:
    messages: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    fail: bool = False

    async def publish(self, pairing_id: str, type: str, data: dict[str, Any]) -> int:
        if self.fail:
            raise RuntimeError("hub down")
        self.messages.append((pairing_id, type, data))
        return len(self.messages)


SHOT = Shot(
    view_w=1440, view_h=1080, hfov_deg=65, screen_cm=30, target=(700.0, 400.0), distance_cm=35,
    yaw_deg=12, pitch_deg=-8, roll_deg=6, defocus=0.8, motion_px=0, moire=0.1, glare=0, reflection=0,
    gain=1.0, gamma=1.0, noise=2, jpeg_q=90, seed=42,
)


@pytest.fixture(scope="module")
def desktop_scene() -> tuple[bytes, bytes, tuple[float, float]]:
    """A desktop screen picture (PNG), a phone photo of it (JPEG) and the true screen point."""
    screen = make_screen("desktop", 5)
    view, H = render(screen, SHOT)
    ok, buf = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return png_bytes(screen), buf.tobytes(), truth_point(H, SHOT.view_w, SHOT.view_h)


# ---------------------------------------------------------------------------
# Signed URLs and the key
# ---------------------------------------------------------------------------


def test_signature_roundtrip_and_refusals(clock: Clock) -> None:
    signer = UrlSigner(KEY, clock=clock.unix)
    signature = signer.sign("ast_1", ttl=60)
    signer.verify("ast_1", str(signature.expires), signature.sig)
    with pytest.raises(BadSignature):
        signer.verify("ast_2", signature.expires, signature.sig)  # another asset
    with pytest.raises(BadSignature):
        signer.verify("ast_1", signature.expires + 3600, signature.sig)  # stretched expiry
    with pytest.raises(BadSignature):
        signer.verify("ast_1", signature.expires, signature.sig[:-2] + "AA")
    with pytest.raises(BadSignature):
        UrlSigner(b"x" * 32, clock=clock.unix).verify("ast_1", signature.expires, signature.sig)  # another key
    for expires, sig in ((None, signature.sig), ("soon", signature.sig), (signature.expires, None), (signature.expires, "")):
        with pytest.raises(BadSignature):
            signer.verify("ast_1", expires, sig)
    clock.advance(seconds=61)
    with pytest.raises(ExpiredSignature):
        signer.verify("ast_1", signature.expires, signature.sig)


@pytest.mark.parametrize(
    "spelling",
    ["0{e}", "+{e}", " {e}", "{e} ", "{e}\n", "{e_}", "-{e}", "{e}.0", "{wide}", "{arabic}", "", "9" * 13, "1e9"],
)
def test_expiry_has_one_spelling(clock: Clock, spelling: str) -> None:
    """Only the plain ASCII digits that were signed: int() would take each of these for the same time."""
    signer = UrlSigner(KEY, clock=clock.unix)
    signature = signer.sign("ast_1", ttl=60)
    e = str(signature.expires)
    other = spelling.format(
        e=e,
        e_=e[:3] + "_" + e[3:],
        wide="".join(chr(0xFF10 + int(d)) for d in e),  # fullwidth digits
        arabic="".join(chr(0x0660 + int(d)) for d in e),  # Arabic-Indic digits
    )
    with pytest.raises(BadSignature):
        signer.verify("ast_1", other, signature.sig)
    signer.verify("ast_1", e, signature.sig)  # the one spelling passes


@pytest.mark.parametrize("sig", ["é" * 43, "A" * 44, "A" * 5000, "=" * 43, "A" * 42 + "é"])
def test_malformed_signatures_are_refused_not_crashed_on(clock: Clock, sig: str) -> None:
    signer = UrlSigner(KEY, clock=clock.unix)
    with pytest.raises(BadSignature):
        signer.verify("ast_1", str(signer.sign("ast_1", ttl=60).expires), sig)


def test_signature_never_outlives_not_after(clock: Clock) -> None:
    signer = UrlSigner(KEY, clock=clock.unix)
    assert signer.sign("a", ttl=900, not_after=clock.unix() + 10).expires == int(clock.unix() + 10)
    with pytest.raises(ValueError):
        UrlSigner(b"short")


def test_signing_key_generated_once_and_private(tmp_path: Path) -> None:
    first = load_signing_key(None, tmp_path / "data")
    assert len(first) == 32
    assert load_signing_key(None, tmp_path / "data") == first  # survives a restart
    mode = stat.S_IMODE(os.stat(tmp_path / "data" / "signing.key").st_mode)
    assert mode == 0o600
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["signing.key"]
    assert load_signing_key("a configured key, long enough", tmp_path / "other") == b"a configured key, long enough"
    assert not (tmp_path / "other").exists()
    with pytest.raises(ValueError):
        load_signing_key("short", tmp_path)


# ---------------------------------------------------------------------------
# AssetService
# ---------------------------------------------------------------------------


async def test_create_get_read(assets: AssetService, store: MemoryStore) -> None:
    asset = await assets.create("pair_a", b"\x89PNG...", width=40, height=30, bbox=BBox(2, 3, 30, 20))
    assert asset.id.startswith("ast_") and asset.pairing_id == "pair_a"
    assert (asset.width, asset.height, asset.bbox, asset.size_bytes) == (40, 30, BBox(2, 3, 30, 20), 7)
    assert store.objects[f"assets/pair_a/{asset.id}.png"] == (b"\x89PNG...", "image/png")
    assert await assets.get(asset.id, "pair_a") == asset
    assert await assets.read(asset) == b"\x89PNG..."
    assert asset.to_json() == {
        "asset_id": asset.id, "width": 40, "height": 30, "bbox": {"left": 2, "top": 3, "width": 30, "height": 20}
    }


async def test_other_pairing_and_unknown_ids_look_the_same(assets: AssetService) -> None:
    asset = await assets.create("pair_a", b"x", width=1, height=1, bbox=BBox(0, 0, 1, 1))
    with pytest.raises(AssetNotFound):
        await assets.get(asset.id, "pair_b")
    with pytest.raises(AssetNotFound):
        await assets.get("ast_nope", "pair_a")


async def test_not_found_echoes_only_a_prefix_of_the_id(assets: AssetService, clock: Clock) -> None:
    hostile = "ast_" + "x" * 5000
    with pytest.raises(AssetNotFound) as refused:
        await assets.get(hostile, "pair_a")
    assert "ast_xxx" in refused.value.detail and len(refused.value.detail) < 120
    signature = UrlSigner(KEY, clock=clock.unix).sign(hostile, ttl=60)  # the service's key
    with pytest.raises(AssetNotFound) as refused:
        await assets.get_signed(hostile, str(signature.expires), signature.sig)
    assert len(refused.value.detail) < 120


async def test_signed_path_opens_the_asset_until_it_expires(assets: AssetService, clock: Clock) -> None:
    asset = await assets.create("pair_a", b"x", width=1, height=1, bbox=BBox(0, 0, 1, 1))
    path = assets.signed_path(asset)
    assert path.startswith(f"/v1/assets/{asset.id}?expires=")
    query = dict(part.split("=", 1) for part in path.split("?", 1)[1].split("&"))
    assert await assets.get_signed(asset.id, query["expires"], query["sig"]) == asset
    other = await assets.create("pair_a", b"y", width=1, height=1, bbox=BBox(0, 0, 1, 1))
    with pytest.raises(BadSignature):
        await assets.get_signed(other.id, query["expires"], query["sig"])
    clock.advance(minutes=16)
    with pytest.raises(ExpiredSignature):
        await assets.get_signed(asset.id, query["expires"], query["sig"])


async def test_retention_sweep(assets: AssetService, store: MemoryStore, clock: Clock) -> None:
    old = await assets.create("pair_a", b"old", width=1, height=1, bbox=BBox(0, 0, 1, 1))
    clock.advance(hours=20)
    fresh = await assets.create("pair_a", b"new", width=1, height=1, bbox=BBox(0, 0, 1, 1))
    assert await assets.sweep() == 0
    clock.advance(hours=4, seconds=1)  # old is 24 h + 1 s old, fresh 4 h
    with pytest.raises(AssetNotFound):  # expired assets are gone to readers even before the sweep
        await assets.get(old.id)
    assert await assets.sweep() == 1
    assert old.storage_key not in store.objects
    assert await assets.get(fresh.id) == fresh
    # a signed URL never outlives the asset
    clock.advance(hours=19, minutes=55)
    signature_expiry = int(assets.signed_path(fresh).split("expires=")[1].split("&")[0])
    assert signature_expiry == int(fresh.expires_at.timestamp())


async def test_delete_pairing_takes_exactly_its_assets(assets: AssetService, store: MemoryStore) -> None:
    mine = [await assets.create("pair_1", b"x", width=1, height=1, bbox=BBox(0, 0, 1, 1)) for _ in range(3)]
    other = await assets.create("pair_10", b"x", width=1, height=1, bbox=BBox(0, 0, 1, 1))
    assert await assets.delete_pairing("pair_1") == 3
    for asset in mine:
        with pytest.raises(AssetNotFound):
            await assets.get(asset.id)
    assert await assets.get(other.id) == other
    assert list(store.objects) == [other.storage_key]


async def test_unsafe_pairing_ids_get_a_safe_folder(assets: AssetService) -> None:
    asset = await assets.create("../../etc", b"x", width=1, height=1, bbox=BBox(0, 0, 1, 1))
    assert asset.storage_key.startswith("assets/h") and ".." not in asset.storage_key
    assert await assets.delete_pairing("../../etc") == 1


async def test_sweeper_runs_periodically_and_survives_failures() -> None:
    calls: list[int] = []

    async def sweep() -> int:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("database hiccup")
        return 1

    sweeper = Sweeper(sweep, interval=0.01)
    sweeper.start()
    for _ in range(200):
        await asyncio.sleep(0.01)
        if len(calls) >= 4:
            break
    await sweeper.close()
    assert len(calls) >= 4
    settled = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == settled  # closed means stopped


# ---------------------------------------------------------------------------
# ScreenService: pictures, the index cache, locating
# ---------------------------------------------------------------------------


async def test_paste_before_any_screen(screens: ScreenService, desktop_scene) -> None:
    with pytest.raises(NoScreen) as caught:
        await screens.locate("pair_a", desktop_scene[1])
    assert caught.value.hint


async def test_put_screen_and_locate(screens: ScreenService, desktop_scene, store: MemoryStore) -> None:
    screen_png, view_jpeg, (tx, ty) = desktop_scene
    info = await screens.put("pair_a", screen_png)
    assert (info.width, info.height) == (1280, 800)
    assert info.locatable and info.features > 100
    assert [k for k in store.objects if k.startswith("screens/pair_a/")] == [f"screens/pair_a/{info.version}.png"]
    location = await screens.locate("pair_a", view_jpeg)
    assert location.found
    assert abs(location.x - tx) < 4 and abs(location.y - ty) < 4
    assert location.scale is not None and location.rotation_deg is not None


async def test_one_index_per_picture_and_replacing_the_picture(screens: ScreenService, desktop_scene, store) -> None:
    screen_png, view_jpeg, _ = desktop_scene
    first = await screens.put("pair_a", screen_png)
    builds = screens.index_builds
    for _ in range(3):
        assert (await screens.locate("pair_a", view_jpeg)).found
    assert screens.index_builds == builds  # one screen picture serves many pastes
    second = await screens.put("pair_a", png_bytes(make_screen("text", 9)))
    assert second.version != first.version
    assert [k for k in store.objects if k.startswith("screens/")] == [f"screens/pair_a/{second.version}.png"]
    assert not (await screens.locate("pair_a", view_jpeg)).found  # the old picture is no longer used


async def test_restart_rebuilds_the_index_from_storage_once(sessions, tmp_path: Path, desktop_scene) -> None:
    screen_png, view_jpeg, (tx, ty) = desktop_scene
    objects = FileStore(tmp_path / "objects")
    before = ScreenService(sessions, objects, ScreenLocator())
    await before.put("pair_a", screen_png)
    await before.close()

    after = ScreenService(sessions, FileStore(tmp_path / "objects"), ScreenLocator())
    try:
        results = await asyncio.gather(*(after.locate("pair_a", view_jpeg) for _ in range(3)))
        assert all(r.found and abs(r.x - tx) < 4 and abs(r.y - ty) < 4 for r in results)
        assert after.index_builds == 1  # concurrent pastes share one rebuild
    finally:
        await after.close()


async def test_photo_orientation_and_scale_are_those_of_the_photo_sent(sessions, store, desktop_scene) -> None:
    screen_png, _, (tx, ty) = desktop_scene
    view, _ = render(cv2.imdecode(np.frombuffer(screen_png, np.uint8), cv2.IMREAD_COLOR), SHOT)
    full = ScreenService(sessions, store, ScreenLocator(), view_side=None)
    reduced = ScreenService(sessions, store, ScreenLocator(), view_side=720)
    try:
        await full.put("pair_a", screen_png)
        sideways = encode_view_with_exif(view, rotate=True)  # stored turned, EXIF Orientation 6
        a = await full.locate("pair_a", sideways)
        b = await reduced.locate("pair_a", sideways)
    finally:
        await full.close()
        await reduced.close()
    for loc in (a, b):
        assert loc.found and abs(loc.x - tx) < 5 and abs(loc.y - ty) < 5
    assert b.scale == pytest.approx(a.scale, rel=0.03)  # screen px per px of the photo as sent
    assert b.rotation_deg == pytest.approx(a.rotation_deg, abs=1.0)


async def test_blank_canvas_and_the_paste_pattern(screens: ScreenService) -> None:
    blank = np.full((720, 1280, 3), 250, np.uint8)
    plain = await screens.put("pair_a", png_bytes(blank))
    assert not plain.locatable and plain.features < 12
    with_pattern = await screens.put("pair_a", png_bytes(blank), fiducials=True)
    assert with_pattern.locatable and with_pattern.markers >= 2


async def test_unusable_screen_pictures(screens: ScreenService) -> None:
    from segmentation import UnreadableImage, UnsupportedMediaType

    with pytest.raises(InvalidScreen):
        await screens.put("pair_a", png_bytes(np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(UnsupportedMediaType):
        await screens.put("pair_a", b"not an image at all")
    with pytest.raises(UnreadableImage):
        await screens.put("pair_a", png_bytes(np.zeros((64, 64, 3), np.uint8))[:60])
    with pytest.raises(NoScreen):
        await screens.latest("pair_a")


async def test_locator_admission_is_bounded(sessions, store) -> None:
    service = ScreenService(sessions, store, ScreenLocator(), max_queue=2)
    try:
        async with service.admission(), service.admission():
            with pytest.raises(LocatorBusy):
                async with service.admission():
                    pass
        async with service.admission():  # places are given back
            pass
    finally:
        await service.close()


async def test_screen_deletion_and_sweep(screens: ScreenService, store: MemoryStore, desktop_scene, clock) -> None:
    await screens.put("pair_a", desktop_scene[0])
    await screens.put("pair_b", desktop_scene[0])
    assert await screens.delete_pairing("pair_a") == 1
    with pytest.raises(NoScreen):
        await screens.locate("pair_a", desktop_scene[1])
    assert await screens.sweep(timedelta(hours=1)) == 0
    assert await screens.sweep(timedelta(seconds=-1)) == 1  # everything is older than the future
    assert not store.objects


# ---------------------------------------------------------------------------
# CaptureService: clip, store, announce; locate, announce
# ---------------------------------------------------------------------------


@pytest.fixture
async def flow(assets: AssetService, screens: ScreenService) -> AsyncIterator[tuple[CaptureService, RecordingHub]]:
    clipper = ClipEngine(disk_model(), EngineConfig(concurrency=2))
    await clipper.start()
    hub = RecordingHub()
    try:
        yield CaptureService(clipper, assets, screens, hub), hub
    finally:
        await clipper.close()


async def test_capture_stores_and_announces(flow, assets: AssetService) -> None:
    captures, hub = flow
    captured = await captures.capture("pair_a", jpeg(640, 480), capture_options({}), "http://host:8000/")
    asset, url = captured.asset, captured.url
    assert url.startswith(f"http://host:8000/v1/assets/{asset.id}?expires=")
    (pairing, type_, data), = hub.messages
    assert (pairing, type_) == ("pair_a", ASSET_CREATED)
    assert data == {**asset.to_json(), "url": url}
    # cropped to the object (the disk) with a small margin, bbox inside the image
    assert asset.width < 640 and asset.height < 480
    box = asset.bbox
    assert box.left >= 0 and box.left + box.width <= asset.width and box.top + box.height <= asset.height
    png = await assets.read(asset)
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (asset.height, asset.width, 4)


async def test_capture_not_announced_is_not_kept(flow, store: MemoryStore) -> None:
    captures, hub = flow
    hub.fail = True
    with pytest.raises(RuntimeError):
        await captures.capture("pair_a", jpeg(), capture_options({}), "http://h")
    assert not store.objects


async def test_paste_places_or_fails_with_a_hint(flow, screens: ScreenService, desktop_scene) -> None:
    captures, hub = flow
    screen_png, view_jpeg, (tx, ty) = desktop_scene
    asset = (await captures.capture("pair_a", jpeg(), capture_options({}), "http://h")).asset

    with pytest.raises(NoScreen) as no_screen:
        await captures.paste("pair_a", asset.id, view_jpeg)
    assert no_screen.value.hint == HINT_NO_SCREEN
    assert hub.messages[-1][1:] == (PASTE_FAILED, {"asset_id": asset.id, "hint": HINT_NO_SCREEN})

    await screens.put("pair_a", screen_png)
    result = await captures.paste("pair_a", asset.id, view_jpeg)
    assert result["found"] is True and abs(result["x"] - tx) < 4 and abs(result["y"] - ty) < 4
    pairing, type_, data = hub.messages[-1]
    assert (pairing, type_) == ("pair_a", ASSET_PLACED)
    assert data == {k: result[k] for k in ("asset_id", "x", "y", "scale", "rotation_deg", "confidence")}

    room = jpeg(1440, 1080, seed=3)  # a photo with no screen in it
    with pytest.raises(ScreenNotLocated) as caught:
        await captures.paste("pair_a", asset.id, room)
    assert caught.value.hint
    assert hub.messages[-1][1:] == (PASTE_FAILED, {"asset_id": asset.id, "hint": caught.value.hint})

    with pytest.raises(AssetNotFound):  # another pairing's asset
        await captures.paste("pair_b", asset.id, view_jpeg)


async def test_capture_options() -> None:
    options = capture_options({})
    assert (options.format, options.channels, options.crop, options.size) == ("png", "rgba", True, "auto")
    assert capture_options({"crop": "false", "size": "preview"}).size == "preview"
    from segmentation import InvalidOption

    with pytest.raises(InvalidOption):
        capture_options({"size": "huge"})


def test_location_contract_is_what_paste_reads() -> None:
    loc = Location(True, 1.0, 2.0, 0.9, scale=1.5, rotation_deg=3.0)
    assert (loc.found, loc.x, loc.y, loc.confidence, loc.scale, loc.rotation_deg) == (True, 1.0, 2.0, 0.9, 1.5, 3.0)


async def test_snapshot_lists_the_pairings_live_assets_oldest_first(assets: AssetService, clock: Clock) -> None:
    old = await assets.create("pair_a", b"a", width=10, height=8, bbox=BBox(1, 2, 3, 4))
    clock.advance(hours=1)
    new = await assets.create("pair_a", b"b", width=20, height=16, bbox=BBox(0, 0, 20, 16))
    await assets.create("pair_b", b"c", width=5, height=5, bbox=BBox(0, 0, 5, 5))

    items = (await assets.snapshot("pair_a"))["items"]
    assert [item["asset_id"] for item in items] == [old.id, new.id]
    assert items[1]["width"] == 20 and items[1]["height"] == 16
    # A signed path, resolvable against the client's own origin.
    assert items[0]["url"].startswith(f"/v1/assets/{old.id}?") and "sig=" in items[0]["url"]
    # When each was cut (a client shows paste markers only for a fresh clip).
    cut_at = [datetime.fromisoformat(item["created_at"]) for item in items]
    assert cut_at[1] - cut_at[0] == timedelta(hours=1) and cut_at[0].utcoffset() == timedelta(0)

    clock.advance(hours=23, minutes=30)  # the first is past its 24 h retention, the second is not
    assert [item["asset_id"] for item in (await assets.snapshot("pair_a"))["items"]] == [new.id]
