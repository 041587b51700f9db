"""Image decoding: sniff the format, check limits from the header, decode once.

Phones store photos rotated with an EXIF orientation tag; everything here
works in *displayed* orientation so cut-outs come back upright.

An image is decoded in full or refused (``UnreadableImage``): decoders fill
what is missing with zeros and say nothing (libpng/Pillow when a PNG's
compressed stream ends early, libjpeg when a scan hits a marker too soon), so
a truncated upload would otherwise be cut, charged and stored as an empty
picture. PNG's pixel data is measured before Pillow sees it (cheaply from the
chunk sizes in ``probe``, exactly by inflating in ``decode``); JPEG's is read
strictly by libjpeg-turbo, whose warnings say when data was missing.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

from .errors import EmptyImage, ImageTooLarge, UnreadableImage, UnsupportedMediaType
from .units import describe_bytes, describe_pixels

try:  # libjpeg-turbo straight into numpy: ~3x faster than Pillow for a 12 MP photo.
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - Pillow decodes every JPEG too, only slower
    _simplejpeg = None

try:  # ISA-L inflates ~3x faster than zlib: measuring a 12 MP PNG's pixel data costs ~0.04 s.
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - a hard dependency; zlib is only slower
    _inflate = zlib

# EXIF orientations 5..8 swap width and height when displayed.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
# Adam7 passes: (first column, first row, column step, row step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
# Deflate's best case is 258 bytes from 2 bits (~1032:1): fewer compressed bytes
# than this cannot hold the rows the header claims, whatever their pixels.
_DEFLATE_MAX_RATIO = 1032
_INFLATE_STEP = 1 << 20  # inflate in 1 MB pieces: the rows are counted, not kept

# libjpeg-turbo warnings that mean pixel data is missing or cannot be decoded (it
# would fill the rest with grey); others (extraneous bytes, odd markers) are benign.
_JPEG_DATA_LOST = ("premature end", "bad huffman code", "bad arithmetic code")

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
    if data[:8] == _PNG_SIGNATURE:
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "heif"
    raise UnsupportedMediaType("Unsupported image type: send a JPEG, PNG, WebP or HEIC image.")


def _open(data: bytes, fmt: str, limits: ImageLimits | None = None) -> Image.Image:
    if fmt == "heif":
        _register_heif()
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit before decoding; Pillow's bomb
            # warning would only duplicate it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        # Pillow refuses far-too-big headers itself; say it in our words, with our limits.
        limits = limits or ImageLimits()
        size = _claimed_size(data, fmt)
        if size is not None:
            _check_size(*size, limits)
        raise ImageTooLarge(_bomb_detail(str(exc), limits)) from exc
    except Exception as exc:  # Pillow raises many types for bad headers
        raise UnreadableImage(f"The {fmt.upper()} image cannot be read: {exc}") from exc


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def probe(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Read only the header (a PNG's chunk sizes too) and refuse what is too big, or
    far too short for its size, before any pixel is decoded."""
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"The image is {describe_bytes(len(data))}, larger than the {describe_bytes(limits.max_bytes)} limit."
        )
    fmt = sniff_format(data)
    img = _open(data, fmt, limits)
    width, height = img.size
    orientation = _orientation(img)
    _check_size(width, height, limits)
    if fmt == "png":
        _png_layout(data).check_length()
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(format=fmt, width=width, height=height, orientation=orientation)


