"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from ..deps import ServicesDep
from ..errors import problem_response
from ..openapi import problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Answers while the process lives, from the first moment (the model may still be loading)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {"description": "Ready: every backing service can do its part now."},
        **problem_responses(503),
    },
)
async def readyz(services: ServicesDep) -> Response:
    """``ready`` when every backing service can do its part now (``api.readiness``); else a 503 problem whose
    ``code`` is ``starting`` (the model is loading) or ``not_ready``, with each service's status beside it."""
    checks = await services.readiness.check()
    body: dict[str, Any] = {}
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
    if all(check.ok for check in checks.values()):
        return JSONResponse({"status": "ready", **body})
    failing = sorted(name for name, check in checks.items() if not check.ok)
    if all(check.ok or check.status == "starting" for check in checks.values()):
        code, detail = "starting", "The model is still loading; this replica is not ready yet."
    else:
        code, detail = "not_ready", f"Not ready: {', '.join(failing)} failing."
    return problem_response(503, code, detail, {"Retry-After": "5"}, **body)
