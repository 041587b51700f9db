"""Liveness and readiness."""

from __future__ import annotations

from collections.abc import Awaitable

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ..deps import ServicesDep
from ..services import Services

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    clipper = services.clipper
    checks: dict[str, object] = {
        "model": getattr(getattr(clipper.model, "spec", None), "name", clipper.model.preset.family),
        "provider": clipper.model.provider,
        "precision": getattr(clipper.model, "precision", "fp32"),
        "extra_passes": list(clipper.config.extra_passes),
        "max_batch": clipper.batcher.max_batch,
        "queue": {"admitted": clipper.queued, "capacity": clipper.config.max_queue},
    }
    database_ok = await _check(checks, "database", _ping_database(services))
    # A HEAD on S3 (a stat on local disk) proves the store answers and the credentials work.
    storage_ok = await _check(checks, "storage", services.store.exists("readyz/probe"))
    ready = database_ok and storage_ok
    return JSONResponse({"status": "ready" if ready else "not_ready", **checks}, status_code=200 if ready else 503)


async def _ping_database(services: Services) -> None:
    async with services.database.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _check(checks: dict[str, object], name: str, probe: Awaitable[object]) -> bool:
    try:
        await probe
    except Exception as exc:  # any driver or storage error means "not ready", with the reason
        checks[name] = f"error: {exc.__class__.__name__}"
        return False
    checks[name] = "ok"
    return True
