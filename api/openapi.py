"""The OpenAPI document as the contract: problem+json errors, real media types, headers, links.

Routes declare what they answer with the helpers here (``problem_responses``,
``image_response``, ``multipart_image_body`` …) instead of pasting dicts;
``install_openapi`` adds what only the whole document can hold: the shared
``Problem`` schema, and ``X-Request-Id`` on every response (``RequestIdMiddleware``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, get_args

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from segmentation.options import COLOR_PATTERN, MARGIN_PATTERN, Channels, OutputFormat, Quality, SizePreset

PROBLEM_MEDIA_TYPE = "application/problem+json"  # as api.errors answers
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem; ``code`` is stable and machine-readable. Some codes add members "
    "(``parameter``, ``hint``, ``credits_required``, ``limit``, ``errors`` …).",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "https://arclip.dev/problems/{code}"},
        "title": {"type": "string", "description": "The status's phrase."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What went wrong and what to do, for a person."},
        "code": {"type": "string", "description": "What went wrong, for a program."},
        "parameter": {"type": "string", "description": "The parameter at fault (a bounded prefix of it)."},
        "did_you_mean": {"type": "string", "description": "The known parameter nearest an unknown one."},
        "hint": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}, "description": "Each invalid field."},
    },
    "additionalProperties": True,
}

# What each status means here, and the codes it carries.
_PROBLEMS: dict[int, str] = {
    400: "Unreadable or empty image, or a malformed body (`unreadable_image`, `empty_image`, `bad_input`, "
    "`malformed_multipart`, `invalid_webhook_signature`).",
    401: "No credentials (`missing_api_key`, `missing_token`).",
    402: "No credits left, or the account is suspended (`insufficient_credits`, `account_suspended`).",
    403: "Bad, revoked or insufficient credentials, or a bad signature "
    "(`invalid_api_key`, `revoked_api_key`, `insufficient_scope`, `invalid_token`, `revoked_token`, `wrong_role`, "
    "`bad_signature`, `url_expired`).",
    404: "Not found, or not this device's (`not_found`, `pairing_not_found`, `asset_not_found`, `invalid_code`, "
    "`api_key_not_found`, `account_not_found`).",
    409: "Conflicts with the current state (`idempotency_key_in_use`, `pairing_full`, `illegal_transition`, "
    "`no_screen`).",
    410: "Gone: the code lapsed or was used, or the pairing is closed (`code_expired`, `code_used`, `pairing_closed`).",
    413: "The body or the image is over the limits (`payload_too_large`, `image_too_large`).",
    415: "Not an image type we read (`unsupported_media_type`).",
    422: "A bad parameter (`invalid_parameter`, `invalid_option`, `unknown_parameter`, `duplicate_parameter`, "
    "`conflicting_parameter`, `missing_image_file`, `idempotency_key_mismatch`, `invalid_idempotency_key`, "
    "`malformed_code`, `invalid_screen`, `screen_not_found`, `unknown_plan`, `unknown_pack`, `invalid_amount`).",
    431: "The header fields add up to more than 64 KiB (`headers_too_large`).",
    429: "Too many requests (`rate_limited`, `too_many_attempts`); retry after `Retry-After` seconds.",
    502: "The payment provider refused (`payments_error`).",
    503: "Overloaded, or a backing service is unavailable (`overloaded`, `database_unavailable`, "
    "`redis_unavailable`, `storage_unavailable`, `storage_full`, `hub_unavailable`, `pairing_unavailable`, "
    "`service_unavailable`, `payments_unavailable`, `payments_not_configured`, `starting`, `inference_unavailable`); "
    "retry after `Retry-After` seconds.",
}

# What any route behind a device token may answer: no, bad or another pairing's token, a
# closed pairing, a bad parameter, a backing service down.
DEVICE_PROBLEMS = (401, 403, 404, 410, 422, 503)

_RETRY_AFTER = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 0}}


def _header(description: str, schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": dict(schema or {"type": "string"})}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for each status, answered as problem+json with the shared schema."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": _PROBLEMS.get(status, HTTPStatus(status).phrase),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}},
        }
        if status in (429, 503):
            response["headers"] = {"Retry-After": _RETRY_AFTER}
        if status == 401:
            response["headers"] = {"WWW-Authenticate": _header("The scheme to authenticate with.")}
        responses[status] = response
    return responses


def merge(*parts: Mapping[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """Several ``responses=`` mappings as one (a later one's headers join an earlier one's)."""
    merged: dict[int | str, dict[str, Any]] = {}
    for part in parts:
        for status, response in part.items():
            into = merged.setdefault(status, {})
            headers = {**into.get("headers", {}), **response.get("headers", {})}
            into.update(response)
            if headers:
                into["headers"] = headers
    return merged


def metered(*parts: Mapping[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """``merge`` for a route behind an API key's rate limits: any answer may carry their fields."""
    merged = merge(*parts)
    for response in merged.values():
        response["headers"] = {**RATE_LIMIT_HEADERS, **response.get("headers", {})}
    return merged


