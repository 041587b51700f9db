"""When to retry a request, and how long to wait first.

Retried, whatever the method (the server did not do the work, and never charges for it):

* ``429`` rate limited and ``503`` overloaded, after ``Retry-After`` when the server sends it;
* ``409 idempotency_key_in_use`` (the first request with that key is still running);
* failures to connect (the request never left).

Retried only when the request is idempotent (a ``GET``/``PUT``/``DELETE``, or a ``POST`` sent
with an ``Idempotency-Key``), because the server may already have done the work:

* a connection that broke mid-request, or a read timeout;
* ``502``/``504`` from a proxy in front of the server.

Without ``Retry-After`` the wait grows exponentially with jitter:
``min(max_delay, initial_delay * multiplier**n) * (1 - jitter * random())``.
With ``Retry-After`` the client waits at least that long (plus up to ``jitter`` of it, so many
clients told the same number do not come back at the same instant); a ``Retry-After`` longer
than ``max_retry_after`` is not waited for: the error is raised at once, carrying it.
"""

from __future__ import annotations

import dataclasses
import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

ALWAYS_RETRY_STATUSES = frozenset({429, 503})
IDEMPOTENT_RETRY_STATUSES = frozenset({502, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRYABLE_CODES = frozenset({"idempotency_key_in_use"})

# Raised before a single byte of the request was sent: always safe to retry.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry and how long to wait in between.

    ``RetryPolicy(max_retries=0)`` turns retries off; ``jitter=0`` makes waits deterministic.
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.25
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.initial_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must be >= 0")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def replace(self, **changes: object) -> RetryPolicy:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``retry`` (0 for the first) when the server gave no ``Retry-After``."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(retry, 0))
        return base * (1 - self.jitter * rand())

    def delay(
        self, retry: int, retry_after: float | None = None, rand: Callable[[], float] = random.random
    ) -> float | None:
        """The wait before retry number ``retry``, or ``None`` when it should not be made."""
        if retry >= self.max_retries:
            return None
        if retry_after is None:
            return self.backoff(retry, rand)
        if retry_after > self.max_retry_after:
            return None
        retry_after = max(retry_after, 0.0)
        return retry_after + retry_after * self.jitter * rand()


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` in seconds: delta-seconds (``"3"``, ``"1.5"``) or an HTTP-date; ``None`` if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        return max(0.0, when.timestamp() - now())
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, inf
        return None
    return max(0.0, seconds)


def is_idempotent(request: httpx.Request) -> bool:
    return request.method.upper() in IDEMPOTENT_METHODS or "idempotency-key" in request.headers


def _problem_code(response: httpx.Response) -> str | None:
    content_type = response.headers.get("content-type", "")
    if "json" not in content_type:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, Mapping) else None
    return code if isinstance(code, str) else None


def retryable_response(response: httpx.Response, idempotent: bool) -> bool:
    status = response.status_code
    if status in ALWAYS_RETRY_STATUSES:
        return True
    if status in IDEMPOTENT_RETRY_STATUSES:
        return idempotent
    if status == 409:
        return _problem_code(response) in RETRYABLE_CODES
    return False


def retryable_error(error: Exception, idempotent: bool) -> bool:
    if isinstance(error, _NOT_SENT):
        return True
    return idempotent and isinstance(error, httpx.TransportError)


def retry_delay(
    policy: RetryPolicy,
    retry: int,
    *,
    request: httpx.Request,
    response: httpx.Response | None = None,
    error: Exception | None = None,
) -> float | None:
    """Seconds to wait before retrying ``request`` after ``response`` (or ``error``); ``None``: do not retry."""
    idempotent = is_idempotent(request)
    if response is not None:
        if not retryable_response(response, idempotent):
            return None
        return policy.delay(retry, parse_retry_after(response.headers.get("retry-after")))
    if error is not None and retryable_error(error, idempotent):
        return policy.delay(retry)
    return None
