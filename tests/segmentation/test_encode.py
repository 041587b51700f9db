"""Output encoders: the fast PNG writer must produce standard, lossless PNGs; WebP keeps alpha."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from segmentation.encode import encode, encode_png, encode_webp


def pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize(
    ("shape", "mode"),
    [((37, 53), "L"), ((37, 53, 2), "LA"), ((37, 53, 3), "RGB"), ((37, 53, 4), "RGBA"), ((1, 1, 4), "RGBA")],
)
def test_png_round_trips_exactly(shape, mode: str) -> None:
    original = pixels(shape)
    data = encode_png(original)
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.mode == mode
    assert img.size == (shape[1], shape[0])
    assert (np.asarray(img) == original).all()


def test_png_chunks_are_valid() -> None:
    data = encode_png(pixels((20, 30, 4)))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        crc = int.from_bytes(data[pos + 8 + length : pos + 12 + length], "big")
        assert zlib.crc32(kind + payload) == crc, kind
        kinds.append(kind)
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    Image.open(io.BytesIO(data)).verify()


def test_png_compresses_transparent_areas() -> None:
    empty = np.zeros((500, 500, 4), np.uint8)
    assert len(encode_png(empty)) < 500 * 500 * 4 // 100  # under 1% of the raw size


def test_png_rejects_non_uint8() -> None:
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 4), np.uint16))


def test_webp_keeps_alpha() -> None:
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[:, 30:] = (200, 30, 30, 255)
    data = encode_webp(rgba)
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    img = Image.open(io.BytesIO(data))
    assert img.mode == "RGBA" and img.size == (60, 40)
    alpha = np.asarray(img)[:, :, 3]
    assert alpha[:, :28].max() == 0
    assert alpha[:, 32:].min() == 255


def test_encode_dispatch() -> None:
    rgba = pixels((10, 10, 4))
    assert encode(rgba, "png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert encode(rgba, "webp")[8:12] == b"WEBP"
    with pytest.raises(ValueError):
        encode(rgba, "gif")
