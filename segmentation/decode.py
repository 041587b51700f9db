"""Image decoding: sniff the format, check limits from the header, decode once.

Phones store photos rotated with an EXIF orientation tag; everything here
works in *displayed* orientation so cut-outs come back upright.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageOps

from .errors import EmptyImage, ImageTooLarge, UnreadableImage, UnsupportedMediaType

# EXIF orientations 5..8 swap width and height when displayed.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif"}


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_side: int = 16_384


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "jpeg" | "png" | "webp" | "heif"
    width: int  # displayed (after EXIF orientation)
    height: int
    orientation: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass
class DecodedImage:
    """RGB pixels in displayed orientation, plus the input's own alpha if any."""

    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray | None  # (H, W) uint8, None when fully opaque


@cache
def _register_heif() -> None:
    # pillow-heif adds HEIC/HEIF to Pillow; registering is idempotent but not free.
    import pillow_heif

    pillow_heif.register_heif_opener()


def sniff_format(data: bytes) -> str:
    """Name the container from its magic bytes, or raise."""
    if not data:
        raise EmptyImage("The image is empty.")
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "heif"
    raise UnsupportedMediaType("Unsupported image type: send a JPEG, PNG, WebP or HEIC image.")


def _open(data: bytes, fmt: str) -> Image.Image:
    if fmt == "heif":
        _register_heif()
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit before decoding; Pillow's bomb
            # warning would only duplicate it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    except Exception as exc:  # Pillow raises many types for bad headers
        raise UnreadableImage(f"The {fmt.upper()} image cannot be read: {exc}") from exc


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def probe(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Read only the header and refuse what is too big before any pixel is decoded."""
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"The image is {len(data)} bytes; the limit is {limits.max_bytes}.")
    fmt = sniff_format(data)
    img = _open(data, fmt)
    width, height = img.size
    orientation = _orientation(img)
    _check_size(width, height, limits)
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(format=fmt, width=width, height=height, orientation=orientation)


def _check_size(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise UnreadableImage("The image has no pixels.")
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height}; the limit is {limits.max_pixels} pixels "
            f"and {limits.max_side} pixels a side."
        )


def decode(data: bytes, info: ImageInfo, *, min_size: tuple[int, int] | None = None) -> DecodedImage:
    """Decode to RGB in displayed orientation.

    ``min_size`` (width, height, displayed) lets JPEG decode at a reduced DCT
    scale that is still at least that big: an 8x smaller decode is ~10x faster,
    which is all the model input or a preview needs.
    """
    img = _open(data, info.format)
    try:
        if min_size is not None and info.format == "jpeg":
            want_w, want_h = min_size
            if info.orientation in _TRANSPOSED_ORIENTATIONS:
                want_w, want_h = want_h, want_w
            img.draft("RGB", (max(1, want_w), max(1, want_h)))
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableImage(f"The {info.format.upper()} image is corrupt or truncated: {exc}") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    if info.orientation != 1:
        img = ImageOps.exif_transpose(img)
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> DecodedImage:
    mode = img.mode
    alpha: np.ndarray | None = None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: Pillow's convert("L") clips instead of scaling.
        grey = np.asarray(img, dtype=np.uint32)
        peak = 65535 if mode.startswith("I;16") or grey.max(initial=0) > 255 else 255
        grey8 = (grey * 255 // max(peak, 1)).astype(np.uint8)
        return DecodedImage(rgb=np.repeat(grey8[:, :, None], 3, axis=2), alpha=None)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(img.convert("RGBA"))
        alpha = np.ascontiguousarray(rgba[:, :, 3])
        rgb = np.ascontiguousarray(rgba[:, :, :3])
        if alpha.min(initial=255) == 255:
            alpha = None
        return DecodedImage(rgb=rgb, alpha=alpha)
    if mode != "RGB":
        img = img.convert("RGB")  # CMYK (Adobe-inverted too), L, YCbCr, 1, F
    return DecodedImage(rgb=np.asarray(img), alpha=None)
