"""problem+json (RFC 9457) for every error, with a stable machine-readable ``code``.

Domain exceptions from segmentation and billing are mapped here, at the edge;
the packages themselves know nothing of HTTP.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing import errors as billing_errors
from segmentation import errors as seg_errors
from segmentation.errors import echo
from segmentation.units import describe_bytes
from sync.assets import errors as asset_errors
from sync.assets import idempotency as capture_keys
from sync.hub import errors as hub_errors
from sync.pairing import errors as pairing_errors
from sync.storage import errors as storage_errors

from .faults import WS_TRY_AGAIN_LATER, Fault, classify_fault, describe

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
            f"The request body is larger than the {describe_bytes(limit)} limit.",
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


def fault_problem(fault: Fault) -> JSONResponse:
    """A backing service failed: 503 with its stable code and ``Retry-After``; never charged."""
    return problem_response(
        503, fault.code, f"{fault.detail} It was not charged.", {"Retry-After": str(fault.retry_after)}
    )


def internal_problem() -> JSONResponse:
    return problem_response(500, "internal_error", "Something went wrong on our side; it was not charged.")


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


def _bug(what: str, exc: Exception) -> JSONResponse:
    """An error of ours that is neither the caller's nor a fault: logged, answered 500, never charged."""
    log.error("%s: %s", what, getattr(exc, "detail", exc))
    return internal_problem()


async def _api_problem(_: Request, exc: ApiProblem) -> JSONResponse:
    return problem_response(exc.status, exc.code, exc.detail, exc.headers, **exc.extra)


async def _segmentation_error(_: Request, exc: seg_errors.SegmentationError) -> JSONResponse:
    status = _status_for(exc, _SEGMENTATION_STATUS)
    if status == 500:
        return _bug("segmentation failed", exc)
    return problem_response(status, exc.code, exc.detail)


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
    if isinstance(exc, billing_errors.PaymentsError):
        log.error("stripe refused: %s", exc.detail)
    if status == 500:
        return _bug("billing error", exc)
    return problem_response(status, exc.code, exc.detail, headers, **extra)


async def _asset_error(_: Request, exc: asset_errors.AssetError) -> JSONResponse:
    status = _status_for(exc, _ASSET_STATUS)
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, (asset_errors.ScreenNotLocated, asset_errors.NoScreen)):
        extra["hint"] = exc.hint
    if isinstance(exc, asset_errors.ScreenNotLocated):
        extra["confidence"] = exc.confidence
    if isinstance(exc, capture_keys.IdempotencyKeyInUse):
        headers["Retry-After"] = str(int(exc.retry_after))
    if status == 500:
        return _bug("asset error", exc)
    return problem_response(status, exc.code, exc.detail, headers, **extra)


async def _storage_error(_: Request, exc: storage_errors.StorageError) -> JSONResponse:
    return _bug("storage error", exc)  # a key or set-up bug of ours, never the caller's fault


def ws_close_code(exc: pairing_errors.PairingError) -> int:
    """The websocket close code for a refused ``/v1/sync``: 4000 + the HTTP status (1013 when unavailable)."""
    if classify_fault(exc) is not None:
        return WS_TRY_AGAIN_LATER
    status = _status_for(exc, _PAIRING_STATUS)
    return 4000 + status if 400 <= status < 500 else 1011


async def _pairing_error(_: Request, exc: pairing_errors.PairingError) -> JSONResponse:
    status = _status_for(exc, _PAIRING_STATUS)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="arclip"'
    if isinstance(exc, pairing_errors.TooManyAttempts):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, pairing_errors.PairingClosed):
        extra["state"] = exc.state
    if status == 500:
        return _bug("pairing error", exc)
    return problem_response(status, exc.code, exc.detail, headers, **extra)


async def _hub_error(_: Request, exc: hub_errors.HubError) -> JSONResponse:
    return _bug("hub error", exc)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and exc.__cause__ is not None:
        # FastAPI could not parse the body at all (a JSON nested too deep for the parser, a broken
        # form): the same answer as for any other body its parser refuses.
        if request.headers.get("content-type", "").lower().startswith("multipart/"):
            return problem_response(400, "malformed_multipart", "The multipart body cannot be parsed.")
        return problem_response(422, "invalid_parameter", "The request body cannot be parsed.")
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, f"http_{exc.status_code}")
    return problem_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    # Locations can hold names the client chose (keys of its JSON): bounded, like every echo.
    errors = [
        {"loc": [echo(part) if isinstance(part, str) else part for part in e.get("loc", ())], "msg": echo(e.get("msg", ""))}
        for e in exc.errors()[:10]
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return problem_response(422, "invalid_parameter", f"{where}: {first['msg']}", errors=errors)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Only what escapes FaultMiddleware gets here (an error in the outer middleware).
    # Starlette answers it from outside every middleware, so RequestIdMiddleware
    # never sees this response: add the id it chose here.
    log.exception("unhandled error", exc_info=exc)
    request_id = request.scope.get("state", {}).get("request_id")
    response = internal_problem()
    if request_id:
        response.headers["X-Request-Id"] = request_id
    return response


Handler = Callable[[Request, Any], Awaitable[Response]]


def _faults_first(handler: Handler) -> Handler:
    """A domain error that stands for a fault (``StorageUnavailable`` …) is answered as one: 503, in one place."""

    async def handle(request: Request, exc: Exception) -> Response:
        fault = classify_fault(exc)
        if fault is not None:
            log.warning("%s %s: %s (%s)", request.method, request.url.path, fault.code, describe(exc))
            return fault_problem(fault)
        return await handler(request, exc)

    return handle


def install_error_handlers(app: FastAPI) -> None:
    domain: list[tuple[type[Exception], Handler]] = [
        (ApiProblem, _api_problem),
        (seg_errors.SegmentationError, _segmentation_error),
        (billing_errors.BillingError, _billing_error),
        (asset_errors.AssetError, _asset_error),
        (storage_errors.StorageError, _storage_error),
        (pairing_errors.PairingError, _pairing_error),
        (hub_errors.HubError, _hub_error),
        (StarletteHTTPException, _http_error),
        (RequestValidationError, _validation_error),
    ]
    for kind, handler in domain:
        app.add_exception_handler(kind, _faults_first(handler))
    # Everything else (vendor errors such as SQLAlchemy's or Redis's, and bugs) is
    # answered by FaultMiddleware; this is the last resort behind it.
    app.add_exception_handler(Exception, _unexpected)
