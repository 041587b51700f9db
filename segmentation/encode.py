"""Output encoders: a fast PNG writer and WebP with alpha.

PNG is what clients want for cut-outs, and zlib at any level dominates
rembg's time on 12 MP images. Here rows are "Up"-filtered with numpy and the
stream is deflated by ISA-L (igzip), ~10x faster than libpng at level 1 and
slightly smaller, producing a standard PNG any decoder reads.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

try:  # ISA-L is a hard dependency; zlib keeps us correct if a platform lacks a wheel.
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover
    _deflate = zlib

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)
_FILTER_UP = 2


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _up_filtered(pixels: np.ndarray) -> np.ndarray:
    """Every row prefixed by filter type 2 (Up): the byte minus the byte above, mod 256."""
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1)
    out = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = _FILTER_UP
    out[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
    return out


# Rows filtered and deflated per strip: a ~1 MB buffer that stays in cache
# instead of a filtered copy of the whole image (48 MB at 12 MP RGBA).
_STRIP_BYTES = 1 << 20


def _deflate_up_filtered(pixels: np.ndarray, level: int) -> bytes:
    """The zlib stream of the Up-filtered rows, built strip by strip (same bytes as filtering it all at once)."""
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1)
    strip = max(1, min(height, _STRIP_BYTES // (rows.shape[1] + 1)))
    buffer = np.empty((strip, rows.shape[1] + 1), dtype=np.uint8)
    buffer[:, 0] = _FILTER_UP
    compressor = _deflate.compressobj(level)
    parts = []
    for top in range(0, height, strip):
        count = min(strip, height - top)
        out = buffer[:count]
        if top == 0:
            out[0, 1:] = rows[0]
            np.subtract(rows[1:count], rows[: count - 1], out=out[1:, 1:])
        else:
            np.subtract(rows[top : top + count], rows[top - 1 : top + count - 1], out=out[:, 1:])
        parts.append(compressor.compress(memoryview(out).cast("B")))
    parts.append(compressor.flush())
    return b"".join(parts)


def encode_png(pixels: np.ndarray, level: int = 1) -> bytes:
    """Encode (H, W), (H, W, 2|3|4) uint8 pixels as PNG."""
    if pixels.dtype != np.uint8:
        raise ValueError("encode_png takes uint8 pixels")
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPE[channels], 0, 0, 0)
    data = _deflate_up_filtered(np.ascontiguousarray(pixels), level)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def encode_webp(pixels: np.ndarray, quality: int = 90) -> bytes:
    """WebP keeps alpha; method 0 is the fast end of libwebp's speed/size dial."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "WEBP", quality=quality, method=0)
    return buffer.getvalue()


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    if fmt == "png":
        return encode_png(pixels)
    if fmt == "webp":
        return encode_webp(pixels)
    raise ValueError(f"unknown output format {fmt!r}")
