"""``POST /v1/clip``: the public clipping route."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from segmentation import ClipOptions, ClipResult

from ..deps import ApiKeyDep, ClipperDep, SettingsDep
from ..errors import ApiProblem

router = APIRouter(tags=["clip"])

_OPTION_NAMES = ("format", "channels", "crop", "crop_margin", "size", "bg_color")
_PREVIEW_CREDITS = 0.25


def _credits_for(options: ClipOptions) -> float:
    return _PREVIEW_CREDITS if options.size == "preview" else 1.0


def _format_credits(value: float) -> str:
    return f"{value:g}"


async def read_image_upload(request: Request, max_bytes: int, field: str = "image_file") -> tuple[bytes, dict[str, str]]:
    """The image bytes and the text form fields from a multipart body (or a raw image/* body)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        return await request.body(), {}
    if content_type != "multipart/form-data":
        raise ApiProblem(
            415, "unsupported_media_type", f"Send the image as multipart/form-data in the field {field!r}."
        )
    try:
        form = await request.form(max_files=2, max_fields=32, max_part_size=64 * 1024)
    except MultiPartException as exc:
        raise ApiProblem(400, "malformed_multipart", f"The multipart body cannot be parsed: {exc.message}") from exc
    try:
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            raise ApiProblem(422, "missing_image_file", f"Attach the image in the multipart field {field!r}.")
        data = await upload.read(max_bytes + 1)
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
    finally:
        await form.close()
    return data, fields


def clip_headers(result: ClipResult, credits: float) -> dict[str, str]:
    box = result.foreground
    return {
        "X-Credits-Charged": _format_credits(credits),
        "X-Width": str(result.width),
        "X-Height": str(result.height),
        "X-Foreground-Left": str(box.left),
        "X-Foreground-Top": str(box.top),
        "X-Foreground-Width": str(box.width),
        "X-Foreground-Height": str(box.height),
    }


@router.post(
    "/v1/clip",
    responses={200: {"content": {"image/png": {}, "image/webp": {}}, "description": "The cut-out image."}},
)
async def clip(request: Request, key: ApiKeyDep, clipper: ClipperDep, settings: SettingsDep) -> Response:
    # Options parse before admission so a bad parameter costs no queue place.
    query = {name: request.query_params.get(name) for name in _OPTION_NAMES}
    ClipOptions.parse(**query)
    async with clipper.admission():
        data, fields = await read_image_upload(request, settings.max_upload_bytes)
        options = ClipOptions.parse(**{name: fields.get(name, query[name]) for name in _OPTION_NAMES})
        result = await clipper.clip(data, options)
    headers = clip_headers(result, _credits_for(options))
    return Response(content=result.data, media_type=result.media_type, headers=headers)
