"""The device API (SPEC §6): play the desktop companion or the phone, for tests and scripts.

::

    desktop = await DesktopDevice.open("http://127.0.0.1:8000")
    phone = await PhoneDevice.claim("http://127.0.0.1:8000", desktop.code)
    async with desktop.events() as events:
        asset = await phone.capture("mug.jpg")                # the cut
        created = await events.wait_for("asset.created")
        await desktop.upload_screen(screenshot)               # what the companion shows
        placement = await phone.paste(asset, "photo-of-screen.jpg")   # the paste
        placed = await events.wait_for("asset.placed")

Both devices are asyncio-based, and async context managers (``async with``) that close their
connections on exit. Errors are the same typed exceptions as the public API's
(``ScreenNotFound`` with its ``hint`` when a paste cannot be located).
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

import httpx

from ._async_client import send
from ._base import (
    DEFAULT_TIMEOUT,
    USER_AGENT,
    RequestSpec,
    Size,
    clip_fields,
    image_files,
    json_body,
    resolve_base_url,
    resolve_policy,
)
from ._events import Cursor, EventStream
from ._images import ImageInput, read_image
from ._retry import RetryPolicy
from ._types import Asset, Event, Pairing, PairingCode, PairingInfo, Placement, ScreenInfo

D = TypeVar("D", bound="_Device")


def _ws_url(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :] + "/v1/sync"
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :] + "/v1/sync"
    return base_url + "/v1/sync"


class _Device:
    """What both devices do: authenticated requests, reading assets, the live channel."""

    role: ClassVar[str] = "device"

    def __init__(
        self,
        base_url: str | None,
        *,
        token: str,
        pairing_id: str,
        device_id: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        reconnect: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self.token = token
        self.pairing_id = pairing_id
        self.device_id = device_id
        self.timeout = timeout
        self.retry_policy = resolve_policy(max_retries, retry)
        self.reconnect_policy = reconnect
        self._owns_client = http_client is None
        self._client = http_client if http_client is not None else httpx.AsyncClient(timeout=timeout)
        self._cursor = Cursor()
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._default_stream: EventStream | None = None

    @classmethod
    def attach(cls: type[D], base_url: str | None, *, token: str, pairing_id: str, **options: Any) -> D:
        """A device from a token kept earlier (a companion surviving a restart); no request is made."""
        return cls(base_url, token=token, pairing_id=pairing_id, **options)

    # -- HTTP ----------------------------------------------------------------------------------------------
    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"User-Agent": USER_AGENT, "Authorization": f"Bearer {self.token}", **(extra or {})}

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = self._headers(kwargs.pop("headers", None))
        spec = RequestSpec(method, self.base_url + path, headers=headers, timeout=self.timeout, **kwargs)
        return await send(self._client, spec, self.retry_policy)

    async def info(self) -> PairingInfo:
        """The pairing's state and devices."""
        response = await self._request("GET", f"/v1/pairings/{self.pairing_id}")
        return PairingInfo.from_json(json_body(response))

    async def download(self, asset: Asset | str) -> bytes:
        """The clipped PNG of an asset of this pairing."""
        asset_id = asset.asset_id if isinstance(asset, Asset) else asset
        response = await self._request("GET", f"/v1/assets/{asset_id}")
        return response.content

    # -- the live channel ----------------------------------------------------------------------------------
    def events(self, *, since: int | None = None, auto_ack: bool = True) -> EventStream:
        """A new live stream of the pairing's messages (its own websocket).

        It starts after the last message this device object handed out (or, for a fresh device,
        after the last one the server saw it ack); ``since=0`` replays everything still kept.
        """
        stream = EventStream(
            _ws_url(self.base_url), self.token, cursor=self._cursor, since=since, auto_ack=auto_ack,
            reconnect=self.reconnect_policy,
        )
        self._streams.add(stream)
        return stream

    async def wait_for(self, *types: str, timeout: float | None = None) -> Event:
        """The next message of one of ``types`` on the device's own stream (opened on first use)."""
        if self._default_stream is None:
            self._default_stream = self.events()
        return await self._default_stream.wait_for(*types, timeout=timeout)

    @property
    def last_event_id(self) -> int | None:
        """The newest message id handed out by this device's streams."""
        return self._cursor.delivered

    # -- lifetime ------------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the live streams and the HTTP connections (the pairing stays)."""
        for stream in list(self._streams):
            await stream.aclose()
        self._default_stream = None
        if self._owns_client:
            await self._client.aclose()

    close = aclose

    async def __aenter__(self: D) -> D:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pairing_id={self.pairing_id!r}, device_id={self.device_id!r})"


