"""Pure ASGI middleware: request ids, the request-body size limit, rate-limit fields, fault answers."""

from __future__ import annotations

import logging
import math
import re
import secrets

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billing import Decision

from segmentation.units import describe_bytes

from .errors import BodyTooLarge, fault_problem, internal_problem, problem_response
from .faults import WS_INTERNAL_ERROR, WS_TRY_AGAIN_LATER, Fault, classify_fault, describe

log = logging.getLogger("arclip.api")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RequestIdMiddleware:
    """Every response carries ``X-Request-Id`` (the client's, if sane, or a new one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else "req_" + secrets.token_hex(12)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        await self.app(scope, receive, send_with_id)


class HeaderLimitMiddleware:
    """Refuse a request whose header fields add up to more than ``max_bytes``: 431, before any work.

    uvicorn's httptools parser sets no limit of its own, and every header is held in
    memory and looked at by the app (keys, tokens, request ids).
    """

    def __init__(self, app: ASGIApp, max_bytes: int = 64 * 1024) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.max_bytes:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1009, "reason": "headers_too_large"})
                    return
                response = problem_response(
                    431, "headers_too_large",
                    f"The request's header fields add up to more than {self.max_bytes // 1024} KiB.",
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413 before buffering them.

    A declared Content-Length over the limit is answered at once without
    reading a byte; a chunked body is counted as it streams and cut off.
    ``framing`` more bytes are let through for what wraps the content (multipart
    boundaries and fields); messages state the limit on the content itself.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, framing: int = 0) -> None:
        self.app = app
        self.stated = max_bytes
        self.max_bytes = max_bytes + framing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            response = problem_response(
                413, "payload_too_large", f"The request body is larger than the {describe_bytes(self.stated)} limit.",
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.stated)
            return message

        await self.app(scope, counting_receive, send)


def ratelimit_fields(decision: Decision) -> list[tuple[bytes, bytes]]:
    """The IETF ``RateLimit-Policy`` and ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers).

    Two policies: ``"rate"``, the token bucket (quota = the burst, window = the seconds
    an empty bucket takes to refill), and ``"concurrency"``, requests at once.
    """
    limit = decision.limit
    window = max(1, math.ceil(limit.window))
    policy = f'"rate";q={limit.burst};w={window}, "concurrency";q={limit.concurrency};qu="concurrency"'
    running = decision.in_flight if decision.allowed else limit.concurrency if decision.reason == "concurrency" else 0
    state = (
        f'"rate";r={max(0, decision.remaining)};t={max(0, math.ceil(decision.reset))}, '
        f'"concurrency";r={max(0, limit.concurrency - running)}'
    )
    return [(b"ratelimit-policy", policy.encode()), (b"ratelimit", state.encode())]


class RateLimitHeadersMiddleware:
    """Add the rate-limit fields to every response of a request the limiter saw.

    The key's dependency leaves its ``Decision`` in ``scope["state"]["ratelimit"]``,
    so errors raised after it (402, 422, 429 …) carry the fields as successes do.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision = state.get("ratelimit")
                if isinstance(decision, Decision):
                    message.setdefault("headers", []).extend(ratelimit_fields(decision))
            await send(message)

        await self.app(scope, receive, send_with_limits)


class FaultMiddleware:
    """Answer whatever escapes the routes: a fault (``api.faults``) is 503 or close 1013, a bug 500 or 1011.

    It sits inside the request-id and rate-limit middleware, so its answers carry
    their fields, and it does not re-raise: the server keeps a keep-alive
    connection open, as after any other error answer. An error after the
    response has started cannot be answered; it propagates (the server aborts it).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        answered = False

        async def tracking_send(message: Message) -> None:
            nonlocal answered
            if message["type"] in ("http.response.start", "websocket.close", "websocket.http.response.start"):
                answered = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            log.info("%s %s: the client went away before its request was read", scope["type"], scope.get("path"))
        except Exception as exc:
            fault = classify_fault(exc)
            if fault is not None:
                log.warning("%s %s: %s (%s)", scope["type"], scope.get("path"), fault.code, describe(exc))
            else:
                log.error("unhandled error on %s %s", scope["type"], scope.get("path"), exc_info=exc)
            if scope["type"] == "websocket":
                if not answered:
                    await _close_websocket(send, fault)
                return
            if answered:
                raise
            response = fault_problem(fault) if fault is not None else internal_problem()
            await response(scope, receive, send)


async def _close_websocket(send: Send, fault: Fault | None) -> None:
    code, reason = (WS_TRY_AGAIN_LATER, fault.code) if fault is not None else (WS_INTERNAL_ERROR, "internal_error")
    try:
        await send({"type": "websocket.close", "code": code, "reason": reason})
    except Exception:  # noqa: BLE001 - the client has already gone
        log.debug("websocket gone before its close frame")
