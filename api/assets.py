"""Part of the composition root: object storage, assets, screen pictures and the capture flow.

Built after the clipper and the live hub, which the capture flow uses: a capture is
announced through the hub, and a pairing's assets and screen pictures are deleted
when it closes (a pairing close listener) or when they outlive the retention (a sweep).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from segmentation import ClipEngine
from segmentation.decode import ImageLimits
from sync.assets import AssetService, CaptureService, Publisher, ScreenService, Sweeper, UrlSigner, load_signing_key
from sync.assets.idempotency import CaptureKeys
from sync.locate import ScreenLocator
from sync.pairing import PairingService
from sync.storage import ObjectStore, open_store

from .settings import Settings

log = logging.getLogger("arclip")


@dataclass
class AssetStack:
    store: ObjectStore
    assets: AssetService
    screens: ScreenService
    captures: CaptureService
    sweeper: Sweeper

    async def close(self) -> None:
        await self.sweeper.close()
        await self.screens.close()
        await self.store.close()


def describe_duration(seconds: float) -> str:
    """A duration as people say it: "1 day", "36 hours", "15 minutes", "90 seconds"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0 or seconds >= 2 * size:
            count = round(seconds / size, 1)
            text = f"{count:g}"
            return f"{text} {unit}{'' if text == '1' else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"


def start_assets(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    clipper: ClipEngine,
    hub: Publisher,
    pairings: PairingService,
) -> AssetStack:
    store = open_store(settings.storage_url, settings.data_dir)
    key = load_signing_key(settings.signing_key.get_secret_value() if settings.signing_key else None, settings.data_dir)
    retention = timedelta(seconds=settings.asset_retention_s)
    assets = AssetService(
        sessions, store, UrlSigner(key), retention=retention, url_ttl=timedelta(seconds=settings.asset_url_ttl_s)
    )
    screens = ScreenService(
        sessions,
        store,
        ScreenLocator(),
        limits=ImageLimits(
            max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels, max_side=settings.max_image_side
        ),
        workers=settings.locate_workers,
        max_queue=settings.locate_max_queue,
        cache_size=settings.screen_cache_size,
    )
    # A replay lives no longer than its asset does (it is rebuilt from it).
    capture_keys = CaptureKeys(sessions, ttl=min(timedelta(seconds=settings.idempotency_ttl_s), retention))
    captures = CaptureService(clipper, assets, screens, hub, keys=capture_keys)

    async def forget(pairing_id: str) -> None:
        await assets.delete_pairing(pairing_id)
        await screens.delete_pairing(pairing_id)
        await capture_keys.delete_pairing(pairing_id)

    pairings.add_close_listener(forget)

    async def sweep() -> int:
        # A screen picture not replaced within the retention goes too (its pairing is idle).
        return await assets.sweep() + await screens.sweep(retention) + await capture_keys.sweep()

    sweeper = Sweeper(sweep, settings.retention_sweep_s)
    sweeper.start()
    log.info("assets in %s, kept %s", type(store).__name__, describe_duration(settings.asset_retention_s))
    return AssetStack(store, assets, screens, captures, sweeper)
