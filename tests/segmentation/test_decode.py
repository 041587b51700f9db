"""Decoding: formats, EXIF orientation, colour modes, limits checked from the header."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from segmentation import ClipEngine, ClipOptions, EngineConfig
from segmentation.decode import ImageLimits, decode, probe, sniff_format
from segmentation.errors import EmptyImage, ImageTooLarge, UnreadableImage, UnsupportedMediaType
from tests.conftest import (
    BACKGROUND_RGB,
    OBJECT_RGB,
    _png_chunk,
    disk_model,
    encode_image,
    exif_jpeg,
    photo,
    png_bomb,
    stored_for_orientation,
)

LIMITS = ImageLimits()

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def marked(width: int = 96, height: int = 64) -> np.ndarray:
    """Blue image with a red block at the top-left and a green block at the top-right corner."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = BLUE
    img[:24, :24] = RED
    img[:24, -24:] = GREEN
    return img


def assert_close(pixel, expected, tol: int = 40) -> None:
    assert np.abs(np.asarray(pixel, int) - np.asarray(expected, int)).max() <= tol, (pixel, expected)


def decode_all(data: bytes, **kw):
    info = probe(data, LIMITS)
    return info, decode(data, info, **kw)


# --- formats -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "name", "save_kw"),
    [
        ("JPEG", "jpeg", {"quality": 95}),
        ("PNG", "png", {}),
        ("WEBP", "webp", {"quality": 95}),
        ("WEBP", "webp", {"lossless": True}),
        ("HEIF", "heif", {"quality": 95}),
    ],
)
def test_formats_decode_to_rgb(fmt: str, name: str, save_kw: dict) -> None:
    data = encode_image(marked(), fmt, **save_kw)
    info, image = decode_all(data)
    assert info.format == name
    assert (info.width, info.height, info.orientation) == (96, 64, 1)
    assert image.rgb.shape == (64, 96, 3) and image.rgb.dtype == np.uint8
    assert image.alpha is None
    assert_close(image.rgb[10, 10], RED)
    assert_close(image.rgb[10, -10], GREEN)
    assert_close(image.rgb[50, 48], BLUE)


def test_sniff_format_by_magic_not_name() -> None:
    assert sniff_format(encode_image(marked(), "PNG")) == "png"
    assert sniff_format(encode_image(marked(), "JPEG")) == "jpeg"
    assert sniff_format(encode_image(marked(), "WEBP")) == "webp"
    assert sniff_format(encode_image(marked(), "HEIF")) == "heif"
    with pytest.raises(EmptyImage):
        sniff_format(b"")
    for other in (encode_image(marked(), "GIF"), encode_image(marked(), "BMP"), b"hello, world\n" * 10):
        with pytest.raises(UnsupportedMediaType):
            sniff_format(other)


