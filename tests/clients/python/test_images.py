"""Images as bytes, paths, file objects, PIL images or (name, bytes[, type]) tuples."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from arclip_client._images import read_image, sniff_media_type
from PIL import Image

from tests.conftest import encode_image, jpeg, photo


def test_sniffing() -> None:
    pixels = photo(32, 24)
    assert sniff_media_type(encode_image(pixels, "JPEG")) == "image/jpeg"
    assert sniff_media_type(encode_image(pixels, "PNG")) == "image/png"
    assert sniff_media_type(encode_image(pixels, "WEBP")) == "image/webp"
    assert sniff_media_type(encode_image(pixels, "HEIC")) == "image/heic"
    assert sniff_media_type(encode_image(pixels, "GIF")) == "image/gif"
    assert sniff_media_type(b"hello") is None


def test_bytes_and_buffers() -> None:
    data = jpeg(32, 24)
    assert read_image(data) == ("image.jpg", data, "image/jpeg")
    assert read_image(bytearray(data))[1] == data
    assert read_image(memoryview(data))[1] == data
    assert read_image(b"???") == ("image.bin", b"???", "application/octet-stream")


def test_paths_and_files(tmp_path: Path) -> None:
    data = encode_image(photo(32, 24), "PNG")
    path = tmp_path / "shot.png"
    path.write_bytes(data)
    assert read_image(path) == ("shot.png", data, "image/png")
    assert read_image(str(path)) == ("shot.png", data, "image/png")
    with path.open("rb") as f:
        assert read_image(f) == ("shot.png", data, "image/png")
    assert read_image(io.BytesIO(data)) == ("image.png", data, "image/png")
    with pytest.raises(TypeError, match="binary"):
        read_image(io.StringIO("text"))
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.jpg")


def test_pil_images() -> None:
    rgb = Image.fromarray(photo(40, 30))
    name, data, media_type = read_image(rgb)
    assert (name, media_type) == ("image.jpg", "image/jpeg") and Image.open(io.BytesIO(data)).size == (40, 30)
    name, data, media_type = read_image(rgb, lossless=True)
    assert media_type == "image/png" and Image.open(io.BytesIO(data)).tobytes() == rgb.tobytes()
    rgba = rgb.convert("RGBA")
    assert read_image(rgba)[2] == "image/png"
    assert read_image(rgb.convert("CMYK"))[2] == "image/png"


def test_tuples_and_refusals() -> None:
    data = jpeg(16, 16)
    assert read_image(("mug.jpeg", data)) == ("mug.jpeg", data, "image/jpeg")
    assert read_image(("mug", data, "image/x-custom")) == ("mug", data, "image/x-custom")
    with pytest.raises(TypeError):
        read_image(12345)
    with pytest.raises(TypeError):
        read_image(("just-a-name",))
