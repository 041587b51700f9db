"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Answers while the process lives."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """Ready when every backing service can do its part now (``api.readiness``); 503 with each one's status if not."""
    clipper = services.clipper
    checks = await services.readiness.check()
    ready = all(check.ok for check in checks.values())
    body = {
        "status": "ready" if ready else "not_ready",
        "model": checks["inference"].detail.get("model"),
        "provider": clipper.model.provider,
        "precision": getattr(clipper.model, "precision", "fp32"),
        "extra_passes": list(clipper.config.extra_passes),
        "max_batch": clipper.batcher.max_batch,
        "queue": {"admitted": clipper.queued, "capacity": clipper.config.max_queue},
        **{name: check.to_json() for name, check in checks.items()},
    }
    headers = {} if ready else {"Retry-After": "5"}
    return JSONResponse(body, status_code=200 if ready else 503, headers=headers)