class DesktopDevice(_Device):
    """The desktop companion: opens the pairing, shows its code, sends its screen picture,
    receives ``asset.created`` / ``asset.placed`` / ``paste.failed``."""

    role = "desktop"

    def __init__(self, base_url: str | None, *, pairing: Pairing | None = None, **options: Any) -> None:
        if pairing is not None:
            options.setdefault("token", pairing.desktop_token)
            options.setdefault("pairing_id", pairing.pairing_id)
            options.setdefault("device_id", pairing.device_id)
        super().__init__(base_url, **options)
        self.pairing = pairing

    @classmethod
    async def open(
        cls,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        reconnect: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> DesktopDevice:
        """Open a pairing (``POST /v1/pairings``); show ``device.code`` or ``device.qr_url``."""
        client = http_client if http_client is not None else httpx.AsyncClient(timeout=timeout)
        url = resolve_base_url(base_url)
        try:
            spec = RequestSpec("POST", url + "/v1/pairings", headers={"User-Agent": USER_AGENT}, timeout=timeout)
            response = await send(client, spec, resolve_policy(max_retries, retry))
            pairing = Pairing.from_json(json_body(response))
        except BaseException:
            if http_client is None:
                await client.aclose()
            raise
        device = cls(
            url, pairing=pairing, timeout=timeout, max_retries=max_retries, retry=retry, reconnect=reconnect,
            http_client=client,
        )
        device._owns_client = http_client is None
        return device

    @property
    def code(self) -> str | None:
        return self.pairing.code if self.pairing else None

    @property
    def qr_url(self) -> str | None:
        return self.pairing.qr_url if self.pairing else None

    async def upload_screen(self, image: ImageInput, fiducials: bool | None = None) -> ScreenInfo:
        """Send the companion's current screen/canvas picture (in its own pixel coordinates).

        ``fiducials=True`` says the paste pattern is shown, ``False`` to ignore markers, ``None``
        to let the server look for them. A PIL image is sent as PNG (lossless).
        """
        _, data, media_type = read_image(image, name="screen", lossless=True)
        params = {} if fiducials is None else {"fiducials": "true" if fiducials else "false"}
        response = await self._request(
            "PUT", f"/v1/pairings/{self.pairing_id}/screen", content=data, params=params,
            headers={"Content-Type": media_type},
        )
        return ScreenInfo.from_json(json_body(response))

    async def new_code(self) -> PairingCode:
        """A fresh code (to add a phone, or replace one that lapsed); the previous unused code stops working."""
        response = await self._request("POST", f"/v1/pairings/{self.pairing_id}/code")
        issued = PairingCode.from_json(json_body(response))
        if self.pairing is not None:
            self.pairing = replace(self.pairing, code=issued.code, qr_url=issued.qr_url, expires_at=issued.expires_at)
        return issued

    async def unpair(self) -> None:
        """Close the pairing: every token is revoked and its assets deleted."""
        await self._request("DELETE", f"/v1/pairings/{self.pairing_id}")


class PhoneDevice(_Device):
    """The phone: joins with the code, cuts (``capture``) and pastes (``paste``)."""

    role = "phone"

    @classmethod
    async def claim(
        cls,
        base_url: str | None,
        code: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        reconnect: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> PhoneDevice:
        """Join a pairing with its code (``POST /v1/pairings/claim``)."""
        client = http_client if http_client is not None else httpx.AsyncClient(timeout=timeout)
        url = resolve_base_url(base_url)
        try:
            spec = RequestSpec(
                "POST", url + "/v1/pairings/claim", json={"code": code}, headers={"User-Agent": USER_AGENT},
                timeout=timeout,
            )
            response = await send(client, spec, resolve_policy(max_retries, retry))
            body = json_body(response)
        except BaseException:
            if http_client is None:
                await client.aclose()
            raise
        device = cls(
            url, token=str(body["phone_token"]), pairing_id=str(body["pairing_id"]),
            device_id=body.get("device_id"), timeout=timeout, max_retries=max_retries, retry=retry,
            reconnect=reconnect, http_client=client,
        )
        device._owns_client = http_client is None
        return device

    async def capture(
        self,
        image: ImageInput,
        *,
        crop: bool | None = None,
        crop_margin: int | float | str | None = None,
        size: Size | None = None,
        idempotency_key: str | None = None,
    ) -> Asset:
        """The cut: clip ``image`` into an asset of the pairing; the desktop gets ``asset.created``.

        Every capture carries an ``Idempotency-Key`` (a fresh UUID unless one is given), so the
        client's own retries after a lost answer get the same asset back and the desktop hears of it
        once. Pass your own key to make a retry across calls (or processes) safe the same way.
        """
        fields = clip_fields(format=None, channels=None, crop=crop, crop_margin=crop_margin, size=size, bg_color=None)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        response = await self._request("POST", "/v1/captures", files=image_files(image), data=fields, headers=headers)
        return Asset.from_json(json_body(response))

    async def paste(self, asset: Asset | str, view_image: ImageInput) -> Placement:
        """The paste: locate ``view_image`` (the phone's photo of the screen) on the latest screen
        picture and place the asset there; the desktop gets ``asset.placed``.

        Raises ``ScreenNotFound`` (with ``hint``) when the screen cannot be located — the desktop
        then gets ``paste.failed`` — and ``NoScreen`` before any screen picture was sent.
        """
        asset_id = asset.asset_id if isinstance(asset, Asset) else asset
        response = await self._request(
            "POST", f"/v1/captures/{asset_id}/paste", files=image_files(view_image, "view")
        )
        return Placement.from_json(json_body(response))

    async def leave(self) -> None:
        """Remove this phone from the pairing (its token stops working)."""
        await self._request("DELETE", f"/v1/pairings/{self.pairing_id}")
