"""The segmentation exception tree.

Vendor errors (Pillow, onnxruntime, OpenCV) are translated into these at the
module that calls the vendor, so callers only ever see ``SegmentationError``.
"""

from __future__ import annotations

ECHO_LIMIT = 64  # characters of a client's value an error detail repeats


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """A client's value as an error detail may repeat it: cut to ``limit`` characters.

    Details name what was refused so a caller can see the mistake, but a 5000-character
    id must not come back whole. Quote it where it is used (``{echo(x)!r}``).
    """
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


class SegmentationError(Exception):
    """Base of everything this package raises on purpose."""

    code = "segmentation_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InputError(SegmentationError):
    """The caller's input is at fault; retrying the same input will not help."""

    code = "bad_input"


class EmptyImage(InputError):
    code = "empty_image"


class UnreadableImage(InputError):
    """A supported format whose bytes are corrupt or truncated."""

    code = "unreadable_image"


class UnsupportedMediaType(InputError):
    """Bytes that are not one of the formats we decode."""

    code = "unsupported_media_type"


class ImageTooLarge(InputError):
    """Too many bytes, pixels, or too long a side (checked from the header)."""

    code = "image_too_large"


class InvalidOption(InputError):
    """A clip option that cannot be honoured (bad colour, margin, size...)."""

    code = "invalid_option"


class ModelError(SegmentationError):
    """The model file is missing, unreadable, or not a model we know how to run."""

    code = "model_error"


class Overloaded(SegmentationError):
    """The work queue is full; the caller should retry after ``retry_after`` seconds."""

    code = "overloaded"

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class InferenceUnavailable(SegmentationError):
    """The inference server cannot answer now (unreachable, model not ready, too slow, queue full).

    A backing service's fault, not the caller's: retry after ``retry_after`` seconds.
    """

    code = "inference_unavailable"

    def __init__(self, detail: str, retry_after: float = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
