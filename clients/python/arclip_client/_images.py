"""Turn whatever the caller has into an upload: ``(filename, bytes, media type)``.

Accepted: ``bytes``/``bytearray``/``memoryview``; a path (``str`` or ``os.PathLike``); a binary
file object; a Pillow ``Image``; or an explicit ``(filename, bytes[, media type])`` tuple.
"""

from __future__ import annotations

import io
import mimetypes
import os
from pathlib import Path
from typing import IO, Any

# bytes, a path, a binary file object, a PIL image, or a (filename, data[, media type]) tuple
ImageInput = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | tuple[Any, ...] | Any

_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
}


def sniff_media_type(data: bytes) -> str | None:
    """The image type from its first bytes, or None."""
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"):
            return "image/heic"
        if brand in (b"mif1", b"msf1", b"avif"):
            return "image/heif" if brand != b"avif" else "image/avif"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:2] == b"BM":
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return None


def _is_pil_image(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is optional
        return False
    return isinstance(value, Image.Image)


def _encode_pil(image: Any, lossless: bool) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if not lossless and image.mode in ("RGB", "L"):
        image.save(buffer, "JPEG", quality=95)
        return buffer.getvalue(), "image/jpeg"
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "I", "I;16", "1"):
        image = image.convert("RGBA")
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue(), "image/png"


def read_image(image: ImageInput, *, name: str = "image", lossless: bool = False) -> tuple[str, bytes, str]:
    """``(filename, data, media_type)`` for an upload.

    A Pillow image is encoded as JPEG (quality 95) when it is RGB or grey and ``lossless`` is
    false, as PNG otherwise. The media type of bytes is sniffed from their first bytes.
    """
    filename: str | None = None
    declared: str | None = None
    if isinstance(image, tuple):
        if len(image) not in (2, 3):
            raise TypeError("an image tuple is (filename, data) or (filename, data, media_type)")
        filename, payload = image[0], image[1]
        declared = image[2] if len(image) == 3 else None
        _, data, sniffed = read_image(payload, name=name, lossless=lossless)
        return filename, data, declared or sniffed
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image)
        data = path.read_bytes()
        filename = path.name
    elif _is_pil_image(image):
        data, declared = _encode_pil(image, lossless)
    elif hasattr(image, "read"):
        data = image.read()
        if isinstance(data, str):
            raise TypeError("open image files in binary mode ('rb')")
        data = bytes(data)
        file_name = getattr(image, "name", None)
        if isinstance(file_name, str) and file_name and not file_name.startswith("<"):
            filename = os.path.basename(file_name)
    else:
        raise TypeError(
            f"cannot upload {type(image).__name__}: give bytes, a path, a binary file object or a PIL image"
        )
    media_type = declared or sniff_media_type(data)
    if media_type is None and filename:
        media_type = mimetypes.guess_type(filename)[0]
    media_type = media_type or "application/octet-stream"
    if filename is None:
        filename = f"{name}.{_EXTENSIONS.get(media_type, 'bin')}"
    return filename, data, media_type
