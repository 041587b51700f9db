"""Composing the cut-out: RGBA with clean transparent pixels, cropping, backgrounds."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .options import ClipOptions


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    width: int
    height: int


def foreground_box(alpha: np.ndarray) -> Box:
    """The tight box around every pixel that is not fully transparent (empty: 0x0)."""
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return Box(0, 0, 0, 0)
    cols = np.flatnonzero(alpha.any(axis=0))
    return Box(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def crop_window(box: Box, options: ClipOptions, width: int, height: int) -> Box:
    """The crop rectangle: the object's box plus margin, clamped to the image."""
    if box.width == 0:
        return Box(0, 0, width, height)
    margin = options.crop_margin.pixels(box.width, box.height)
    left, top = max(0, box.left - margin), max(0, box.top - margin)
    right = min(width, box.left + box.width + margin)
    bottom = min(height, box.top + box.height + margin)
    return Box(left, top, right - left, bottom - top)


def compose(rgb: np.ndarray, alpha: np.ndarray, options: ClipOptions) -> np.ndarray:
    """The output pixels: grey alpha, RGBA (colour zeroed where transparent), or over bg_color."""
    if options.channels == "alpha":
        return alpha
    if options.bg_color is not None:
        return _over_background(rgb, alpha, options.bg_color)
    return rgba_zeroed(rgb, alpha)


def rgba_zeroed(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGB plus alpha, colour zeroed where alpha is 0.

    Transparent pixels carry no colour: no background leaks out, and PNG
    compresses the empty area to almost nothing. OpenCV's SIMD kernels make it
    ~11 ms instead of ~110 ms with numpy at 12 MP: each RGBA pixel is viewed as
    one int32 and xor-ed with itself where alpha is 0, in place, so the only
    temporaries are the output and a one-byte mask.
    """
    rgba = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    cv2.mixChannels([alpha], [rgba], [0, 3])
    pixels = rgba.view(np.int32).reshape(alpha.shape)
    cv2.bitwise_xor(pixels, pixels, dst=pixels, mask=np.equal(alpha, 0).view(np.uint8))
    return rgba


def _over_background(rgb: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int, int]) -> np.ndarray:
    a = alpha.astype(np.float32)[:, :, None] * (1.0 / 255.0)
    bg = np.array(color[:3], dtype=np.float32)
    out_rgb = rgb.astype(np.float32) * a + bg * (1.0 - a)
    if color[3] == 255:
        return np.clip(out_rgb + 0.5, 0, 255).astype(np.uint8)
    # A translucent background: the result's alpha is "alpha over bg alpha".
    bg_a = color[3] / 255.0
    out_a = a + bg_a * (1.0 - a)
    safe = np.maximum(out_a, 1e-6)
    premult = rgb.astype(np.float32) * a + bg * bg_a * (1.0 - a)
    rgba = np.concatenate([premult / safe, out_a * 255.0], axis=2)
    return np.clip(rgba + 0.5, 0, 255).astype(np.uint8)
