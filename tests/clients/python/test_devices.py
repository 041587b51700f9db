"""The device client playing both sides against a real server: pair → capture → asset.created →
screen upload → paste → asset.placed; the failures (screen not found, no screen, bad codes and
tokens); and the lifetime of a pairing (new codes, leaving, unpairing)."""

from __future__ import annotations

import io

import pytest
from arclip_client import (
    ASSET_CREATED,
    ASSET_PLACED,
    PASTE_FAILED,
    PEER_JOINED,
    Asset,
    DesktopDevice,
    Gone,
    NoScreen,
    NotFound,
    PermissionDenied,
    PhoneDevice,
    Placement,
    ScreenNotFound,
    SyncClosed,
)
from PIL import Image

from tests.conftest import jpeg, photo

from .conftest import LiveServer, screen_scene

WAIT = 20.0


@pytest.fixture(scope="module")
def scene() -> tuple[bytes, bytes, tuple[float, float]]:
    return screen_scene()


async def test_pair_capture_paste(server: LiveServer, scene) -> None:  # type: ignore[no-untyped-def]
    screen_png, view_jpeg, (tx, ty) = scene
    async with await DesktopDevice.open(server.base_url) as desktop:
        assert desktop.code and desktop.qr_url and desktop.qr_url.endswith(f"/capture?code={desktop.code}")
        assert desktop.pairing is not None and desktop.pairing.expires_at is not None
        async with desktop.events() as events:
            assert events.connected and events.hello and events.hello["role"] == "desktop"
            async with await PhoneDevice.claim(server.base_url, desktop.code) as phone:
                assert phone.pairing_id == desktop.pairing_id
                joined = await events.wait_for(PEER_JOINED, timeout=WAIT)
                assert joined.data == {"device_id": phone.device_id, "role": "phone"}

                # -- the cut
                asset = await phone.capture(Image.fromarray(photo(320, 240)))
                assert isinstance(asset, Asset) and asset.url and asset.bbox is not None
                created = await events.wait_for(ASSET_CREATED, timeout=WAIT)
                assert created.asset == asset and created.id > joined.id
                png = await desktop.download(created.asset)  # type: ignore[arg-type]
                image = Image.open(io.BytesIO(png))
                assert image.mode == "RGBA" and image.size == (asset.width, asset.height)
                assert await phone.download(asset.asset_id) == png

                # -- the screen and the paste
                info = await desktop.upload_screen(screen_png)
                assert (info.width, info.height, info.locatable) == (1280, 800, True)
                placement = await phone.paste(asset, view_jpeg)
                assert isinstance(placement, Placement) and placement.asset_id == asset.asset_id
                assert abs(placement.x - tx) <= 3 and abs(placement.y - ty) <= 3, (placement, (tx, ty))
                placed = await events.wait_for(ASSET_PLACED, timeout=WAIT)
                assert placed.placement == placement

                # -- a photo that shows no screen
                with pytest.raises(ScreenNotFound) as not_found:
                    await phone.paste(asset, jpeg(640, 480))
                assert not_found.value.status == 422 and not_found.value.code == "screen_not_found"
                assert not_found.value.hint
                failed = await events.wait_for(PASTE_FAILED, timeout=WAIT)
                assert failed.hint == not_found.value.hint and failed["asset_id"] == asset.asset_id
                assert events.last_id == failed.id == desktop.last_event_id


async def test_paste_before_any_screen(server: LiveServer) -> None:
    async with await DesktopDevice.open(server.base_url) as desktop:
        async with await PhoneDevice.claim(server.base_url, desktop.code) as phone:  # type: ignore[arg-type]
            asset = await phone.capture(jpeg(160, 120), crop=True, size="preview")
            with pytest.raises(NoScreen) as raised:
                await phone.paste(asset, jpeg(640, 480))
            assert raised.value.status == 409 and raised.value.hint
            failed = await desktop.wait_for(PASTE_FAILED, timeout=WAIT)
            assert failed.hint == raised.value.hint


async def test_codes_tokens_and_the_pairing_lifetime(server: LiveServer) -> None:
    with pytest.raises(NotFound):
        await PhoneDevice.claim(server.base_url, "ZZZZZZZZ", max_retries=0)

    desktop = await DesktopDevice.open(server.base_url)
    first_code = desktop.code
    phone = await PhoneDevice.claim(server.base_url, first_code)  # type: ignore[arg-type]
    with pytest.raises(Gone):  # codes are single-use
        await PhoneDevice.claim(server.base_url, first_code, max_retries=0)  # type: ignore[arg-type]

    issued = await desktop.new_code()
    assert issued.code != first_code and desktop.code == issued.code
    second = await PhoneDevice.claim(server.base_url, issued.code)
    info = await desktop.info()
    assert info.state == "active" and sorted(d.role for d in info.devices) == ["desktop", "phone", "phone"]

    await second.leave()
    with pytest.raises((PermissionDenied, Gone)):
        await second.capture(jpeg(64, 48))
    assert len((await phone.info()).devices) == 2

    # a forged token: refused over HTTP and on the live channel, which does not reconnect
    forged = DesktopDevice.attach(server.base_url, token="forged-token", pairing_id=desktop.pairing_id)
    with pytest.raises(PermissionDenied):
        await forged.info()
    with pytest.raises(SyncClosed) as closed:
        await forged.events().connect()
    assert closed.value.code == 4403
    await forged.aclose()

    # unpairing ends every device's live channel for good
    async with phone.events() as phone_events:
        await desktop.unpair()
        with pytest.raises(SyncClosed) as ended:
            async for _ in phone_events:
                pass
        assert ended.value.code in (4403, 4410)
    with pytest.raises((PermissionDenied, Gone)):
        await phone.capture(jpeg(64, 48))
    for device in (desktop, phone, second):
        await device.aclose()
