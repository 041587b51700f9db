"""The device client's Idempotency-Key on captures and its view of presence, against a real server."""

from __future__ import annotations

import asyncio

from arclip_client import ASSET_CREATED, DesktopDevice, InvalidParameter, PhoneDevice

from tests.conftest import jpeg

from .conftest import LiveServer

WAIT = 20.0


async def test_a_capture_retried_with_its_key_is_the_same_asset_announced_once(server: LiveServer) -> None:
    desktop = await DesktopDevice.open(server.base_url)
    async with desktop, await PhoneDevice.claim(server.base_url, desktop.code or "") as phone:
        photo = jpeg(160, 120)
        first = await phone.capture(photo, idempotency_key="cut-0001")
        again = await phone.capture(photo, idempotency_key="cut-0001")  # as after a lost answer
        assert again.asset_id == first.asset_id
        marker = await phone.capture(photo)  # a key of its own: a new asset
        assert marker.asset_id != first.asset_id

        async with desktop.events(since=0) as events:
            created = []
            while not created or created[-1] != marker.asset_id:
                created.append((await events.wait_for(ASSET_CREATED, timeout=WAIT))["asset_id"])
        assert created == [first.asset_id, marker.asset_id]  # the desktop heard of the first once

        try:
            await phone.capture(jpeg(160, 120, seed=4), idempotency_key="cut-0001")
        except InvalidParameter as refused:
            assert refused.status == 422 and refused.code == "idempotency_key_mismatch"
        else:  # pragma: no cover - the assertion is the point
            raise AssertionError("a key reused for another photo must be refused")


async def test_streams_know_who_else_is_connected(server: LiveServer) -> None:
    desktop = await DesktopDevice.open(server.base_url)
    phone = await PhoneDevice.claim(server.base_url, desktop.code or "")
    async with desktop, phone, desktop.events() as desk_events:
        assert desk_events.peers == {} and desk_events.peer_online("phone") is False
        async with phone.events() as phone_events:
            assert phone_events.peer_online("desktop") is True
            assert phone_events.peers == {desktop.device_id: "desktop"}
            async with asyncio.timeout(WAIT):  # presence frames come beside the log, not in it
                while not desk_events.peer_online("phone"):
                    await asyncio.sleep(0.02)
            assert desk_events.peers == {phone.device_id: "phone"}
