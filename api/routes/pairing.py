"""Pairing routes and the ``/v1/sync`` websocket: thin shells over ``sync.pairing`` and ``sync.hub``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response, WebSocket
from fastapi.websockets import WebSocketDisconnect
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketState

from sync.hub import SocketClosed
from sync.pairing import Device, PairingError, PairingNotFound

from ..deps import (
    DesktopDep,
    DeviceDep,
    LiveDep,
    PairingsDep,
    SettingsDep,
    bearer_token,
)
from ..errors import ws_close_code
from ..openapi import DEVICE_PROBLEMS, NO_STORE_HEADER, link, merge, problem_responses
from ..settings import Settings

router = APIRouter(tags=["pairing"])

_NO_STORE = {"Cache-Control": "no-store"}  # responses that carry a token

# What a client does next with a pairing's answer (and what a fuzzer follows): the desktop's
# token and the code lead on to the rest of the device API.
_DESKTOP = {"query.token": "$response.body#/desktop_token", "path.pairing_id": "$response.body#/pairing_id"}
_OPENED_LINKS = {
    "claim": {**link("claimPairing", "The phone joins with the code."), "requestBody": {"code": "$response.body#/code"}},
    "get": link("getPairing", "The pairing, as the desktop sees it.", **_DESKTOP),
    "screen": link("putScreen", "The desktop sends its screen picture.", **_DESKTOP),
    "code": link("newPairingCode", "A fresh code for another phone.", **_DESKTOP),
}
_PHONE = {"query.token": "$response.body#/phone_token"}
_CLAIMED_LINKS = {
    "capture": link("createCapture", "The phone's cut.", **_PHONE),
    "get": link("getPairing", "The pairing, as the phone sees it.",
                **_PHONE, **{"path.pairing_id": "$response.body#/pairing_id"}),
}


class PairingOpened(BaseModel):
    pairing_id: str
    code: str = Field(description="Show it on the laptop; the phone types it or scans qr_url.")
    qr_url: str
    expires_at: datetime = Field(description="When the code lapses (and, unclaimed, the pairing with it).")
    desktop_token: str = Field(description="The companion's bearer token; shown only here.")
    device_id: str
    max_phones: int


class ClaimRequest(BaseModel):
    code: str = Field(min_length=1, max_length=64)


class PairingClaimed(BaseModel):
    pairing_id: str
    phone_token: str = Field(description="The phone's bearer token; shown only here.")
    device_id: str


class CodeIssued(BaseModel):
    code: str
    qr_url: str
    expires_at: datetime


class DeviceView(BaseModel):
    device_id: str
    role: Literal["phone", "desktop"]


class PairingView(BaseModel):
    pairing_id: str
    state: Literal["opened", "active", "closed", "expired"]
    created_at: datetime
    expires_at: datetime
    max_phones: int
    devices: list[DeviceView]


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _qr_url(request: Request, settings: Settings, code: str) -> str:
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    return f"{base}/capture?code={code}"


def _own(device: Device, pairing_id: str) -> None:
    if device.pairing_id != pairing_id:  # another pairing's id: its existence is not disclosed
        raise PairingNotFound("No such pairing.")


@router.post(
    "/v1/pairings",
    status_code=201,
    response_model=PairingOpened,
    operation_id="openPairing",
    responses=merge(
        {201: {"headers": NO_STORE_HEADER, "links": _OPENED_LINKS}},
        problem_responses(429, 503),
    ),
)
async def open_pairing(
    request: Request, response: Response, pairings: PairingsDep, settings: SettingsDep
) -> PairingOpened:
    """The companion opens a pairing and shows its code."""
    opened = await pairings.open(client=_client(request))
    response.headers.update(_NO_STORE)
    return PairingOpened(
        pairing_id=opened.pairing_id,
        code=opened.code,
        qr_url=_qr_url(request, settings, opened.code),
        expires_at=opened.expires_at,
        desktop_token=opened.desktop_token,
        device_id=opened.desktop.device_id,
        max_phones=pairings.config.max_phones,
    )


@router.post(
    "/v1/pairings/claim",
    status_code=201,
    response_model=PairingClaimed,
    operation_id="claimPairing",
    responses=merge(
        {201: {"headers": NO_STORE_HEADER, "links": _CLAIMED_LINKS}},
        problem_responses(400, 404, 409, 410, 413, 422, 429, 503),
    ),
)
async def claim_pairing(
    body: ClaimRequest, request: Request, response: Response, pairings: PairingsDep
) -> PairingClaimed:
    """The phone joins with the code; the desktop receives ``peer.joined``."""
    claimed = await pairings.claim(body.code, client=_client(request))
    response.headers.update(_NO_STORE)
    return PairingClaimed(
        pairing_id=claimed.pairing_id, phone_token=claimed.phone_token, device_id=claimed.phone.device_id
    )


@router.get(
    "/v1/pairings/{pairing_id}",
    response_model=PairingView,
    operation_id="getPairing",
    responses=problem_responses(*DEVICE_PROBLEMS),
)
async def get_pairing(pairing_id: str, device: DeviceDep, pairings: PairingsDep) -> PairingView:
    _own(device, pairing_id)
    info = await pairings.get(pairing_id)
    return PairingView.model_validate(info.to_json())


@router.post(
    "/v1/pairings/{pairing_id}/code",
    status_code=201,
    response_model=CodeIssued,
    operation_id="newPairingCode",
    responses=problem_responses(*DEVICE_PROBLEMS, 409),
)
async def new_code(
    pairing_id: str, request: Request, desktop: DesktopDep, pairings: PairingsDep, settings: SettingsDep
) -> CodeIssued:
    """A fresh code, to add another phone or replace one that lapsed; the previous unused code stops working."""
    _own(desktop, pairing_id)
    issued = await pairings.new_code(desktop)
    return CodeIssued(code=issued.code, qr_url=_qr_url(request, settings, issued.code), expires_at=issued.expires_at)


@router.delete(
    "/v1/pairings/{pairing_id}",
    status_code=204,
    response_class=Response,
    operation_id="unpair",
    responses=problem_responses(*DEVICE_PROBLEMS, 409),
)
async def unpair(pairing_id: str, device: DeviceDep, pairings: PairingsDep) -> Response:
    """The desktop closes the pairing (every token revoked, assets deleted); a phone removes only itself."""
    _own(device, pairing_id)
    await pairings.unpair(device)
    return Response(status_code=204)


class _StarletteSocket:
    """``sync.hub.Socket`` over a Starlette websocket: its disconnects become ``SocketClosed``."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def receive_text(self) -> str:
        try:
            message = await self._ws.receive()
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise SocketClosed(getattr(exc, "code", 1006)) from exc
        if message["type"] == "websocket.disconnect":
            raise SocketClosed(int(message.get("code") or 1005))
        if message.get("text") is not None:
            return str(message["text"])
        return (message.get("bytes") or b"").decode("utf-8", errors="replace")

    async def send_text(self, text: str) -> None:
        try:
            await self._ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise SocketClosed(getattr(exc, "code", 1006)) from exc

    async def close(self, code: int, reason: str = "") -> None:
        if self._ws.application_state is WebSocketState.CONNECTED:
            await self._ws.close(code, reason[:120])


@router.websocket("/v1/sync")
async def sync_socket(
    websocket: WebSocket,
    pairings: PairingsDep,
    live: LiveDep,
    token: Annotated[str | None, Query()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """Either device's live channel; the protocol is ``sync.hub.session``'s docstring.

    The socket is accepted before the token is checked, so a refusal reaches
    browsers as a close code they can read: 4401/4403/4410, never reconnect.
    """
    await websocket.accept()
    try:
        device = await pairings.authenticate(bearer_token(authorization) or token)
    except PairingError as exc:
        await websocket.close(ws_close_code(exc), exc.code)
        return
    await live.serve(_StarletteSocket(websocket), device)