# --- EXIF orientation ------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_upright_displayed_image(orientation: int) -> None:
    displayed = marked(96, 64)
    data = exif_jpeg(displayed, orientation)
    stored = Image.open(io.BytesIO(data))
    if orientation >= 5:
        assert stored.size == (64, 96)  # really stored rotated

    info, image = decode_all(data)
    assert info.orientation == orientation
    assert (info.width, info.height) == (96, 64)
    assert image.rgb.shape == (64, 96, 3)
    assert_close(image.rgb[8, 8], RED)
    assert_close(image.rgb[8, -8], GREEN)
    assert_close(image.rgb[-8, 8], BLUE)
    assert_close(image.rgb[-8, -8], BLUE)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_with_reduced_decode(orientation: int) -> None:
    displayed = np.repeat(np.repeat(marked(96, 64), 16, axis=0), 16, axis=1)  # 1536 x 1024
    data = exif_jpeg(displayed, orientation)
    info = probe(data, LIMITS)
    assert (info.width, info.height) == (1536, 1024)
    image = decode(data, info, min_size=(300, 200))
    h, w = image.rgb.shape[:2]
    assert w >= 300 and h >= 200, "a reduced decode must never be smaller than asked"
    assert w < 1536, "JPEG DCT scaling should have reduced the decode"
    assert abs(w / h - 1.5) < 0.02
    assert_close(image.rgb[h // 16, w // 16], RED)
    assert_close(image.rgb[h // 16, w - w // 16], GREEN)


def test_heif_with_orientation_is_upright() -> None:
    displayed = marked(96, 64)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode_image(np.rot90(displayed, 1).copy(), "HEIF", quality=95, exif=exif.tobytes())
    info, image = decode_all(data)
    assert (info.width, info.height) == (96, 64)
    assert_close(image.rgb[8, 8], RED)
    assert_close(image.rgb[8, -8], GREEN)


def test_reduced_jpeg_decode_is_at_least_requested() -> None:
    data = encode_image(photo(2000, 1500), "JPEG")
    info = probe(data, LIMITS)
    for want in [(250, 188), (500, 375), (251, 188), (1000, 750), (1999, 1499)]:
        image = decode(data, info, min_size=want)
        h, w = image.rgb.shape[:2]
        assert w >= want[0] and h >= want[1], (want, (w, h))
    small = decode(data, info, min_size=(250, 188))
    assert small.rgb.shape[1] <= 500, "an 8x smaller request should decode at 1/4 or 1/8 scale"
    full = decode(data, info)
    assert full.rgb.shape == (1500, 2000, 3)


# --- colour modes ---------------------------------------------------------------------


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # red
    cmyk.paste((255, 0, 255, 0), (32, 0, 64, 48))  # green on the right half
    info, image = decode_all(encode_image(cmyk, "JPEG", quality=95))
    assert info.format == "jpeg"
    assert image.rgb.shape == (48, 64, 3)
    assert_close(image.rgb[24, 8], RED, tol=50)
    assert_close(image.rgb[24, 56], GREEN, tol=50)


def test_greyscale_jpeg_and_png() -> None:
    grey = np.zeros((48, 64), np.uint8)
    grey[:, 32:] = 200
    for fmt in ("JPEG", "PNG"):
        _, image = decode_all(encode_image(grey, fmt))
        assert image.rgb.shape == (48, 64, 3)
        assert_close(image.rgb[24, 8], (0, 0, 0), tol=8)
        assert_close(image.rgb[24, 56], (200, 200, 200), tol=8)


def test_16bit_greyscale_png_is_scaled_not_clipped() -> None:
    grey16 = np.zeros((48, 64), np.uint16)
    grey16[:, 16:32] = 16384
    grey16[:, 32:48] = 32768
    grey16[:, 48:] = 65535
    img = Image.fromarray(grey16)
    data = encode_image(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    _, image = decode_all(data)
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == (48, 64, 3)
    assert_close(image.rgb[0, 0], (0, 0, 0), tol=1)
    assert_close(image.rgb[0, 20], (64, 64, 64), tol=2)
    assert_close(image.rgb[0, 40], (128, 128, 128), tol=2)
    assert_close(image.rgb[0, 60], (255, 255, 255), tol=1)


def test_16bit_rgb_png() -> None:
    import cv2

    rgb16 = np.zeros((48, 64, 3), np.uint16)
    rgb16[:, :, 0] = 65535
    rgb16[:, :, 1] = 32768
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb16[:, :, ::-1]))  # OpenCV writes BGR
    assert ok
    data = encoded.tobytes()
    assert data[24] == 16  # IHDR bit depth
    info, image = decode_all(data)
    assert info.format == "png"
    assert image.rgb.dtype == np.uint8
    assert_close(image.rgb[10, 10], (255, 128, 0), tol=2)


def test_16bit_rgba_png_keeps_alpha() -> None:
    import cv2

    rgba16 = np.zeros((48, 64, 4), np.uint16)
    rgba16[:, :, 2] = 65535  # red (BGRA)
    rgba16[:, 32:, 3] = 65535  # right half opaque
    ok, encoded = cv2.imencode(".png", rgba16)
    assert ok
    _, image = decode_all(encoded.tobytes())
    assert image.alpha is not None
    assert image.alpha[10, 10] == 0 and image.alpha[10, 50] == 255
    assert_close(image.rgb[10, 50], RED, tol=2)


def test_palette_png_with_transparency() -> None:
    pal = Image.new("P", (64, 48), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 - 2) * 3)
    pal.paste(1, (32, 0, 64, 48))
    data = encode_image(pal, "PNG", transparency=0)  # index 0 (red) is transparent
    _, image = decode_all(data)
    assert image.alpha is not None
    assert image.alpha[24, 8] == 0
    assert image.alpha[24, 56] == 255
    assert_close(image.rgb[24, 56], GREEN, tol=0)


def test_opaque_palette_png_has_no_alpha() -> None:
    pal = Image.new("P", (64, 48), 1)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 - 2) * 3)
    _, image = decode_all(encode_image(pal, "PNG"))
    assert image.alpha is None
    assert_close(image.rgb[0, 0], GREEN, tol=0)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_rgba_input_alpha_is_kept(fmt: str) -> None:
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[:, :, :3] = RED
    rgba[:, 32:, 3] = 255
    kw = {"lossless": True} if fmt == "WEBP" else {}
    _, image = decode_all(encode_image(rgba, fmt, **kw))
    assert image.alpha is not None
    assert image.alpha[:, :30].max() == 0
    assert image.alpha[:, 34:].min() == 255


