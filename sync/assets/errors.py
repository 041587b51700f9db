"""The exception tree of captures, assets and screen pictures.

The API maps these to problem+json at the edge; nothing here knows HTTP.
"""

from __future__ import annotations


class AssetError(Exception):
    """Base of everything this package raises on purpose."""

    code = "asset_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class AssetNotFound(AssetError):
    """No such asset, or not one the caller may see (the two are not told apart)."""

    code = "asset_not_found"


class SignatureError(AssetError):
    code = "bad_signature"


class BadSignature(SignatureError):
    code = "bad_signature"


class ExpiredSignature(SignatureError):
    code = "url_expired"


class NoScreen(AssetError):
    """A paste before the companion sent any screen picture."""

    code = "no_screen"

    def __init__(self, detail: str, hint: str) -> None:
        super().__init__(detail)
        self.hint = hint


class InvalidScreen(AssetError):
    """A screen picture that decodes but cannot be used (too small, empty)."""

    code = "invalid_screen"


class ScreenNotLocated(AssetError):
    """The phone's photo could not be placed on the screen picture; ``hint`` tells the user why."""

    code = "screen_not_found"

    def __init__(self, detail: str, hint: str, confidence: float = 0.0) -> None:
        super().__init__(detail)
        self.hint = hint
        self.confidence = confidence


class LocatorBusy(AssetError):
    """Too many pastes are being located at once."""

    code = "overloaded"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
