"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Answers while the process lives, from the first moment (the model may still be loading)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """``ready`` when every backing service can do its part now (``api.readiness``); else 503 with each one's status:
    ``starting`` while the model loads, ``not_ready`` when a service fails."""
    checks = await services.readiness.check()
    body: dict[str, Any] = {}
    if all(check.ok for check in checks.values()):
        body["status"] = "ready"
    elif all(check.ok or check.status == "starting" for check in checks.values()):
        body["status"] = "starting"
    else:
        body["status"] = "not_ready"
    clipper = services.clipper
    if clipper.ready:
        body.update(
            model=checks["inference"].detail.get("model"),
            provider=clipper.model.provider,
            precision=getattr(clipper.model, "precision", "fp32"),
            extra_passes=list(clipper.config.extra_passes),
            max_batch=clipper.batcher.max_batch,
            queue={"admitted": clipper.queued, "capacity": clipper.config.max_queue},
        )
    body.update({name: check.to_json() for name, check in checks.items()})
    ready = body["status"] == "ready"
    return JSONResponse(body, status_code=200 if ready else 503, headers={} if ready else {"Retry-After": "5"})
