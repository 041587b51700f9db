"""``POST /v1/clip``: the public clipping route.

Paid: the key's credits are reserved before the work and charged only when it
succeeded (``billing.Metering``); an ``Idempotency-Key`` replays the first success.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from starlette.datastructures import UploadFile

from billing import Charge, StoredResponse, format_credits
from segmentation import ClipOptions, ClipResult
from segmentation.options import OPTION_NAMES

from ..deps import BillingDep, ClipKeyDep, ClipperDep, SettingsDep
from ..errors import ApiProblem
from ..multipart import read_form
from ..openapi import (
    CLIP_HEADERS,
    CLIP_OPTIONS,
    image_response,
    metered,
    multipart_image_body,
    openapi_extra,
    problem_responses,
    query_parameters,
)
from .params import duplicate_parameter, merge_values, query_values, strict_values, unknown_parameter

router = APIRouter(tags=["clip"])


def operation_for(options: ClipOptions) -> str:
    """The billed operation: 1 credit a full-size (or auto) image, 0.25 a preview."""
    return "clip.preview" if options.size == "preview" else "clip"


def request_fingerprint(route: str, options: ClipOptions, data: bytes) -> str:
    """What an Idempotency-Key is bound to: the route, the parsed options and the image bytes."""
    digest = hashlib.sha256()
    digest.update(f"{route}\n{options!r}\n".encode())
    digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def replayed(stored: StoredResponse) -> Response:
    headers = {**stored.headers, "Idempotent-Replayed": "true"}
    return Response(content=stored.body, status_code=stored.status, media_type=stored.media_type, headers=headers)


async def read_image_upload(
    request: Request, max_bytes: int, field: str = "image_file", fields: Collection[str] = ()
) -> tuple[bytes, dict[str, str]]:
    """The image bytes and the text form fields from a multipart body (or a raw image/* body).

    Strict: one file part, named ``field``; text parts only from ``fields``, each once.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        return await request.body(), {}
    if content_type != "multipart/form-data":
        raise ApiProblem(
            415, "unsupported_media_type", f"Send the image as multipart/form-data in the field {field!r}."
        )
    form = await read_form(request, max_files=2, max_fields=32, max_part_size=64 * 1024)
    try:
        parts = form.multi_items()
        uploads = [value for name, value in parts if isinstance(value, UploadFile) and name == field]
        if not uploads:  # checked first: a lone image in a misnamed part is a missing image
            raise ApiProblem(422, "missing_image_file", f"Attach the image in the multipart field {field!r}.")
        if len(uploads) > 1:
            raise duplicate_parameter(field)
        for name, value in parts:
            if isinstance(value, UploadFile) and name != field:
                raise unknown_parameter(name, (field, *fields))
        text = [(name, value) for name, value in parts if isinstance(value, str)]
        if any(name == field for name, _ in text):
            raise ApiProblem(422, "missing_image_file", f"The field {field!r} must be a file part, not text.")
        values = strict_values(text, fields)
        data = await uploads[0].read(max_bytes + 1)
    finally:
        await form.close()
    return data, values


def clip_headers(result: ClipResult, charge: Charge) -> dict[str, str]:
    box = result.foreground
    return {
        "X-Credits-Charged": format_credits(charge.amount),
        "X-Credits-Remaining": format_credits(charge.remaining),
        "X-Width": str(result.width),
        "X-Height": str(result.height),
        "X-Foreground-Left": str(box.left),
        "X-Foreground-Top": str(box.top),
        "X-Foreground-Width": str(box.width),
        "X-Foreground-Height": str(box.height),
        "X-Clip-Passes": ",".join(result.passes),
    }


@router.post(
    "/v1/clip",
    operation_id="clip",
    response_class=Response,
    responses=metered(
        image_response(200, "The cut-out (or its alpha mask).", ("image/png", "image/webp"), CLIP_HEADERS),
        problem_responses(400, 401, 402, 403, 409, 413, 415, 422, 429, 503),
    ),
    openapi_extra=openapi_extra(
        parameters=query_parameters(CLIP_OPTIONS), body=multipart_image_body("image_file", CLIP_OPTIONS)
    ),
)
async def clip(
    request: Request,
    key: ClipKeyDep,
    clipper: ClipperDep,
    settings: SettingsDep,
    billing: BillingDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    # Options parse before admission so a bad parameter costs no queue place.
    query = query_values(request, OPTION_NAMES)
    ClipOptions.parse(**query)
    async with clipper.admission():
        data, fields = await read_image_upload(request, settings.max_upload_bytes, fields=OPTION_NAMES)
        options = ClipOptions.parse(**merge_values(query, fields))
        async with billing.metering.call(
            key,
            operation=operation_for(options),
            idempotency_key=idempotency_key,
            # Hashing the image is only worth it when a replay must be matched.
            fingerprint=request_fingerprint("POST /v1/clip", options, data) if idempotency_key else "",
            request_id=request.scope.get("state", {}).get("request_id"),
        ) as call:
            if call.replay is not None:
                return replayed(call.replay)
            result = await clipper.clip(data, options)
            stored = await call.succeed(
                lambda charge: StoredResponse(200, clip_headers(result, charge), result.data, result.media_type)
            )
    return Response(content=stored.body, media_type=stored.media_type, headers=stored.headers)
