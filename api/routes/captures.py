"""The cut and the paste (SPEC §6): captures, screen pictures, pastes, and reading assets.

    POST /v1/captures                    phone    multipart image_file  -> 201 asset; desktop gets asset.created
                                                  (Idempotency-Key: a retry replays the 201, nothing announced again)
    PUT  /v1/pairings/{id}/screen        desktop  image body or image_file -> 200 screen info
    POST /v1/captures/{asset_id}/paste   phone    multipart view        -> 200 placement; desktop gets asset.placed
                                                                        (422 screen_not_found + hint; paste.failed)
    GET  /v1/assets/{asset_id}           a device of the pairing (Bearer or ?token=) or ?expires=&sig= -> image/png
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from segmentation.errors import echo
from sync.assets import CAPTURE_OPTION_NAMES, capture_options
from sync.assets.idempotency import check_key
from sync.pairing import PairingNotFound

from ..deps import (
    AssetsDep,
    CapturesDep,
    DesktopDep,
    PairingsDep,
    PhoneDep,
    ScreensDep,
    SettingsDep,
    bearer_token,
)
from ..errors import ApiProblem
from ..settings import Settings
from ..openapi import (
    ASSET_HEADERS,
    CLIP_HEADERS,
    CLIP_OPTIONS,
    DEVICE_PROBLEMS,
    LOCATION_HEADER,
    image_response,
    link,
    merge,
    multipart_image_body,
    openapi_extra,
    problem_responses,
    query_parameters,
)
from .clip import read_image_upload
from .params import merge_values, query_values

router = APIRouter(tags=["captures"])

_TOKEN = ("token",)  # the device token, where a header cannot be sent (``deps.current_device``)
_SCREEN_OPTIONS = ("fiducials",)

_CAPTURE_OPTIONS = {name: CLIP_OPTIONS[name] for name in CAPTURE_OPTION_NAMES}
_SCREEN_SCHEMAS = {
    "fiducials": {"type": "string", "enum": ["true", "false", "auto"], "default": "auto",
                  "description": "true: the picture shows the paste pattern; false: ignore markers; auto: look."},
}
# The phone goes on with its own token (sent as ?token= where the capture was).
_ASSET = {"path.asset_id": "$response.body#/asset_id", "query.token": "$request.query.token"}
_CAPTURED_LINKS = {
    "paste": link("paste", "Paste the clip where the phone is aimed.", **_ASSET),
    "get": link("getAsset", "The clipped image.", **_ASSET),
}


def _base_url(request: Request, settings: Settings) -> str:
    return settings.public_url or str(request.base_url)


def _fiducials(value: str | None) -> bool | None:
    """``true``: the companion shows the paste pattern; ``false``: ignore markers; unset/auto: look for them."""
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ApiProblem(422, "invalid_parameter", f"fiducials must be true, false or auto; got {echo(value)!r}.")


@router.post(
    "/v1/captures",
    status_code=201,
    operation_id="createCapture",
    responses=merge(
        {201: {"description": "The asset: its id, a signed URL, its size and the object's box.",
               "headers": {"Location": LOCATION_HEADER, "Idempotent-Replayed": CLIP_HEADERS["Idempotent-Replayed"]},
               "links": _CAPTURED_LINKS}},
        problem_responses(*DEVICE_PROBLEMS, 400, 409, 413, 415),
    ),
    openapi_extra=openapi_extra(
        parameters=query_parameters(_CAPTURE_OPTIONS), body=multipart_image_body("image_file", _CAPTURE_OPTIONS)
    ),
)
async def create_capture(
    request: Request,
    phone: PhoneDep,
    captures: CapturesDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    query = query_values(request, CAPTURE_OPTION_NAMES, ignored=_TOKEN)
    capture_options(query)  # a bad parameter (or key) costs no queue place
    if idempotency_key is not None:
        check_key(idempotency_key)
    async with captures.clipper.admission():
        data, fields = await read_image_upload(request, settings.max_upload_bytes, fields=CAPTURE_OPTION_NAMES)
        options = capture_options(merge_values(query, fields))
        base_url = _base_url(request, settings)
        if idempotency_key is None:
            captured = await captures.capture(phone.pairing_id, data, options, base_url)
        else:
            captured = await captures.capture_once(phone.pairing_id, idempotency_key, data, options, base_url)
    asset = captured.asset
    headers = {"Location": f"/v1/assets/{asset.id}"}
    if captured.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse({**asset.to_json(), "url": captured.url}, status_code=201, headers=headers)


@router.put(
    "/v1/pairings/{pairing_id}/screen",
    operation_id="putScreen",
    responses=problem_responses(*DEVICE_PROBLEMS, 400, 413, 415),
    openapi_extra=openapi_extra(
        parameters=query_parameters(_SCREEN_SCHEMAS), body=multipart_image_body("image_file", _SCREEN_SCHEMAS)
    ),
)
async def put_screen(
    pairing_id: str, request: Request, desktop: DesktopDep, screens: ScreensDep, settings: SettingsDep
) -> dict[str, object]:
    if desktop.pairing_id != pairing_id:  # another pairing's id: its existence is not disclosed
        raise PairingNotFound("No such pairing.")
    query = query_values(request, _SCREEN_OPTIONS, ignored=_TOKEN)
    _fiducials(query.get("fiducials"))  # a bad parameter costs no queue place
    async with screens.admission():
        data, fields = await read_image_upload(request, settings.max_upload_bytes, fields=_SCREEN_OPTIONS)
        fiducials = _fiducials(merge_values(query, fields).get("fiducials"))
        info = await screens.put(pairing_id, data, fiducials=fiducials)
    return info.to_json()


@router.post(
    "/v1/captures/{asset_id}/paste",
    operation_id="paste",
    responses=problem_responses(*DEVICE_PROBLEMS, 400, 409, 413, 415),
    openapi_extra=openapi_extra(body=multipart_image_body("view", raw=False)),
)
async def paste(
    asset_id: str, request: Request, phone: PhoneDep, captures: CapturesDep, settings: SettingsDep
) -> dict[str, object]:
    query_values(request, (), ignored=_TOKEN)
    asset = await captures.assets.get(asset_id, phone.pairing_id)  # before reading the photo
    async with captures.screens.admission():
        view, _ = await read_image_upload(request, settings.max_upload_bytes, field="view")
        return await captures.paste(phone.pairing_id, asset.id, view)


@router.get(
    "/v1/assets/{asset_id}",
    operation_id="getAsset",
    response_class=Response,
    responses=merge(
        image_response(200, "The clipped image.", ("image/png",), ASSET_HEADERS),
        problem_responses(*DEVICE_PROBLEMS),
    ),
)
async def get_asset(
    asset_id: str,
    assets: AssetsDep,
    pairings: PairingsDep,
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query()] = None,
    expires: Annotated[str | None, Query()] = None,
    sig: Annotated[str | None, Query()] = None,
) -> Response:
    if sig is not None or expires is not None:  # a signed URL stands alone: no token needed
        asset = await assets.get_signed(asset_id, expires, sig)
    else:
        device = await pairings.authenticate(bearer_token(authorization) or token)
        asset = await assets.get(asset_id, device.pairing_id)
    data = await assets.read(asset)
    headers = {
        # The bytes never change; only who may read them does.
        "Cache-Control": "private, max-age=3600, immutable",
        "ETag": f'"{asset.id}"',
        "X-Width": str(asset.width),
        "X-Height": str(asset.height),
    }
    return Response(content=data, media_type=asset.content_type, headers=headers)