def test_fully_opaque_rgba_reports_no_alpha() -> None:
    rgba = np.full((48, 64, 4), 255, np.uint8)
    _, image = decode_all(encode_image(rgba, "PNG"))
    assert image.alpha is None


def test_greyscale_with_alpha_png() -> None:
    la = np.zeros((48, 64, 2), np.uint8)
    la[:, :, 0] = 180
    la[:, 32:, 1] = 255
    _, image = decode_all(encode_image(Image.fromarray(la, "LA"), "PNG"))
    assert image.alpha is not None and image.alpha[0, 0] == 0 and image.alpha[0, 63] == 255
    assert_close(image.rgb[0, 63], (180, 180, 180), tol=0)


async def test_transparent_input_stays_transparent_in_cutout() -> None:
    """The model says 'a centred disk'; the input's transparent left half must stay transparent."""
    rgba = np.zeros((240, 320, 4), np.uint8)
    rgba[:, :, :3] = photo(320, 240)
    rgba[:, 160:, 3] = 255  # left half transparent
    engine = ClipEngine(disk_model(), EngineConfig(concurrency=1))
    await engine.start()
    try:
        cut = await engine.cut(encode_image(rgba, "PNG"), ClipOptions())
    finally:
        await engine.close()
    assert cut.pixels.shape == (240, 320, 4)
    out_alpha = cut.pixels[:, :, 3]
    assert out_alpha[:, :160].max() == 0, "transparent input pixels became visible"
    assert (cut.pixels[:, :160, :3] == 0).all(), "transparent pixels must carry no colour"
    assert out_alpha[120, 200] == 255, "the opaque half of the disk must be kept"
    assert cut.foreground.left >= 160


# --- limits and broken input -------------------------------------------------------


def test_png_bomb_refused_from_header_quickly_and_cheaply() -> None:
    bomb = png_bomb(50_000, 50_000)
    assert len(bomb) < 10_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageTooLarge):
            probe(bomb, LIMITS)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 20 * 1024 * 1024


@pytest.mark.parametrize(
    ("size", "limits"),
    [
        ((200, 100), ImageLimits(max_pixels=19_999)),
        ((200, 100), ImageLimits(max_side=199)),
        ((100, 200), ImageLimits(max_side=199)),
    ],
)
def test_pixel_limits(size: tuple[int, int], limits: ImageLimits) -> None:
    data = encode_image(photo(*size), "PNG")
    with pytest.raises(ImageTooLarge):
        probe(data, limits)
    probe(data, ImageLimits())  # the same image passes the defaults


def test_pixel_limit_applies_to_displayed_size_either_way() -> None:
    data = exif_jpeg(photo(300, 100), 6)  # stored 100x300, displayed 300x100
    with pytest.raises(ImageTooLarge):
        probe(data, ImageLimits(max_side=299))
    info = probe(data, ImageLimits(max_side=300))
    assert (info.width, info.height) == (300, 100)


