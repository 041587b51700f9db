"""Decoding photos and screen pictures the way a person sees them (EXIF orientation applied)."""

from __future__ import annotations

import functools
import os
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segmentation.errors import ImageTooLarge, UnreadableImage


@functools.cache
def _register_heif() -> None:
    try:  # HEIC from iPhones; optional, registered on first use rather than at import
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:
        pass


def read_image(source: str | os.PathLike[str] | bytes) -> np.ndarray:
    """Decode a file path or bytes into a BGR uint8 array, upright per its EXIF orientation.

    Pillow's refusals become ``UnreadableImage`` / ``ImageTooLarge`` naming the file.
    """
    _register_heif()
    fp = BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    name = "the image" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    try:
        with Image.open(fp) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                img = img.point(lambda v: v / 256).convert("L")  # type: ignore[arg-type]
            rgb = np.asarray(img.convert("RGB"))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise  # about the path, not the picture
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{name}: too many pixels to locate on.") from None
    except UnidentifiedImageError:
        raise UnreadableImage(f"{name}: not an image arclip can read (JPEG, PNG, WebP, HEIC).") from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's other ways of saying "cannot read this"
        raise UnreadableImage(f"{name}: a damaged or cut-off image ({exc}).") from None
    return np.ascontiguousarray(rgb[..., ::-1])
