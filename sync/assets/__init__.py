"""Captured assets, screen pictures, and the capture/paste flow that ties them to the hub."""

from .capture import (
    ASSET_CREATED,
    ASSET_PLACED,
    CAPTURE_OPTION_NAMES,
    PASTE_FAILED,
    CaptureService,
    Publisher,
    capture_options,
)
from .errors import (
    AssetError,
    AssetNotFound,
    BadSignature,
    ExpiredSignature,
    InvalidScreen,
    LocatorBusy,
    NoScreen,
    ScreenNotLocated,
    SignatureError,
)
from .models import Asset, BBox, ScreenInfo
from .retention import Sweeper
from .screens import Locator, ScreenService
from .service import AssetService
from .signing import UrlSigner, load_signing_key

__all__ = [
    "ASSET_CREATED", "ASSET_PLACED", "CAPTURE_OPTION_NAMES", "PASTE_FAILED", "Asset", "AssetError", "AssetNotFound", "AssetService",
    "BBox", "BadSignature", "CaptureService", "ExpiredSignature", "InvalidScreen", "Locator", "LocatorBusy",
    "NoScreen", "Publisher", "ScreenInfo", "ScreenNotLocated", "ScreenService", "SignatureError", "Sweeper",
    "UrlSigner", "capture_options", "load_signing_key",
]
