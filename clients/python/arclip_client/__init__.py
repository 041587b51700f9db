"""arclip_client — the Python SDK of arclip.

The public API (SPEC §5)::

    from arclip_client import Arclip

    with Arclip(api_key="arc_live_…") as arclip:
        result = arclip.clip("photo.jpg", crop=True)
        result.save("cutout.png")
        print(result.foreground, result.credits_charged, result.credits_remaining)

:class:`AsyncArclip` is the same for asyncio. The device API (SPEC §6) —
:class:`DesktopDevice`, :class:`PhoneDevice` and their live :class:`EventStream` — is in
:mod:`arclip_client.devices` and re-exported here.
"""

from ._async_client import AsyncArclip
from ._client import Arclip
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ArclipError,
    AuthenticationError,
    BadRequest,
    Conflict,
    Gone,
    HeadersTooLarge,
    InsufficientCredits,
    InternalServerError,
    InvalidParameter,
    NoScreen,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    PROBLEM_CODES,
    ScreenNotFound,
    ServiceUnavailable,
    Starting,
    SyncClosed,
    UnsupportedMediaType,
)
from ._events import EventStream
from ._retry import RetryPolicy
from ._types import (
    ASSET_CREATED,
    ASSET_PLACED,
    PAIRING_CLOSED,
    PASTE_FAILED,
    PEER_JOINED,
    PEER_LEFT,
    RESYNC,
    Account,
    Asset,
    Box,
    ClipResult,
    DeviceInfo,
    Event,
    Pairing,
    PairingCode,
    PairingInfo,
    Placement,
    RateLimit,
    ScreenInfo,
    Usage,
)
from ._version import __version__
from .devices import DesktopDevice, PhoneDevice

__all__ = [
    "__version__",
    # clients
    "Arclip",
    "AsyncArclip",
    "RetryPolicy",
    # results
    "ClipResult",
    "Account",
    "Box",
    "RateLimit",
    "Usage",
    # devices
    "DesktopDevice",
    "PhoneDevice",
    "EventStream",
    "Event",
    "Pairing",
    "PairingCode",
    "PairingInfo",
    "DeviceInfo",
    "Asset",
    "Placement",
    "ScreenInfo",
    "ASSET_CREATED",
    "ASSET_PLACED",
    "PASTE_FAILED",
    "PEER_JOINED",
    "PEER_LEFT",
    "PAIRING_CLOSED",
    "RESYNC",
    # errors
    "ArclipError",
    "APIConnectionError",
    "APITimeoutError",
    "SyncClosed",
    "APIError",
    "BadRequest",
    "AuthenticationError",
    "InsufficientCredits",
    "PermissionDenied",
    "NotFound",
    "Conflict",
    "NoScreen",
    "Gone",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "InvalidParameter",
    "ScreenNotFound",
    "RateLimited",
    "HeadersTooLarge",
    "InternalServerError",
    "ServiceUnavailable",
    "Overloaded",
    "Starting",
    "PROBLEM_CODES",
]