def _claimed_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """The size a header claims, read by the format's own Pillow plugin (which, unlike
    ``Image.open``, does not refuse bombs itself); None when it cannot tell."""
    try:
        factory, _ = Image.OPEN[fmt.upper()]
        with factory(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - any failure: fall back to Pillow's pixel count
        return None


def _bomb_detail(pillow_message: str, limits: ImageLimits) -> str:
    claimed = re.search(r"\((\d+) pixels\)", pillow_message)
    size = f"{describe_pixels(int(claimed.group(1)))}" if claimed else "far more pixels than the limit"
    return (
        f"The image claims {size}; the limit is {describe_pixels(limits.max_pixels)} "
        f"and {limits.max_side} pixels a side."
    )


def _check_size(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise UnreadableImage("The image has no pixels.")
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} ({describe_pixels(width * height)}); the limit is "
            f"{describe_pixels(limits.max_pixels)} and {limits.max_side} pixels a side."
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
    elif info.format == "png":
        _png_layout(data).check_pixels()
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
    raises, and Pillow then decodes it with its own tolerance and errors,
    except a warning that pixel data is missing, which refuses the image
    (Pillow would fill the rest with grey). The others are still read here,
    strictly at 1/8 scale, for that verdict alone.
    Scaled decodes pick the smallest M/8 DCT scale that is at least ``min_size``
    (as Pillow's ``draft`` does with its 1/1..1/8 scales).
    """
    if _simplejpeg is None:
        return None
    try:
        height, width, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    stored = _stored_size((info.width, info.height), info.orientation)
    plain = colorspace in ("YCbCr", "Gray") and (width, height) == stored
    if not plain:
        _check_jpeg(data, colorspace="CMYK" if colorspace in ("CMYK", "YCCK") else "RGB", min_width=1, min_height=1)
        return None
    kwargs = {}
    if min_size is not None:
        want_w, want_h = _stored_size(min_size, info.orientation)
        kwargs = {"min_width": max(1, want_w), "min_height": max(1, want_h)}
    rgb = _check_jpeg(data, colorspace="RGB", **kwargs)
    return None if rgb is None else DecodedImage(rgb=rgb, alpha=None)


def _check_jpeg(data: bytes, **kwargs: object) -> np.ndarray | None:
    """A strict libjpeg-turbo decode: the pixels, None on a benign warning, or the refusal."""
    try:
        return _simplejpeg.decode_jpeg(data, strict=True, **kwargs)
    except ValueError as exc:
        if any(sign in str(exc).lower() for sign in _JPEG_DATA_LOST):
            raise UnreadableImage(f"The JPEG image is corrupt or truncated: {exc}") from exc
        return None


class _PngLayout(NamedTuple):
    """What a PNG's chunks say about its pixel data, read without inflating it."""

    raw_size: int  # the bytes the IDAT stream must inflate to: every row with its filter byte
    idat: tuple[memoryview, ...]

    def check_length(self) -> None:
        """Refuse, from sizes alone, compressed data far too short for the claimed rows."""
        compressed = sum(len(part) for part in self.idat)
        if (compressed + 1) * _DEFLATE_MAX_RATIO < self.raw_size:
            raise UnreadableImage(
                f"The PNG image is truncated: {compressed} bytes of pixel data cannot hold the "
                f"{self.raw_size} its header claims."
            )

    def check_pixels(self) -> None:
        """Inflate the pixel data (counting, not keeping it) and refuse it if it ends early.

        Pillow stops quietly where the compressed stream ends and leaves the
        remaining rows black. Inflating stops at the claimed size, so trailing
        data costs nothing.
        """
        inflater = _inflate.decompressobj()
        missing = self.raw_size
        try:
            for part in self.idat:
                pending = part
                while pending and missing > 0 and not inflater.eof:
                    missing -= len(inflater.decompress(pending, min(missing, _INFLATE_STEP)))
                    pending = inflater.unconsumed_tail
        except _inflate.error as exc:
            raise UnreadableImage(f"The PNG image is corrupt: {exc}") from exc
        if missing > 0:
            raise UnreadableImage(
                f"The PNG image is truncated: its pixel data ends {missing} bytes short of {self.raw_size}."
            )


def _png_layout(data: bytes) -> _PngLayout:
    """Walk a PNG's chunk headers: IHDR first, every chunk whole, IEND reached."""
    view = memoryview(data)
    pos, end = len(_PNG_SIGNATURE), len(data)
    raw_size = 0
    idat: list[memoryview] = []
    while True:
        if pos + 12 > end:
            raise UnreadableImage("The PNG image is truncated: it ends before its IEND chunk.")
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = pos + 8
        if body + length + 4 > end:
            raise UnreadableImage(f"The PNG image is truncated inside its {kind!r} chunk.")
        if pos == len(_PNG_SIGNATURE):
            if kind != b"IHDR" or length != 13:
                raise UnreadableImage("The PNG image does not start with its IHDR chunk.")
            raw_size = _png_raw_size(*struct.unpack_from(">IIBB", data, body), interlaced=data[body + 12] == 1)
        elif kind == b"IDAT":
            idat.append(view[body : body + length])
        elif kind == b"IEND":
            return _PngLayout(raw_size=raw_size, idat=tuple(idat))
        pos = body + length + 4


def _png_raw_size(width: int, height: int, depth: int, colour: int, *, interlaced: bool) -> int:
    """Bytes of filtered rows for this header (each row one filter byte, then its samples)."""
    bits = _PNG_CHANNELS.get(colour, 4) * depth
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        columns = max(0, -(-(width - x0) // dx))
        rows = max(0, -(-(height - y0) // dy))
        if columns and rows:
            total += rows * (1 + -(-columns * bits // 8))
    return total


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
