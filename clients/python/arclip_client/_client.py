"""The synchronous client for the public API (SPEC §5)."""

from __future__ import annotations

import time
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

_sleep = time.sleep  # replaced in tests


def send(client: httpx.Client, spec: RequestSpec, policy: RetryPolicy) -> httpx.Response:
    """Send with retries; a success response, or the typed exception for the last failure."""
    retry = 0
    while True:
        request = spec.build(client)
        try:
            response = client.send(request)
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
            response.close()
        _sleep(delay)
        retry += 1


class Arclip(BaseClient):
    """The arclip public API, synchronously::

        with Arclip(api_key="arc_live_…", base_url="http://127.0.0.1:8000") as arclip:
            result = arclip.clip("photo.jpg", crop=True)
            result.save("cutout.png")

    ``api_key`` defaults to ``$ARCLIP_API_KEY`` and ``base_url`` to ``$ARCLIP_BASE_URL`` (else
    ``http://127.0.0.1:8000``). 429 and 503 answers are retried up to ``max_retries`` times
    (default 2) after ``Retry-After``; ``retry`` gives the whole :class:`RetryPolicy`.
    Pass ``http_client`` to use your own ``httpx.Client`` (its proxies, certificates, transport);
    it is then yours to close.
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
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            api_key, base_url=base_url, timeout=timeout, max_retries=max_retries, retry=retry,
            default_headers=default_headers,
        )
        self._owns_client = http_client is None
        self._client = http_client if http_client is not None else httpx.Client(timeout=timeout)

    def clip(
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
        """Cut the object out of ``image`` (bytes, a path, a binary file or a PIL image).

        Options left ``None`` take the server's defaults (PNG, RGBA, no crop, full size, balanced).
        ``quality`` is ``"fast"`` (one model run), ``"balanced"`` or ``"best"`` (every extra
        view of the photo the server has): the same price, more time.
        ``crop_margin`` is pixels (``20``) or a string (``"20px"``, ``"10%"``); ``bg_color`` is
        ``"#rrggbb[aa]"`` or an RGB(A) tuple. With an ``idempotency_key``, a request whose
        connection broke is retried too, and the server replays instead of charging twice.
        """
        spec = self._clip_spec(
            image, format=format, channels=channels, crop=crop, crop_margin=crop_margin, size=size,
            bg_color=bg_color, quality=quality, idempotency_key=idempotency_key, timeout=timeout,
        )
        response = send(self._client, spec, self.retry_policy)
        return ClipResult.from_response(response.content, response.headers)

    def account(self, *, timeout: TimeoutTypes = None) -> Account:
        """The key's plan, credits and usage (``GET /v1/account``)."""
        response = send(self._client, self._account_spec(timeout), self.retry_policy)
        return Account.from_json(json_body(response), response.headers)

    def with_options(
        self,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> Arclip:
        """A client like this one with some settings changed, sharing its connection pool::

            arclip.with_options(max_retries=5).clip(data)
        """
        clone = Arclip(
            api_key if api_key is not None else self.api_key,
            base_url=self.base_url,
            timeout=self.timeout if timeout is None else timeout,  # type: ignore[arg-type]
            retry=retry or self.retry_policy,
            max_retries=max_retries,
            default_headers=self._default_headers,
            http_client=self._client,
        )
        return clone

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Arclip:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
