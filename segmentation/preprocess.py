"""Turning a photo into the model's input tensor."""

from __future__ import annotations

import cv2
import numpy as np

from .models import Preset


def to_model_input(rgb: np.ndarray, preset: Preset, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, S, S) float32, normalised as the model family was trained.

    ``size`` = (width, height) instead of the preset's square (``aspect_size``), for a
    model that takes any input size.
    """
    width, height = size or (preset.input_size, preset.input_size)
    shrinking = rgb.shape[0] >= height and rgb.shape[1] >= width
    resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    x = resized.astype(np.float32)
    peak = float(x.max()) if preset.scale_by_max else 255.0
    x *= 1.0 / max(peak, 1.0)
    x -= np.asarray(preset.mean, dtype=np.float32)
    x /= np.asarray(preset.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def flipped_input(tensor: np.ndarray) -> np.ndarray:
    """A (3, S, S) model input mirrored left-right: the mirrored photo's input, without redoing it."""
    return np.ascontiguousarray(tensor[:, :, ::-1])


# The U²-Net family halves its maps five times: inputs are kept to multiples of 32.
_STRIDE = 32
# The aspect view's longer side is at most this many times its shorter one (a
# panorama would otherwise cost a run many times the square one's).
_MAX_ASPECT = 2.0


def aspect_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The model input (w, h) that keeps the photo's aspect: shorter side ``side``.

    The longer side is rounded to a multiple of 32 and capped at twice ``side``; a
    photo that is about square gets (side, side), the square input itself.
    """
    short, long = min(width, height), max(width, height)
    scaled = min(long * side / max(short, 1), _MAX_ASPECT * side)
    long_side = max(side, int(round(scaled / _STRIDE)) * _STRIDE)
    return (long_side, side) if width >= height else (side, long_side)


# The aspect views' shorter side, as a fraction of the model's square side (u2netp: 256 of
# 320, a 4:3 photo's view 352x256). Smaller than the square view on purpose: on a CPU it costs
# ~0.9 of a square run instead of ~1.25 at 416x320, and views of two scales disagree more, so
# their average is better (benchmarks/quality/README.md, "A smaller aspect view").
ASPECT_SCALE = 0.8


def aspect_view_size(width: int, height: int, side: int, scale: float = ASPECT_SCALE) -> tuple[int, int] | None:
    """The aspect views' input (w, h) for a ``width`` x ``height`` photo: ``aspect_size`` at
    ``scale`` x ``side`` (a multiple of 32); None for a photo about square, whose aspect the
    square view already has."""
    short = max(_STRIDE, int(round(scale * side / _STRIDE)) * _STRIDE)
    size = aspect_size(width, height, short)
    return None if size == (short, short) else size


def fit_within(width: int, height: int, side: int) -> tuple[int, int]:
    """The largest size with the same aspect whose longer side is at most ``side``."""
    longest = max(width, height)
    if longest <= side:
        return width, height
    scale = side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


# A JPEG decodes at M/8 of its size for free (libjpeg's DCT scaling, sides rounded up). A
# working size just under ``side`` that is such a scale needs no resize after the decode:
# 4032x3024 at 1/4 is 1008x756, decoded in ~23 ms against ~38 ms for 3/8 and a resize to 1024.
_DCT_SLACK = 0.9


def jpeg_work_size(width: int, height: int, side: int) -> tuple[int, int]:
    """``fit_within``, or the largest M/8 DCT scale of a JPEG that is within 10 % below it."""
    wanted = fit_within(width, height, side)
    if wanted == (width, height):
        return wanted
    for m in range(7, 0, -1):
        scaled = (-(-width * m // 8), -(-height * m // 8))
        if _DCT_SLACK * side <= max(scaled) <= side:
            return scaled
    return wanted


def working_size(width: int, height: int, side: int, *, jpeg: bool) -> tuple[int, int]:
    """The working image's size for a ``width`` x ``height`` decode: a DCT scale for a JPEG when one fits."""
    return (jpeg_work_size if jpeg else fit_within)(width, height, side)
