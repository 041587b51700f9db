"""Small image helpers shared by the index and the locator."""

from __future__ import annotations

import cv2
import numpy as np


def to_gray(img: np.ndarray) -> np.ndarray:
    """BGR, BGRA or grey uint8 -> grey uint8 (other dtypes are rescaled to 0..255)."""
    if img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return img
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img[..., 0].copy()


def scale_mat(f: float) -> np.ndarray:
    """Pixel map of a resize by factor f, with pixel centres at integer coordinates."""
    o = 0.5 * f - 0.5
    return np.array([[f, 0.0, o], [0.0, f, o], [0.0, 0.0, 1.0]])


def downsize(gray: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink so the long side is at most max_side; returns the image and the factor (<= 1)."""
    long_side = max(gray.shape[:2])
    if long_side <= max_side:
        return gray, 1.0
    f = max_side / long_side
    size = (max(1, round(gray.shape[1] * f)), max(1, round(gray.shape[0] * f)))
    out = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    # the factor actually applied may differ by rounding; use the horizontal one
    return out, out.shape[1] / gray.shape[1]


def apply_h(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a homography."""
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    q = p @ H[:, :2].T + H[:, 2]
    return q[:, :2] / q[:, 2:3]
