"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ..deps import ServicesDep

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
        "max_batch": clipper.batcher.max_batch,
        "queue": {"admitted": clipper.queued, "capacity": clipper.config.max_queue},
    }
    try:
        async with services.database.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
        ready = True
    except Exception as exc:  # any driver error means "not ready", with the reason
        checks["database"] = f"error: {exc.__class__.__name__}"
        ready = False
    return JSONResponse({"status": "ready" if ready else "not_ready", **checks}, status_code=200 if ready else 503)
