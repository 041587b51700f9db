"""A local Stripe for tests, on loopback only: ``localstripe`` behind a small stub.

``localstripe`` (PyPI) runs as a subprocess and serves what it implements (customers,
subscriptions, invoices …). ``StripeStub`` is the address the SDK is given: it serves
what localstripe lacks — Checkout Sessions and Billing Meter events — and forwards
everything else to localstripe. The stub can fail on purpose (``fail_meter_events``)
to stand for a Stripe outage.

Nothing here ever talks to an address outside 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.processes import stop_process

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {LOOPBACK}:{port}")


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header exactly as Stripe computes it (HMAC-SHA256 of ``t.payload``)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(kind: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None) -> dict[str, Any]:
    return {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "object": "event",
        "api_version": "2025-01-27.acacia",
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "pending_webhooks": 1,
        "type": kind,
        "data": {"object": obj},
    }


# localstripe, with its store kept in memory only (it pickles to /tmp by default)
# and bound to loopback (it binds every interface by default).
_LOCALSTRIPE = """
import sys
from aiohttp import web
import localstripe.server as server
type(server.store).dump_to_disk = lambda self: None
web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


class LocalStripe:
    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> LocalStripe:
        for _ in range(3):
            self.port = free_port()
            self.process = subprocess.Popen(
                [sys.executable, "-c", _LOCALSTRIPE, str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                wait_for_port(self.port, process=self.process)
                return self
            except RuntimeError:
                self.stop()
        raise RuntimeError("localstripe did not start")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None


def _form(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode(), keep_blank_values=True))


def _error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    return JSONResponse({"error": error}, status_code=status)


@dataclass
class StripeStub:
    """Checkout Sessions and Billing Meter events; the rest goes to localstripe."""

    upstream: str
    port: int = 0
    meter_events: list[dict[str, Any]] = field(default_factory=list)  # accepted, in order
    meter_attempts: int = 0
    fail_meter_events: int = 0  # answer this many meter event requests with a 500
    down: bool = False  # every request 503 (an outage)
    checkout_sessions: list[dict[str, str]] = field(default_factory=list)
    _idempotent: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.meter_events.clear()
            self.checkout_sessions.clear()
            self._idempotent.clear()
            self.meter_attempts = 0
            self.fail_meter_events = 0
            self.down = False

    async def _meter_event(self, request: Request) -> Response:
        body = _form(await request.body())
        with self._lock:
            self.meter_attempts += 1
            if self.fail_meter_events > 0:
                self.fail_meter_events -= 1
                return _error(500, "An unknown error occurred", kind="api_error")
            key = request.headers.get("idempotency-key")
            if key and key in self._idempotent:
                status, content = self._idempotent[key]
                return Response(content, status_code=status, media_type="application/json")
        for name in ("event_name", "identifier", "payload[stripe_customer_id]", "payload[value]"):
            if not body.get(name):
                return _error(400, f"Missing required param: {name}.", code="parameter_missing")
        if not body["payload[value]"].isdigit():
            return _error(400, "The numerical usage value in the payload only accepts whole number values.")
        # The customer must exist (in localstripe).
        async with httpx.AsyncClient(base_url=self.upstream) as client:
            found = await client.get(
                f"/v1/customers/{body['payload[stripe_customer_id]']}",
                headers={"Authorization": request.headers.get("authorization", "")},
            )
        if found.status_code != 200:
            return _error(400, "No such customer", code="resource_missing")
        with self._lock:
            if any(e["identifier"] == body["identifier"] for e in self.meter_events):
                return _error(
                    400, f"An event with identifier {body['identifier']} already exists.", code="resource_already_exists"
                )
            created = {
                "object": "billing.meter_event",
                "created": int(time.time()),
                "event_name": body["event_name"],
                "identifier": body["identifier"],
                "livemode": False,
                "payload": {
                    "stripe_customer_id": body["payload[stripe_customer_id]"],
                    "value": body["payload[value]"],
                },
                "timestamp": int(body.get("timestamp") or time.time()),
            }
            self.meter_events.append(created)
            content = json.dumps(created).encode()
            if key:
                self._idempotent[key] = (200, content)
        return Response(content, media_type="application/json")

    async def _checkout_session(self, request: Request) -> Response:
        body = _form(await request.body())
        for name in ("mode", "success_url", "line_items[0][quantity]" if body.get("mode") == "payment" else "mode"):
            if not body.get(name):
                return _error(400, f"Missing required param: {name}.", code="parameter_missing")
        session_id = "cs_test_" + secrets.token_hex(12)
        with self._lock:
            self.checkout_sessions.append(body)
        metadata = {k[len("metadata[") : -1]: v for k, v in body.items() if k.startswith("metadata[")}
        return JSONResponse(
            {
                "id": session_id,
                "object": "checkout.session",
                "mode": body["mode"],
                "customer": body.get("customer"),
                "client_reference_id": body.get("client_reference_id"),
                "metadata": metadata,
                "payment_status": "unpaid",
                "status": "open",
                "url": f"https://checkout.stripe.invalid/c/pay/{session_id}",
            }
        )

    async def _proxy(self, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with httpx.AsyncClient(base_url=self.upstream, timeout=10) as client:
            upstream = await client.request(
                request.method, request.url.path, params=request.query_params, content=await request.body(),
                headers=headers,
            )
        return Response(upstream.content, status_code=upstream.status_code, media_type="application/json")

    async def _dispatch(self, request: Request) -> Response:
        if self.down:
            return _error(503, "Stripe is down (test outage).", kind="api_error")
        path = request.url.path
        if request.method == "POST" and path == "/v1/billing/meter_events":
            return await self._meter_event(request)
        if request.method == "POST" and path == "/v1/checkout/sessions":
            return await self._checkout_session(request)
        return await self._proxy(request)

    def start(self) -> StripeStub:
        app = Starlette(routes=[Route("/{path:path}", self._dispatch, methods=["GET", "POST", "DELETE"])])
        self.port = free_port()
        config = uvicorn.Config(app, host=LOOPBACK, port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve()), daemon=True)
        self._thread.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


@dataclass
class LocalStripeServers:
    localstripe: LocalStripe
    stub: StripeStub

    @property
    def url(self) -> str:
        """The address to give the SDK."""
        return self.stub.url