def test_byte_limit() -> None:
    data = encode_image(photo(64, 64), "PNG")
    with pytest.raises(ImageTooLarge):
        probe(data, ImageLimits(max_bytes=len(data) - 1))
    probe(data, ImageLimits(max_bytes=len(data)))


def test_empty_input() -> None:
    with pytest.raises(EmptyImage):
        probe(b"", LIMITS)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_image_is_unreadable(fmt: str) -> None:
    data = encode_image(photo(320, 240, seed=3), fmt)
    truncated = data[: len(data) // 2]
    with pytest.raises(UnreadableImage):
        info = probe(truncated, LIMITS)
        decode(truncated, info)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_header_only_fragment_is_unreadable(fmt: str) -> None:
    data = encode_image(photo(64, 48), fmt)
    with pytest.raises(UnreadableImage):
        info = probe(data[:12], LIMITS)
        decode(data[:12], info)


def test_unsupported_formats() -> None:
    for fmt in ("GIF", "BMP", "TIFF"):
        with pytest.raises(UnsupportedMediaType):
            probe(encode_image(photo(32, 32), fmt), LIMITS)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_colour_key_transparency_png(mode: str) -> None:
    pixels = np.zeros((48, 64) if mode == "L" else (48, 64, 3), np.uint8)
    pixels[:, 32:] = 200
    key = 0 if mode == "L" else (0, 0, 0)
    data = encode_image(Image.fromarray(pixels, mode), "PNG", transparency=key)
    _, image = decode_all(data)
    assert image.alpha is not None
    assert image.alpha[24, 8] == 0 and image.alpha[24, 56] == 255


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
@pytest.mark.parametrize("orientation", [3, 6, 7])
def test_exif_orientation_in_png_and_webp(fmt: str, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    kw = {"lossless": True} if fmt == "WEBP" else {}
    data = encode_image(stored_for_orientation(marked(96, 64), orientation), fmt, exif=exif.tobytes(), **kw)
    info, image = decode_all(data)
    assert (info.width, info.height) == (96, 64)
    assert image.rgb.shape == (64, 96, 3)
    assert_close(image.rgb[8, 8], RED)
    assert_close(image.rgb[8, -8], GREEN)


def test_reduced_decode_of_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (1600, 1200), (0, 255, 255, 0))
    data = encode_image(cmyk, "JPEG", quality=90)
    info = probe(data, LIMITS)
    image = decode(data, info, min_size=(200, 150))
    h, w = image.rgb.shape[:2]
    assert w >= 200 and h >= 150 and w < 1600
    assert_close(image.rgb[h // 2, w // 2], RED, tol=50)


def test_progressive_jpeg_with_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encode_image(stored_for_orientation(marked(96, 64), 8), "JPEG", quality=95, progressive=True,
                        exif=exif.tobytes())
    info, image = decode_all(data)
    assert (info.width, info.height) == (96, 64)
    assert_close(image.rgb[8, 8], RED)
    assert_close(image.rgb[8, -8], GREEN)


# --- truncated files: decoded in full or refused ----------------------------------------
#
# Decoders fill missing pixel data with zeros and say nothing; every file here must be
# refused (UnreadableImage), at full size and through the reduced (DCT-scaled) decode.


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, chunks = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png(ihdr: bytes, idat: bytes, *, tail: bytes = b"") -> bytes:
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body + tail


def _rgb_ihdr(width: int, height: int, *, interlaced: bool) -> bytes:
    return struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, int(interlaced))


def _filtered_rows(rgb: np.ndarray, *, interlaced: bool) -> bytes:
    """The bytes a PNG's zlib stream holds for 8-bit RGB: rows (Adam7's passes) with filter 0."""
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw = b""
    for x0, y0, dx, dy in passes if interlaced else ((0, 0, 1, 1),):
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    return raw


def interlaced_png(rgb: np.ndarray) -> bytes:
    """An Adam7-interlaced PNG, written from the PNG definition (Pillow writes none)."""
    ihdr = _rgb_ihdr(rgb.shape[1], rgb.shape[0], interlaced=True)
    return _png(ihdr, zlib.compress(_filtered_rows(rgb, interlaced=True)))


def png_ending_early(rgb: np.ndarray, fraction: float, *, interlaced: bool) -> bytes:
    """A well-formed PNG (CRCs, IEND, a complete zlib stream) whose stream holds only
    ``fraction`` of the rows its header claims."""
    raw = _filtered_rows(rgb, interlaced=interlaced)
    ihdr = _rgb_ihdr(rgb.shape[1], rgb.shape[0], interlaced=interlaced)
    return _png(ihdr, zlib.compress(raw[: int(len(raw) * fraction)]))


def _progressive_jpeg(pixels: np.ndarray) -> bytes:
    return encode_image(pixels, "JPEG", quality=90, progressive=True)


TRUNCATION_SOURCES = {
    "jpeg": lambda p: encode_image(p, "JPEG", quality=90),
    "progressive-jpeg": _progressive_jpeg,
    "cmyk-jpeg": lambda p: encode_image(Image.fromarray(p).convert("CMYK"), "JPEG", quality=90),
    "png": lambda p: encode_image(p, "PNG"),
    "interlaced-png": interlaced_png,
    "webp": lambda p: encode_image(p, "WEBP", quality=90),
    "lossless-webp": lambda p: encode_image(p, "WEBP", lossless=True),
    "heic": lambda p: encode_image(p, "HEIF", quality=90),
}


@pytest.fixture(scope="module")
def whole_files() -> dict[str, bytes]:
    pixels = photo(480, 360, seed=11)
    return {name: make(pixels) for name, make in TRUNCATION_SOURCES.items()}


def _read(data: bytes, min_size: tuple[int, int] | None) -> None:
    decode(data, probe(data, LIMITS), min_size=min_size)


@pytest.mark.parametrize("name", TRUNCATION_SOURCES)
def test_whole_files_of_every_format_decode(whole_files: dict[str, bytes], name: str) -> None:
    """The control: the untruncated file decodes, at full size and reduced."""
    image = decode(whole_files[name], probe(whole_files[name], LIMITS))
    assert image.rgb.shape == (360, 480, 3)
    assert_close(image.rgb[180, 240], OBJECT_RGB, tol=50)  # the disk in the middle
    assert_close(image.rgb[-4, -4], BACKGROUND_RGB, tol=50)  # the last rows were decoded, not zero
    small = decode(whole_files[name], probe(whole_files[name], LIMITS), min_size=(120, 90))
    assert small.rgb.shape[0] >= 90 and small.rgb.shape[1] >= 120


@pytest.mark.parametrize("min_size", [None, (120, 90)], ids=["full", "reduced"])
@pytest.mark.parametrize("cut", ["header", "quarter", "half", "most", "minus-30", "minus-12", "minus-2", "minus-1"])
@pytest.mark.parametrize("name", TRUNCATION_SOURCES)
def test_truncated_files_of_every_format_are_unreadable(
    whole_files: dict[str, bytes], name: str, cut: str, min_size: tuple[int, int] | None
) -> None:
    data = whole_files[name]
    end = {
        "header": 40,
        "quarter": len(data) // 4,
        "half": len(data) // 2,
        "most": len(data) * 9 // 10,
    }.get(cut) or len(data) - int(cut.split("-")[1])
    with pytest.raises(UnreadableImage):
        _read(data[:end], min_size)


@pytest.mark.parametrize("min_size", [None, (120, 90)], ids=["full", "reduced"])
@pytest.mark.parametrize("fraction", [0.3, 0.7, 0.98])
@pytest.mark.parametrize("name", ["jpeg", "progressive-jpeg", "cmyk-jpeg"])
def test_jpeg_cut_short_then_closed_with_eoi_is_unreadable(
    whole_files: dict[str, bytes], name: str, fraction: float, min_size: tuple[int, int] | None
) -> None:
    """A scan that hits the end marker too soon: libjpeg would fill the rest with grey."""
    data = whole_files[name]
    with pytest.raises(UnreadableImage):
        _read(data[: int(len(data) * fraction)] + b"\xff\xd9", min_size)


@pytest.mark.parametrize("interlaced", [False, True])
@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.5, 0.999])
def test_png_whose_compressed_stream_ends_early_is_unreadable(interlaced: bool, fraction: float) -> None:
    """Valid chunks, CRCs and IEND, a complete zlib stream, but less pixel data than IHDR claims."""
    data = png_ending_early(photo(480, 360, seed=5), fraction, interlaced=interlaced)
    with pytest.raises(UnreadableImage):
        _read(data, None)


