"""The asynchronous client for the public API (SPEC §5): :class:`Arclip`'s twin."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

from ._base import (
    DEFAULT_TIMEOUT,
    BaseClient,
    Channels,
    Color,
    Format,
    Quality,
    RequestSpec,
    Size,
    TimeoutTypes,
    connection_error,
    error_from_response,
    json_body,
    log_retry,
)
from ._images import ImageInput
from ._retry import RetryPolicy, retry_delay
from ._types import Account, ClipResult

_sleep = asyncio.sleep  # replaced in tests


async def send(client: httpx.AsyncClient, spec: RequestSpec, policy: RetryPolicy) -> httpx.Response:
    """Send with retries; a success response, or the typed exception for the last failure."""
    retry = 0
    while True:
        request = spec.build(client)
        try:
            response = await client.send(request)
        except httpx.TransportError as exc:
            delay = retry_delay(policy, retry, request=request, error=exc)
            if delay is None:
                raise connection_error(exc, request) from exc
            log_retry(request, delay, retry, type(exc).__name__)
        else:
            if response.is_success:
                return response
            delay = retry_delay(policy, retry, request=request, response=response)
            if delay is None:
                raise error_from_response(response)
            log_retry(request, delay, retry, f"HTTP {response.status_code}")
            await response.aclose()
        await _sleep(delay)
        retry += 1


class AsyncArclip(BaseClient):
    """The arclip public API for asyncio::

        async with AsyncArclip(api_key="arc_live_…") as arclip:
            result = await arclip.clip(b"...", size="preview")

    Same options and behaviour as :class:`Arclip`; ``http_client`` is an ``httpx.AsyncClient``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            api_key, base_url=base_url, timeout=timeout, max_retries=max_retries, retry=retry,
            default_headers=default_headers,
        )
        self._owns_client = http_client is None
        self._client = http_client if http_client is not None else httpx.AsyncClient(timeout=timeout)

    async def clip(
        self,
        image: ImageInput,
        *,
        format: Format | None = None,
        channels: Channels | None = None,
        crop: bool | None = None,
        crop_margin: int | float | str | None = None,
        size: Size | None = None,
        bg_color: Color | None = None,
        quality: Quality | None = None,
        idempotency_key: str | None = None,
        timeout: TimeoutTypes = None,
    ) -> ClipResult:
        """Cut the object out of ``image``; see :meth:`Arclip.clip`."""
        spec = self._clip_spec(
            image, format=format, channels=channels, crop=crop, crop_margin=crop_margin, size=size,
            bg_color=bg_color, quality=quality, idempotency_key=idempotency_key, timeout=timeout,
        )
        response = await send(self._client, spec, self.retry_policy)
        return ClipResult.from_response(response.content, response.headers)

    async def account(self, *, timeout: TimeoutTypes = None) -> Account:
        """The key's plan, credits and usage (``GET /v1/account``)."""
        response = await send(self._client, self._account_spec(timeout), self.retry_policy)
        return Account.from_json(json_body(response), response.headers)

    def with_options(
        self,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> AsyncArclip:
        """A client like this one with some settings changed, sharing its connection pool."""
        return AsyncArclip(
            api_key if api_key is not None else self.api_key,
            base_url=self.base_url,
            timeout=self.timeout if timeout is None else timeout,  # type: ignore[arg-type]
            retry=retry or self.retry_policy,
            max_retries=max_retries,
            default_headers=self._default_headers,
            http_client=self._client,
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    close = aclose

    async def __aenter__(self) -> AsyncArclip:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
