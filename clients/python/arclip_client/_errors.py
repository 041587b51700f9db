"""The exception tree.

Every error the SDK raises on purpose is an :class:`ArclipError`::

    ArclipError
    ├── APIConnectionError          the server could not be reached, or the connection broke
    │   └── APITimeoutError
    ├── SyncClosed                  the live channel was closed for good (bad token, pairing closed, …)
    └── APIError                    the server answered with an error (problem+json, RFC 9457)
        ├── BadRequest              400
        ├── AuthenticationError     401
        ├── InsufficientCredits     402
        ├── PermissionDenied        403
        ├── NotFound                404
        ├── Conflict                409
        │   └── NoScreen            409 no_screen: the companion has not sent a screen picture yet
        ├── Gone                    410
        ├── PayloadTooLarge         413
        ├── UnsupportedMediaType    415
        ├── InvalidParameter        422 (parameter, did_you_mean)
        │   └── ScreenNotFound      422 screen_not_found: the phone's photo was not located on the screen
        ├── RateLimited             429 (retry_after)
        ├── HeadersTooLarge         431 headers_too_large
        └── InternalServerError     5xx
            └── ServiceUnavailable  503: a backing service is down, locked or full (retry_after)
                ├── Overloaded      503 overloaded: the work queue is full
                └── Starting        503 starting: the model is still loading

``PROBLEM_CODES`` lists every problem ``code`` the server documents, by status (the OpenAPI
document's; a test keeps them equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


class ArclipError(Exception):
    """Base of every exception this SDK raises on purpose."""


class APIConnectionError(ArclipError):
    """The request never got an answer: connection refused, reset, DNS failure, …"""

    def __init__(self, message: str = "Connection error.", *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    """The request timed out."""

    def __init__(self, message: str = "Request timed out.", *, request: httpx.Request | None = None) -> None:
        super().__init__(message, request=request)


class SyncClosed(ArclipError):
    """The server closed the live channel (``/v1/sync``) and reconnecting would not help.

    ``code`` is the websocket close code: 4401 bad token, 4403 device removed or token
    refused, 4410 pairing closed or expired, 1008/1009 protocol errors.
    """

    def __init__(self, code: int | None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"live channel closed ({code}){': ' + reason if reason else ''}")


class APIError(ArclipError):
    """The server answered with an error status.

    ``code`` is the machine-readable problem code (``invalid_api_key``, ``overloaded``, …),
    ``title``/``detail`` are the RFC 9457 fields, ``body`` is the whole parsed problem
    object (extension members included), ``retry_after`` the ``Retry-After`` in seconds
    when the server sent one.
    """

    status: int

    def __init__(
        self,
        status: int,
        *,
        code: str | None = None,
        title: str | None = None,
        detail: str | None = None,
        type: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.title = title or _phrase(status)
        self.detail = detail
        self.type = type
        self.request_id = request_id
        self.retry_after = retry_after
        self.body: Mapping[str, Any] = dict(body or {})
        self.headers: Mapping[str, str] = dict(headers or {})
        self.response = response
        super().__init__(self._message())

    @property
    def status_code(self) -> int:  # httpx spelling
        return self.status

    def _message(self) -> str:
        text = f"{self.status} {self.code or self.title}"
        if self.detail:
            text += f": {self.detail}"
        if self.request_id:
            text += f" (request_id={self.request_id})"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"detail={self.detail!r}, request_id={self.request_id!r})"
        )


class BadRequest(APIError):
    """400: the image cannot be read, or the request is malformed."""


class AuthenticationError(APIError):
    """401: no API key (or no device token) was sent."""


class InsufficientCredits(APIError):
    """402: the account has no credits left."""

    @property
    def credits_required(self) -> float | None:
        return _number(self.body.get("required", self.body.get("credits_required")))

    @property
    def credits_remaining(self) -> float | None:
        return _number(self.body.get("remaining", self.body.get("credits_remaining")))


class PermissionDenied(APIError):
    """403: the key or token is wrong, revoked, or not allowed to do this."""


class NotFound(APIError):
    """404."""


class Conflict(APIError):
    """409."""


class NoScreen(Conflict):
    """409 ``no_screen``: a paste before the companion sent any screen picture."""

    @property
    def hint(self) -> str | None:
        return _text(self.body.get("hint"))


class Gone(APIError):
    """410: the pairing code was used or lapsed, or the pairing is closed."""


class PayloadTooLarge(APIError):
    """413: the upload or the image's pixel count is over the limit."""


