"""The cut and the paste, end to end: clip → store → tell the desktop; locate → tell the desktop.

Routes stay thin: they authenticate, read the upload and call ``capture``/``paste``.
The hub is reached through the ``Publisher`` seam (``sync.hub``'s ``publish`` is durable
before it returns, so a 201 means the desktop will get ``asset.created`` even if it is
offline right now). ``capture_once`` adds an ``Idempotency-Key`` (``idempotency.py``): a
retried upload gets the first capture back, and the desktop hears of it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from segmentation import ClipEngine, ClipOptions

from .errors import AssetNotFound, NoScreen, ScreenNotLocated
from .idempotency import CaptureKeys, IdempotencyKeyInUse, capture_fingerprint
from .models import Asset, BBox
from .screens import ScreenService
from .service import AssetService

log = logging.getLogger("arclip.capture")

ASSET_CREATED = "asset.created"
ASSET_PLACED = "asset.placed"
PASTE_FAILED = "paste.failed"

# The cut-out a canvas wants: the object with a little air around it, never larger than "auto".
DEFAULT_CAPTURE_OPTIONS = {"crop": "true", "crop_margin": "2%", "size": "auto"}
CAPTURE_OPTION_NAMES = ("crop", "crop_margin", "size")


class Publisher(Protocol):
    async def publish(self, pairing_id: str, type: str, data: dict[str, Any]) -> int: ...


def capture_options(values: dict[str, str | None]) -> ClipOptions:
    """Clip options for a capture: PNG with alpha always; ``crop``, ``crop_margin``, ``size`` may be set."""
    merged = {name: values.get(name) or DEFAULT_CAPTURE_OPTIONS.get(name) for name in CAPTURE_OPTION_NAMES}
    return ClipOptions.parse(format="png", channels="rgba", **merged)


@dataclass(frozen=True)
class Captured:
    asset: Asset
    url: str
    replayed: bool = False  # the first capture with this Idempotency-Key, handed back again


async def _uncancellable(work: Awaitable[None]) -> None:
    # Freeing a key must happen even when the request is cancelled, or retries get 409 until pending_ttl.
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


class CaptureService:
    def __init__(
        self,
        clipper: ClipEngine,
        assets: AssetService,
        screens: ScreenService,
        hub: Publisher,
        *,
        keys: CaptureKeys | None = None,
    ) -> None:
        self.clipper = clipper
        self.assets = assets
        self.screens = screens
        self.hub = hub
        self.keys = keys

    def url_for(self, asset: Asset, base_url: str) -> str:
        return base_url.rstrip("/") + self.assets.signed_path(asset)

    async def capture(self, pairing_id: str, photo: bytes, options: ClipOptions, base_url: str) -> Captured:
        """Clip ``photo``, keep the PNG, and push ``asset.created`` to the pairing; returns the asset and its URL.

        The caller holds ``clipper.admission()``.
        """
        result = await self.clipper.clip(photo, options)
        box = result.foreground
        asset = await self.assets.create(
            pairing_id, result.data, width=result.width, height=result.height,
            bbox=BBox(box.left, box.top, box.width, box.height), content_type=result.media_type,
        )
        url = self.url_for(asset, base_url)
        try:
            await self.hub.publish(pairing_id, ASSET_CREATED, {**asset.to_json(), "url": url})
        except BaseException:
            # Not announced means not created: the phone gets an error and may retry.
            with contextlib.suppress(Exception):
                await self.assets.delete(asset)
            raise
        return Captured(asset, url)

    async def capture_once(
        self, pairing_id: str, idempotency_key: str, photo: bytes, options: ClipOptions, base_url: str
    ) -> Captured:
        """``capture`` under an Idempotency-Key: the first success is replayed, not clipped or announced again.

        Raises ``IdempotencyKeyMismatch`` (the key came with another photo or options) and
        ``IdempotencyKeyInUse`` (its first request still runs). The caller holds ``clipper.admission()``.
        """
        if self.keys is None:
            raise RuntimeError("CaptureService was built without an idempotency store")
        fingerprint = capture_fingerprint(options, photo)
        for _ in range(3):
            replay = await self.keys.begin(pairing_id, idempotency_key, fingerprint)
            if replay is None:
                break  # the key is ours (pending)
            try:
                asset = await self.assets.get(replay, pairing_id)
            except AssetNotFound:  # expired or deleted since: nothing to replay, so it runs anew
                await self.keys.forget(pairing_id, idempotency_key)
                continue
            return Captured(asset, self.url_for(asset, base_url), replayed=True)
        else:
            raise IdempotencyKeyInUse("This Idempotency-Key is busy; retry shortly.")
        try:
            captured = await self.capture(pairing_id, photo, options, base_url)
        except BaseException:
            await _uncancellable(self.keys.abandon(pairing_id, idempotency_key))
            raise
        try:
            await _uncancellable(self.keys.complete(pairing_id, idempotency_key, captured.asset.id))
        except Exception:  # the capture stands and was announced: better a 201 than an error for a retry to repeat
            log.exception("capture %s made, but its Idempotency-Key could not be kept", captured.asset.id)
        return captured

    async def paste(self, pairing_id: str, asset_id: str, view: bytes) -> dict[str, Any]:
        """Locate the phone's photo of the screen and place the asset there.

        Pushes ``asset.placed``, or ``paste.failed`` with a hint and raises ``ScreenNotLocated``
        (or ``NoScreen``). The caller holds ``screens.admission()``.
        """
        asset = await self.assets.get(asset_id, pairing_id)
        try:
            location = await self.screens.locate(pairing_id, view)
        except NoScreen as exc:
            await self.hub.publish(pairing_id, PASTE_FAILED, {"asset_id": asset.id, "hint": exc.hint})
            raise
        if not location.found or location.x is None or location.y is None:
            hint = location.hint or "screen not recognised: try again"
            await self.hub.publish(pairing_id, PASTE_FAILED, {"asset_id": asset.id, "hint": hint})
            raise ScreenNotLocated("The screen could not be located in the photo.", hint, location.confidence)
        placed = {
            "asset_id": asset.id,
            "x": round(float(location.x), 2),
            "y": round(float(location.y), 2),
            "scale": None if location.scale is None else round(float(location.scale), 4),
            "rotation_deg": None if location.rotation_deg is None else round(float(location.rotation_deg), 2),
            "confidence": round(float(location.confidence), 3),
        }
        await self.hub.publish(pairing_id, ASSET_PLACED, placed)
        return {"found": True, **placed}
