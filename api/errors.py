"""problem+json (RFC 9457) for every error, with a stable machine-readable ``code``.

Domain exceptions from segmentation and billing are mapped here, at the edge;
the packages themselves know nothing of HTTP.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing import errors as billing_errors
from segmentation import errors as seg_errors

log = logging.getLogger("arclip.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ApiProblem(Exception):
    """An error raised by the API layer itself."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class BodyTooLarge(ApiProblem):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"The request body is larger than the {limit}-byte limit.")


def problem_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"https://arclip.dev/problems/{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


# Most specific first: the first isinstance match wins.
_SEGMENTATION_STATUS: list[tuple[type[seg_errors.SegmentationError], int]] = [
    (seg_errors.EmptyImage, 400),
    (seg_errors.UnreadableImage, 400),
    (seg_errors.UnsupportedMediaType, 415),
    (seg_errors.ImageTooLarge, 413),
    (seg_errors.InvalidOption, 422),
    (seg_errors.Overloaded, 503),
    (seg_errors.InputError, 400),
]

_BILLING_STATUS: list[tuple[type[billing_errors.BillingError], int]] = [
    (billing_errors.MissingApiKey, 401),
    (billing_errors.InvalidApiKey, 403),
    (billing_errors.RevokedApiKey, 403),
    (billing_errors.ApiKeyNotFound, 404),
]


def _status_for(exc: Exception, table: list[tuple[type, int]]) -> int:
    return next((status for kind, status in table if isinstance(exc, kind)), 500)


async def _api_problem(_: Request, exc: ApiProblem) -> JSONResponse:
    return problem_response(exc.status, exc.code, exc.detail, exc.headers, **exc.extra)


async def _segmentation_error(_: Request, exc: seg_errors.SegmentationError) -> JSONResponse:
    status = _status_for(exc, _SEGMENTATION_STATUS)
    headers = {}
    if isinstance(exc, seg_errors.Overloaded):
        headers["Retry-After"] = str(int(exc.retry_after))
    if status == 500:
        log.error("segmentation failed: %s", exc.detail)
        return problem_response(500, "internal_error", "The image could not be processed.")
    return problem_response(status, exc.code, exc.detail, headers)


async def _billing_error(_: Request, exc: billing_errors.BillingError) -> JSONResponse:
    status = _status_for(exc, _BILLING_STATUS)
    return problem_response(status, exc.code, exc.detail)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, f"http_{exc.status_code}")
    return problem_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return problem_response(422, "invalid_parameter", f"{where}: {first['msg']}", errors=errors)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return problem_response(500, "internal_error", "Something went wrong on our side; it was not charged.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiProblem, _api_problem)  # type: ignore[arg-type]
    app.add_exception_handler(seg_errors.SegmentationError, _segmentation_error)  # type: ignore[arg-type]
    app.add_exception_handler(billing_errors.BillingError, _billing_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
