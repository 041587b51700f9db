"""The clients and services the app builds at start-up and routes receive by dependency."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billing import ApiKeyService, Billing
from segmentation import ClipEngine
from sync.assets import AssetService, CaptureService, ScreenService
from sync.hub import Hub, SyncGateway
from sync.pairing import PairingService
from sync.storage import ObjectStore

from .readiness import Readiness
from .settings import Settings
from .warmup import WarmingEngine


@dataclass
class Services:
    settings: Settings
    database: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    keys: ApiKeyService
    clipper: WarmingEngine  # the ClipEngine, once its model has loaded (api.warmup)
    store: ObjectStore
    assets: AssetService
    screens: ScreenService
    captures: CaptureService
    pairings: PairingService
    hub: Hub
    live: SyncGateway  # this process's /v1/sync sessions
    billing: Billing  # keys (the same object as ``keys``), credits, rate limits, Stripe
    readiness: Readiness