def image_response(
    status: int, description: str, media_types: Iterable[str], headers: Mapping[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """A success answered with image bytes of one of ``media_types``."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    response: dict[str, Any] = {"description": description, "content": {m: binary for m in media_types}}
    if headers:
        response["headers"] = dict(headers)
    return {status: response}


def success_headers(status: int, headers: Mapping[str, Any]) -> dict[int | str, dict[str, Any]]:
    """Headers a JSON success carries (its body comes from the route's model)."""
    return {status: {"headers": dict(headers)}}


# The rate-limit fields (``middleware.ratelimit_fields``) on every answer to a metered route.
RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": _header("The key's policies: the token bucket (\"rate\") and requests at once."),
    "RateLimit": _header("What is left of each policy, and seconds until the bucket is full."),
}

_CREDITS = {"type": "string", "pattern": r"^\d+(\.\d+)?$"}

CLIP_HEADERS = {
    "X-Credits-Charged": _header("Credits this request cost.", _CREDITS),
    "X-Credits-Remaining": _header("Credits left on the account.", _CREDITS),
    "X-Width": _header("The output image's width in pixels.", {"type": "integer"}),
    "X-Height": _header("The output image's height in pixels.", {"type": "integer"}),
    "X-Foreground-Left": _header("The object's box in the output: left edge.", {"type": "integer"}),
    "X-Foreground-Top": _header("The object's box in the output: top edge.", {"type": "integer"}),
    "X-Foreground-Width": _header("The object's box in the output: width (0: nothing found).", {"type": "integer"}),
    "X-Foreground-Height": _header("The object's box in the output: height.", {"type": "integer"}),
    "X-Clip-Passes": _header("The model passes that ran, comma-separated: base, then flip, aspect, zoom as they did "
                             "(quality=balanced adds views only while the server has idle capacity)."),
    "Idempotent-Replayed": _header("\"true\" when this is the stored answer to an earlier request with the key."),
    **RATE_LIMIT_HEADERS,
}

LOCATION_HEADER = _header("The new resource's URL.")
NO_STORE_HEADER = {"Cache-Control": _header("no-store: the answer carries a token.")}

ASSET_HEADERS = {
    "X-Width": CLIP_HEADERS["X-Width"],
    "X-Height": CLIP_HEADERS["X-Height"],
    "ETag": _header("The asset's id: its bytes never change."),
    "Cache-Control": _header("Private, immutable."),
}

# Every clipping option (``segmentation.ClipOptions.parse``): the enums come from its types.
CLIP_OPTIONS: dict[str, dict[str, Any]] = {
    "format": {"type": "string", "enum": list(get_args(OutputFormat)), "default": "png",
               "description": "The output's format."},
    "channels": {"type": "string", "enum": list(get_args(Channels)), "default": "rgba",
                 "description": "rgba: the cut-out; alpha: the 8-bit grey mask."},
    "crop": {"type": "boolean", "default": False, "description": "Crop to the object (plus crop_margin)."},
    "crop_margin": {"type": "string", "pattern": MARGIN_PATTERN, "default": "0",
                    "description": "Margin around a crop: pixels (`20`, `20px`, at most 500) or a percentage "
                    "of the object's longer side (`10%`, at most 50)."},
    "size": {"type": "string", "enum": list(get_args(SizePreset)), "default": "full",
             "description": "preview: about 0.25 MP (0.25 credit); full: the input's size; auto: full up to 25 MP."},
    "bg_color": {"type": "string", "pattern": COLOR_PATTERN,
                 "description": "An opaque background instead of transparency: hex #rgb, #rgba, #rrggbb or #rrggbbaa."},
    "quality": {"type": "string", "enum": list(get_args(Quality)), "default": "balanced",
                "description": "fast: one model run; balanced: the server's extra passes; best: every extra pass "
                "(mirrored, own-aspect and zoomed views). The same price."},
}


def query_parameters(schemas: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Optional query parameters, one for each named schema."""
    return [
        {"name": name, "in": "query", "required": False, "schema": dict(schema),
         "description": schema.get("description", "")}
        for name, schema in schemas.items()
    ]


IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/heic", "application/octet-stream")


def multipart_image_body(
    field: str, options: Mapping[str, Mapping[str, Any]] | None = None, *, raw: bool = True
) -> dict[str, Any]:
    """The ``requestBody`` of an image upload: multipart ``field`` (+ ``options`` as text parts), or the raw bytes."""
    binary = {"type": "string", "format": "binary", "contentMediaType": "image/*",
              "description": "A JPEG, PNG, WebP or HEIC image."}
    form = {
        "type": "object",
        "required": [field],
        "properties": {field: binary, **{name: dict(schema) for name, schema in (options or {}).items()}},
        "additionalProperties": False,
    }
    content: dict[str, Any] = {"multipart/form-data": {"schema": form}}
    if raw:
        for media_type in IMAGE_TYPES:
            content[media_type] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


def openapi_extra(*, parameters: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = dict(body or {})
    if parameters:
        extra["parameters"] = parameters
    return extra


def link(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link: ``parameters`` name the next operation's parameters, valued by runtime expressions."""
    return {"operationId": operation_id, "description": description, "parameters": parameters}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's document, with the shared Problem schema and ``X-Request-Id`` on every response."""
    document = get_openapi(
        title=app.title, version=app.version, openapi_version=app.openapi_version,
        summary=app.summary, description=app.description, routes=app.routes,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    request_id = _header("The request's id: the client's X-Request-Id when sane, else a new one.")
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {}).setdefault("X-Request-Id", request_id)
    return document


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` (and ``/openapi.json``) answers ``build_openapi``'s document, built once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