class UnsupportedMediaType(APIError):
    """415: not JPEG, PNG, WebP or HEIC (or not sent as multipart/image)."""


class InvalidParameter(APIError):
    """422: a parameter has a bad value, is unknown, repeated or contradicted (``detail`` says which).

    ``parameter`` names it (``unknown_parameter``, ``duplicate_parameter``,
    ``conflicting_parameter``); for an unknown one ``did_you_mean`` is the nearest known name.
    """

    @property
    def parameter(self) -> str | None:
        return _text(self.body.get("parameter"))

    @property
    def did_you_mean(self) -> str | None:
        return _text(self.body.get("did_you_mean"))


class ScreenNotFound(InvalidParameter):
    """422 ``screen_not_found``: the phone's photo could not be placed on the screen picture.

    ``hint`` is a short, user-facing suggestion ("move closer", "hold steady", …).
    """

    @property
    def hint(self) -> str | None:
        return _text(self.body.get("hint"))

    @property
    def confidence(self) -> float | None:
        return _number(self.body.get("confidence"))


class RateLimited(APIError):
    """429: too many requests; ``retry_after`` says when to try again."""


class HeadersTooLarge(APIError):
    """431: the request's header fields add up to more than the server takes (64 KiB)."""


class InternalServerError(APIError):
    """5xx."""


class ServiceUnavailable(InternalServerError):
    """503: nothing was done or charged; ``retry_after`` says when to try again.

    ``code`` says why: ``overloaded``, ``starting``, ``database_unavailable``, ``storage_full``,
    ``inference_unavailable`` … (``PROBLEM_CODES[503]``).
    """


class Overloaded(ServiceUnavailable):
    """503 ``overloaded``: the server's work queue is full."""


class Starting(ServiceUnavailable):
    """503 ``starting``: the server is still loading its model."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: AuthenticationError,
    402: InsufficientCredits,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidParameter,
    429: RateLimited,
    431: HeadersTooLarge,
    503: ServiceUnavailable,
}

# A problem code that names a more specific class than its status does.
_BY_CODE: dict[str, type[APIError]] = {
    "screen_not_found": ScreenNotFound,
    "no_screen": NoScreen,
    "overloaded": Overloaded,
    "starting": Starting,
}


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Every problem code the server documents (its OpenAPI document), by status.
PROBLEM_CODES: Mapping[int, frozenset[str]] = {
    400: _codes("unreadable_image empty_image bad_input malformed_multipart invalid_webhook_signature"),
    401: _codes("missing_api_key missing_token"),
    402: _codes("insufficient_credits account_suspended"),
    403: _codes(
        "invalid_api_key revoked_api_key insufficient_scope invalid_token revoked_token wrong_role bad_signature "
        "url_expired"
    ),
    404: _codes("not_found pairing_not_found asset_not_found invalid_code api_key_not_found account_not_found"),
    409: _codes("idempotency_key_in_use pairing_full illegal_transition no_screen"),
    410: _codes("code_expired code_used pairing_closed"),
    413: _codes("payload_too_large image_too_large"),
    415: _codes("unsupported_media_type"),
    422: _codes(
        "invalid_parameter invalid_option unknown_parameter duplicate_parameter conflicting_parameter "
        "missing_image_file idempotency_key_mismatch invalid_idempotency_key malformed_code invalid_screen "
        "screen_not_found unknown_plan unknown_pack invalid_amount"
    ),
    429: _codes("rate_limited too_many_attempts"),
    431: _codes("headers_too_large"),
    502: _codes("payments_error"),
    503: _codes(
        "overloaded database_unavailable redis_unavailable storage_unavailable storage_full hub_unavailable "
        "pairing_unavailable service_unavailable payments_unavailable payments_not_configured starting "
        "inference_unavailable"
    ),
}


def error_class(status: int, code: str | None = None) -> type[APIError]:
    """The exception class for a status and problem code."""
    specific = _BY_CODE.get(code or "")
    if specific is not None and issubclass(specific, _BY_STATUS.get(status, APIError)):
        return specific
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return InternalServerError
    return APIError


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
