"""Turning a photo into the model's input tensor."""

from __future__ import annotations

import cv2
import numpy as np

from .models import Preset


def to_model_input(rgb: np.ndarray, preset: Preset) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, S, S) float32, normalised as the model family was trained."""
    size = preset.input_size
    shrinking = rgb.shape[0] >= size and rgb.shape[1] >= size
    resized = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    x = resized.astype(np.float32)
    peak = float(x.max()) if preset.scale_by_max else 255.0
    x *= 1.0 / max(peak, 1.0)
    x -= np.asarray(preset.mean, dtype=np.float32)
    x /= np.asarray(preset.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def flipped_input(tensor: np.ndarray) -> np.ndarray:
    """A (3, S, S) model input mirrored left-right: the mirrored photo's input, without redoing it."""
    return np.ascontiguousarray(tensor[:, :, ::-1])


def fit_within(width: int, height: int, side: int) -> tuple[int, int]:
    """The largest size with the same aspect whose longer side is at most ``side``."""
    longest = max(width, height)
    if longest <= side:
        return width, height
    scale = side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))
