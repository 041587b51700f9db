"""problem+json (RFC 9457) for every error, with a stable machine-readable ``code``.

Domain exceptions from segmentation and billing are mapped here, at the edge;
the packages themselves know nothing of HTTP.
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing import errors as billing_errors
from segmentation import errors as seg_errors
from sync.assets import errors as asset_errors
from sync.assets import idempotency as capture_keys
from sync.hub import errors as hub_errors
from sync.pairing import errors as pairing_errors
from sync.storage import errors as storage_errors

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
        # Connection: close, so the server drops the rest of the body instead of
        # waiting to drain it (uvicorn keeps an unfinished request's socket open otherwise).
        super().__init__(
            413,
            "payload_too_large",
            f"The request body is larger than the {limit}-byte limit.",
            headers={"Connection": "close"},
        )


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
    (billing_errors.AccountNotFound, 404),
    (billing_errors.InsufficientScope, 403),
    (billing_errors.AccountSuspended, 402),
    (billing_errors.InsufficientCredits, 402),
    (billing_errors.RateLimited, 429),
    (billing_errors.IdempotencyKeyMismatch, 422),  # Stripe: 400 idempotency_error; ours is a bad parameter
    (billing_errors.IdempotencyKeyInUse, 409),  # the first request still runs
    (billing_errors.InvalidIdempotencyKey, 422),
    (billing_errors.UnknownPlan, 422),
    (billing_errors.UnknownPack, 422),
    (billing_errors.InvalidAmount, 422),
    (billing_errors.InvalidWebhook, 400),
    (billing_errors.PaymentsNotConfigured, 503),
    (billing_errors.PaymentsUnavailable, 503),
    (billing_errors.PaymentsError, 502),
]


_ASSET_STATUS: list[tuple[type[asset_errors.AssetError], int]] = [
    (asset_errors.AssetNotFound, 404),  # also another pairing's asset: existence is not disclosed
    (asset_errors.SignatureError, 403),
    (asset_errors.NoScreen, 409),
    (asset_errors.InvalidScreen, 422),
    (asset_errors.ScreenNotLocated, 422),
    (asset_errors.LocatorBusy, 503),
    (capture_keys.IdempotencyKeyMismatch, 422),  # as /v1/clip's: the same key for another photo
    (capture_keys.IdempotencyKeyInUse, 409),  # the first capture with it still runs
    (capture_keys.InvalidIdempotencyKey, 422),
]


_PAIRING_STATUS: list[tuple[type[pairing_errors.PairingError], int]] = [
    (pairing_errors.MissingToken, 401),
    (pairing_errors.InvalidToken, 403),
    (pairing_errors.RevokedToken, 403),
    (pairing_errors.WrongRole, 403),
    (pairing_errors.PairingNotFound, 404),
    (pairing_errors.InvalidCode, 404),
    (pairing_errors.MalformedCode, 422),
    (pairing_errors.CodeExpired, 410),
    (pairing_errors.CodeUsed, 410),
    (pairing_errors.PairingClosed, 410),
    (pairing_errors.PairingFull, 409),
    (pairing_errors.IllegalTransition, 409),
    (pairing_errors.TooManyAttempts, 429),
    (pairing_errors.PairingUnavailable, 503),
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
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(exc, (billing_errors.RateLimited, billing_errors.IdempotencyKeyInUse)):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, billing_errors.RateLimited):
        extra["limit"] = exc.reason
    if isinstance(exc, billing_errors.InsufficientCredits):
        extra["credits_required"] = exc.required / 1000
        extra["credits_remaining"] = exc.remaining / 1000
    if isinstance(exc, billing_errors.InsufficientScope):
        extra["scope"] = exc.scope
    if isinstance(exc, billing_errors.PaymentsUnavailable):
        log.warning("stripe unavailable: %s", exc.detail)
        headers["Retry-After"] = "10"
    elif isinstance(exc, billing_errors.PaymentsError):
        log.error("stripe refused: %s", exc.detail)
    if status == 500:
        log.error("billing error: %s", exc.detail)
        return problem_response(500, "internal_error", "Something went wrong on our side; it was not charged.")
    return problem_response(status, exc.code, exc.detail, headers, **extra)


async def _asset_error(_: Request, exc: asset_errors.AssetError) -> JSONResponse:
    status = _status_for(exc, _ASSET_STATUS)
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, (asset_errors.ScreenNotLocated, asset_errors.NoScreen)):
        extra["hint"] = exc.hint
    if isinstance(exc, asset_errors.ScreenNotLocated):
        extra["confidence"] = exc.confidence
    if isinstance(exc, (asset_errors.LocatorBusy, capture_keys.IdempotencyKeyInUse)):
        headers["Retry-After"] = str(int(exc.retry_after))
    if status == 500:
        log.error("asset error: %s", exc.detail)
        return problem_response(500, "internal_error", "Something went wrong on our side.")
    return problem_response(status, exc.code, exc.detail, headers, **extra)


async def _storage_error(_: Request, exc: storage_errors.StorageError) -> JSONResponse:
    if isinstance(exc, storage_errors.StorageUnavailable):
        log.warning("storage unavailable: %s", exc.detail)
        return problem_response(
            503, exc.code, "Storage is unavailable right now; retry shortly.", {"Retry-After": "5"}
        )
    log.error("storage error: %s", exc.detail)  # a key or set-up bug of ours, never the caller's fault
    return problem_response(500, "internal_error", "Something went wrong on our side.")


def ws_close_code(exc: pairing_errors.PairingError) -> int:
    """The websocket close code for a refused ``/v1/sync``: 4000 + the HTTP status (1013 when unavailable)."""
    status = _status_for(exc, _PAIRING_STATUS)
    if status == 503:
        return 1013
    return 4000 + status if 400 <= status < 500 else 1011


async def _pairing_error(_: Request, exc: pairing_errors.PairingError) -> JSONResponse:
    status = _status_for(exc, _PAIRING_STATUS)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="arclip"'
    if isinstance(exc, pairing_errors.TooManyAttempts):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, pairing_errors.PairingUnavailable):
        headers["Retry-After"] = "5"
    if isinstance(exc, pairing_errors.PairingClosed):
        extra["state"] = exc.state
    if status == 500:
        log.error("pairing error: %s", exc.detail)
        return problem_response(500, "internal_error", "Something went wrong on our side.")
    return problem_response(status, exc.code, exc.detail, headers, **extra)


async def _hub_error(_: Request, exc: hub_errors.HubError) -> JSONResponse:
    if isinstance(exc, hub_errors.HubUnavailable):
        log.warning("hub unavailable: %s", exc.detail)
        return problem_response(503, exc.code, "Live sync is unavailable right now; retry shortly.", {"Retry-After": "2"})
    log.error("hub error: %s", exc.detail)
    return problem_response(500, "internal_error", "Something went wrong on our side.")


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, f"http_{exc.status_code}")
    return problem_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return problem_response(422, "invalid_parameter", f"{where}: {first['msg']}", errors=errors)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    # Starlette answers unhandled errors from outside every middleware, so
    # RequestIdMiddleware never sees this response: add the id it chose here.
    request_id = request.scope.get("state", {}).get("request_id")
    headers = {"X-Request-Id": request_id} if request_id else None
    return problem_response(
        500, "internal_error", "Something went wrong on our side; it was not charged.", headers
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiProblem, _api_problem)  # type: ignore[arg-type]
    app.add_exception_handler(seg_errors.SegmentationError, _segmentation_error)  # type: ignore[arg-type]
    app.add_exception_handler(billing_errors.BillingError, _billing_error)  # type: ignore[arg-type]
    app.add_exception_handler(asset_errors.AssetError, _asset_error)  # type: ignore[arg-type]
    app.add_exception_handler(storage_errors.StorageError, _storage_error)  # type: ignore[arg-type]
    app.add_exception_handler(pairing_errors.PairingError, _pairing_error)  # type: ignore[arg-type]
    app.add_exception_handler(hub_errors.HubError, _hub_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
