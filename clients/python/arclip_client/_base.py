"""What the sync and async clients share: configuration, request building, response parsing."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping
from typing import Any, Literal

import httpx

from ._errors import APIConnectionError, APIError, APITimeoutError, error_class
from ._images import ImageInput, read_image
from ._retry import RetryPolicy, parse_retry_after
from ._version import __version__

log = logging.getLogger("arclip_client")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
API_KEY_ENV = "ARCLIP_API_KEY"
BASE_URL_ENV = "ARCLIP_BASE_URL"

Format = Literal["png", "webp"]
Channels = Literal["rgba", "alpha"]
Size = Literal["preview", "full", "auto"]
Quality = Literal["fast", "balanced", "best"]  # the same price: how many model runs the mask gets
Color = str | tuple[int, int, int] | tuple[int, int, int, int]
TimeoutTypes = float | httpx.Timeout | None

USER_AGENT = f"arclip-python/{__version__} httpx/{httpx.__version__} python/{platform.python_version()}"


def resolve_base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return url.rstrip("/")


def resolve_api_key(api_key: str | None) -> str | None:
    return api_key if api_key is not None else os.environ.get(API_KEY_ENV)


def resolve_policy(max_retries: int | None, retry: RetryPolicy | None) -> RetryPolicy:
    policy = retry or RetryPolicy()
    return policy if max_retries is None else policy.replace(max_retries=max_retries)


def format_color(value: Color) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, tuple) and len(value) in (3, 4) and all(isinstance(c, int) and 0 <= c <= 255 for c in value):
        return "#" + "".join(f"{c:02x}" for c in value)
    raise TypeError("bg_color is a hex string ('#ffffff') or an (r, g, b[, a]) tuple of 0-255 ints")


def format_margin(value: int | float | str) -> str:
    if isinstance(value, bool):
        raise TypeError("crop_margin is pixels (int/float) or a string such as '20px' or '10%'")
    if isinstance(value, (int, float)):
        return f"{value:g}px"
    return str(value)


def clip_fields(
    *,
    format: str | None,
    channels: str | None,
    crop: bool | None,
    crop_margin: int | float | str | None,
    size: str | None,
    bg_color: Color | None,
    quality: str | None = None,
) -> dict[str, str]:
    """The clip options as form fields; an option left ``None`` is not sent (the server's default)."""
    fields: dict[str, str] = {}
    if format is not None:
        fields["format"] = str(format)
    if channels is not None:
        fields["channels"] = str(channels)
    if crop is not None:
        fields["crop"] = "true" if crop else "false"
    if crop_margin is not None:
        fields["crop_margin"] = format_margin(crop_margin)
    if size is not None:
        fields["size"] = str(size)
    if bg_color is not None:
        fields["bg_color"] = format_color(bg_color)
    if quality is not None:
        fields["quality"] = str(quality)
    return fields


def image_files(
    image: ImageInput, field: str = "image_file", *, lossless: bool = False
) -> dict[str, tuple[str, bytes, str]]:
    return {field: read_image(image, lossless=lossless)}


def error_from_response(response: httpx.Response) -> APIError:
    """The typed exception for an error response (problem+json or not)."""
    body: Mapping[str, Any] = {}
    try:
        parsed = response.json()
        if isinstance(parsed, Mapping):
            body = parsed
    except (ValueError, UnicodeDecodeError):
        pass
    status = response.status_code
    code = body.get("code") if isinstance(body.get("code"), str) else None
    detail = body.get("detail") if isinstance(body.get("detail"), str) else None
    if detail is None and not body:
        text = response.text.strip() if response.content else ""
        detail = text[:500] or None
    cls = error_class(status, code)
    return cls(
        status,
        code=code,
        title=body.get("title") if isinstance(body.get("title"), str) else None,
        detail=detail,
        type=body.get("type") if isinstance(body.get("type"), str) else None,
        request_id=response.headers.get("x-request-id"),
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        body=body,
        headers=dict(response.headers),
        response=response,
    )


def connection_error(exc: httpx.TransportError, request: httpx.Request | None) -> APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"Request timed out: {exc}", request=request)
    return APIConnectionError(f"Connection error: {exc}", request=request)


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise APIError(
            response.status_code,
            code="invalid_response",
            detail=f"expected JSON, got {response.headers.get('content-type')!r}",
            request_id=response.headers.get("x-request-id"),
            response=response,
        ) from exc


class RequestSpec:
    """One logical request; ``build`` makes a fresh ``httpx.Request`` for every attempt."""

    __slots__ = ("kwargs", "method", "url")

    def __init__(self, method: str, url: str, **kwargs: Any) -> None:
        self.method = method
        self.url = url
        self.kwargs = kwargs

    def build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return client.build_request(self.method, self.url, **self.kwargs)


def log_retry(request: httpx.Request, delay: float, retry: int, cause: str) -> None:
    log.info("retrying %s %s in %.2fs (retry %d): %s", request.method, request.url.path, delay, retry + 1, cause)


class BaseClient:
    """Configuration shared by :class:`Arclip` and :class:`AsyncArclip`."""

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str | None,
        timeout: TimeoutTypes | httpx.Timeout,
        max_retries: int | None,
        retry: RetryPolicy | None,
        default_headers: Mapping[str, str] | None,
    ) -> None:
        self.api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.timeout = timeout
        self.retry_policy = resolve_policy(max_retries, retry)
        self._default_headers = dict(default_headers or {})

    @property
    def max_retries(self) -> int:
        return self.retry_policy.max_retries

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json, image/*;q=0.9, */*;q=0.5"}
        if self.api_key:
            headers["X-Api-Key"] = self.api_key
        headers.update(self._default_headers)
        headers.update(extra or {})
        return headers

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _clip_spec(
        self,
        image: ImageInput,
        *,
        format: str | None,
        channels: str | None,
        crop: bool | None,
        crop_margin: int | float | str | None,
        size: str | None,
        bg_color: Color | None,
        quality: str | None,
        idempotency_key: str | None,
        timeout: TimeoutTypes | httpx.Timeout,
    ) -> RequestSpec:
        headers: dict[str, str] = {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        fields = clip_fields(
            format=format, channels=channels, crop=crop, crop_margin=crop_margin, size=size, bg_color=bg_color,
            quality=quality,
        )
        return RequestSpec(
            "POST",
            self._url("/v1/clip"),
            files=image_files(image),
            data=fields,
            headers=self._headers(headers),
            timeout=self.timeout if timeout is None else timeout,
        )

    def _account_spec(self, timeout: TimeoutTypes | httpx.Timeout) -> RequestSpec:
        return RequestSpec(
            "GET",
            self._url("/v1/account"),
            headers=self._headers(),
            timeout=self.timeout if timeout is None else timeout,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, max_retries={self.max_retries})"