def test_png_with_idat_cut_and_chunks_repaired_is_unreadable(whole_files: dict[str, bytes]) -> None:
    """The IDAT chunk cut in half, its length and CRC made consistent, IEND appended."""
    chunks = _png_chunks(whole_files["png"])
    ihdr = dict(chunks)[b"IHDR"]
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")
    with pytest.raises(UnreadableImage):
        _read(_png(ihdr, idat[: len(idat) // 2]), None)


def test_png_whose_compressed_stream_is_corrupt_is_unreadable(whole_files: dict[str, bytes]) -> None:
    chunks = _png_chunks(whole_files["png"])
    idat = bytearray(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    idat[len(idat) // 2 : len(idat) // 2 + 64] = bytes(range(64))
    with pytest.raises(UnreadableImage):
        _read(_png(dict(chunks)[b"IHDR"], bytes(idat)), None)


def test_short_png_claiming_many_pixels_is_refused_from_its_sizes() -> None:
    """The probe refuses it from chunk sizes: nothing the claimed size of is allocated."""
    data = _png(_rgb_ihdr(16_000, 3_000, interlaced=False), zlib.compress(b"\x00" * (16_000 * 3 + 1)))
    assert len(data) < 1000
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableImage, match="truncated"):
            probe(data, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024  # the pixels would be 144 MB


@pytest.mark.parametrize(
    "image",
    [
        Image.new("1", (13, 7), 1),
        Image.new("P", (17, 9), 3),
        Image.new("L", (1, 1), 77),
        Image.new("LA", (5, 3), (9, 200)),
        Image.new("RGBA", (31, 2), (1, 2, 3, 4)),
    ],
    ids=["1-bit", "palette", "1x1", "LA", "RGBA"],
)
def test_png_pixel_data_measure_fits_every_layout(image: Image.Image) -> None:
    """Bit depths below 8, palettes and alpha: a whole file is never taken for a short one."""
    data = encode_image(image, "PNG", **({"bits": 2} if image.mode == "P" else {}))
    decoded = decode(data, probe(data, LIMITS))
    assert decoded.rgb.shape[:2] == (image.height, image.width)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (9, 9), (17, 4)])
def test_interlaced_png_of_any_size_decodes_exactly(size: tuple[int, int]) -> None:
    pixels = np.random.default_rng(size[0]).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = decode(interlaced_png(pixels), probe(interlaced_png(pixels), LIMITS))
    assert np.array_equal(image.rgb, pixels)


def test_png_16bit_interlaced_and_trailing_bytes_after_iend() -> None:
    rgb16 = np.random.default_rng(1).integers(0, 65536, (10, 11, 3), dtype=np.uint16)
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)
    data = _png(struct.pack(">IIBBBBB", 11, 10, 16, 2, 0, 0, 0), zlib.compress(raw), tail=b"appended by a tool")
    image = decode(data, probe(data, LIMITS))
    assert np.array_equal(image.rgb, (rgb16 >> 8).astype(np.uint8))


def test_nothing_we_import_lets_pillow_load_truncated_images() -> None:
    from PIL import ImageFile

    import api.app  # noqa: F401 - everything the server imports
    import sync.assets  # noqa: F401

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_a_bomb_pillow_refuses_itself_is_refused_in_our_words() -> None:
    """A header far past Pillow's own guard (100000x100000) speaks our limit, not Pillow's."""
    with pytest.raises(ImageTooLarge) as refused:
        probe(png_bomb(100_000, 100_000), ImageLimits(max_pixels=50_000_000))
    assert str(refused.value) == "The image is 100000x100000 (10000 MP); the limit is 50 MP and 16384 pixels a side."
