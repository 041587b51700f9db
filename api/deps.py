"""FastAPI dependencies: the lifespan's clients, handed to routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from billing import ApiKeyService, KeyInfo
from segmentation import ClipEngine

from .services import Services
from .settings import Settings


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_clipper(services: ServicesDep) -> ClipEngine:
    return services.clipper


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
