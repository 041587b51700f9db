"""Image decoding: sniff the format, check limits from the header, decode once.

Phones store photos rotated with an EXIF orientation tag; everything here
works in *displayed* orientation so cut-outs come back upright.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from PIL import Image

from .errors import EmptyImage, ImageTooLarge, UnreadableImage, UnsupportedMediaType

try:  # libjpeg-turbo straight into numpy: ~3x faster than Pillow for a 12 MP photo.
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - Pillow decodes every JPEG too, only slower
    _simplejpeg = None

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
    if info.format == "jpeg":
        fast = _decode_jpeg_fast(data, info, min_size)
        if fast is not None:
            return orient(fast, info.orientation)
    img = _open(data, info.format)
    try:
        if min_size is not None and info.format == "jpeg":
            want_w, want_h = _stored_size(min_size, info.orientation)
            img.draft("RGB", (max(1, want_w), max(1, want_h)))
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableImage(f"The {info.format.upper()} image is corrupt or truncated: {exc}") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    return orient(_to_rgb(img), info.orientation)


def _stored_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """A displayed (width, height) in the stored pixels' axes."""
    return (size[1], size[0]) if orientation in _TRANSPOSED_ORIENTATIONS else size


def _decode_jpeg_fast(data: bytes, info: ImageInfo, min_size: tuple[int, int] | None) -> DecodedImage | None:
    """libjpeg-turbo via simplejpeg, straight into numpy; None means "let Pillow do it".

    Only the plain cases: YCbCr and greyscale (CMYK/YCCK need Pillow's Adobe
    handling), and only clean streams: with ``strict`` any libjpeg warning
    raises, and Pillow then decodes it with its own tolerance and errors.
    Scaled decodes pick the smallest M/8 DCT scale that is at least ``min_size``
    (as Pillow's ``draft`` does with its 1/1..1/8 scales).
    """
    if _simplejpeg is None:
        return None
    try:
        height, width, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("YCbCr", "Gray") or (width, height) != _stored_size((info.width, info.height), info.orientation):
        return None
    kwargs = {}
    if min_size is not None:
        want_w, want_h = _stored_size(min_size, info.orientation)
        kwargs = {"min_width": max(1, want_w), "min_height": max(1, want_h)}
    try:
        rgb = _simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **kwargs)
    except ValueError:
        return None
    return DecodedImage(rgb=rgb, alpha=None)


def orient(image: DecodedImage, orientation: int) -> DecodedImage:
    """Apply an EXIF orientation (as Pillow's ``exif_transpose``), with OpenCV's fast transposes."""
    if orientation == 1:
        return image
    alpha = None if image.alpha is None else _orient_array(image.alpha, orientation)
    return DecodedImage(rgb=_orient_array(image.rgb, orientation), alpha=alpha)


def _orient_array(pixels: np.ndarray, orientation: int) -> np.ndarray:
    if orientation == 2:
        return cv2.flip(pixels, 1)
    if orientation == 3:
        return cv2.rotate(pixels, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(pixels, 0)
    if orientation == 5:
        return cv2.transpose(pixels)
    if orientation == 6:
        return cv2.rotate(pixels, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(pixels), -1)
    if orientation == 8:
        return cv2.rotate(pixels, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return pixels


def _to_rgb(img: Image.Image) -> DecodedImage:
    mode = img.mode
    alpha: np.ndarray | None = None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: Pillow's convert("L") clips instead of scaling.
        grey = np.asarray(img, dtype=np.uint32)
        peak = 65535 if mode.startswith("I;16") or grey.max(initial=0) > 255 else 255
        grey8 = (grey * 255 // max(peak, 1)).astype(np.uint8)
        return DecodedImage(rgb=np.repeat(grey8[:, :, None], 3, axis=2), alpha=None)
    if mode in ("P", "L", "RGB") and "transparency" in img.info:
        # A palette entry or a colour key (PNG tRNS) marks transparent pixels.
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
