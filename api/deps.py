"""FastAPI dependencies: the lifespan's clients, handed to routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Query
from starlette.requests import HTTPConnection, Request

from billing import ApiKeyService, Billing, KeyInfo, RateLimited
from segmentation import ClipEngine
from sync.assets import AssetService, CaptureService, ScreenService
from sync.hub import Hub, SyncGateway
from sync.pairing import Device, PairingService

from .services import Services
from .settings import Settings


def get_services(connection: HTTPConnection) -> Services:
    # HTTPConnection, not Request: websocket routes use these dependencies too.
    return connection.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_clipper(services: ServicesDep) -> ClipEngine:
    return services.clipper.engine  # EngineStarting (503 starting) while the model loads


def get_keys(services: ServicesDep) -> ApiKeyService:
    return services.keys


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClipperDep = Annotated[ClipEngine, Depends(get_clipper)]
KeysDep = Annotated[ApiKeyService, Depends(get_keys)]


async def current_key(
    keys: KeysDep, x_api_key: Annotated[str | None, Header(alias="X-Api-Key")] = None
) -> KeyInfo:
    return await keys.authenticate(x_api_key)


ApiKeyDep = Annotated[KeyInfo, Depends(current_key)]


def get_billing(services: ServicesDep) -> Billing:
    return services.billing


BillingDep = Annotated[Billing, Depends(get_billing)]


def metered_key(scope: str) -> Callable[..., Any]:
    """The public API's key dependency: authenticated, holding ``scope``, admitted by its rate limits.

    The limiter's decision is left in the request state for the rate-limit fields of the
    response (``RateLimitHeadersMiddleware``); the concurrency slot is given back after it.
    """

    async def dependency(
        request: Request, billing: BillingDep, x_api_key: Annotated[str | None, Header(alias="X-Api-Key")] = None
    ) -> AsyncIterator[KeyInfo]:
        key = (await billing.keys.authenticate(x_api_key)).require(scope)
        state = request.scope.setdefault("state", {})
        try:
            decision = await billing.limiter.acquire(key.id, billing.limit_for(key))
        except RateLimited as exc:
            state["ratelimit"] = exc.decision
            raise
        state["ratelimit"] = decision
        try:
            yield key
        finally:
            await billing.limiter.release(decision)

    return dependency


ClipKeyDep = Annotated[KeyInfo, Depends(metered_key("clip"))]
AccountKeyDep = Annotated[KeyInfo, Depends(metered_key("account:read"))]
AccountWriteKeyDep = Annotated[KeyInfo, Depends(metered_key("account:write"))]


def get_assets(services: ServicesDep) -> AssetService:
    return services.assets


def get_screens(services: ServicesDep) -> ScreenService:
    return services.screens


def get_captures(services: ServicesDep) -> CaptureService:
    return services.captures


AssetsDep = Annotated[AssetService, Depends(get_assets)]
ScreensDep = Annotated[ScreenService, Depends(get_screens)]
CapturesDep = Annotated[CaptureService, Depends(get_captures)]


def get_pairings(services: ServicesDep) -> PairingService:
    return services.pairings


def get_hub(services: ServicesDep) -> Hub:
    return services.hub


def get_live(services: ServicesDep) -> SyncGateway:
    return services.live


PairingsDep = Annotated[PairingService, Depends(get_pairings)]
HubDep = Annotated[Hub, Depends(get_hub)]
LiveDep = Annotated[SyncGateway, Depends(get_live)]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def current_device(
    pairings: PairingsDep,
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(description="device token, where a header cannot be sent")] = None,
) -> Device:
    """The device behind ``Authorization: Bearer TOKEN`` (or ``?token=`` for websockets and plain GETs)."""
    return await pairings.authenticate(bearer_token(authorization) or token)


DeviceDep = Annotated[Device, Depends(current_device)]


async def current_phone(device: DeviceDep) -> Device:
    return device.require("phone")


async def current_desktop(device: DeviceDep) -> Device:
    return device.require("desktop")


PhoneDep = Annotated[Device, Depends(current_phone)]
DesktopDep = Annotated[Device, Depends(current_desktop)]
