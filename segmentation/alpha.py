"""From the model's low-resolution saliency map to a full-resolution alpha matte.

Steps, all chosen to be cheap on 12 MP images:
1. upsample the saliency to the working resolution (the reduced decode, ~1 MP);
2. drop small disconnected specks;
3. edge-aware refinement with a guided filter whose linear coefficients are
   computed at working resolution and applied at full resolution (He & Sun's
   "fast guided filter"), so edges follow the photo's real edges;
4. calibrate: a solid interior, a soft true edge, nothing faint left behind.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AlphaParams:
    # Saliency at or below `low` is background, at or above `high` solid foreground.
    low: float = 0.15
    high: float = 0.85
    # Components smaller than this fraction of the largest one are specks.
    speck_fraction: float = 0.02
    # Guided-filter window radius as a fraction of the working image's longer side.
    radius_fraction: float = 0.006
    eps: float = 1e-3


def _normalise(saliency: np.ndarray) -> np.ndarray:
    low, high = float(saliency.min()), float(saliency.max())
    if high - low < 1e-6:
        return np.zeros_like(saliency, dtype=np.float32)
    return ((saliency - low) / (high - low)).astype(np.float32)


def _drop_specks(mask: np.ndarray, fraction: float) -> np.ndarray:
    solid = (mask > 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    if count <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(count, dtype=bool)
    keep[1:] = areas >= fraction * areas.max()
    dropped = ~keep[labels] & (labels > 0)
    if not dropped.any():
        return mask
    # Grow the dropped region a little so the speck's soft rim goes with it.
    grown = cv2.dilate(dropped.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    near_kept = cv2.dilate((keep[labels] & (labels > 0)).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    out = mask.copy()
    out[grown & ~near_kept] = 0.0
    return out


def _guided_coefficients(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    ksize = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, ksize, borderType=cv2.BORDER_REFLECT)

    mean_i = box(guide)
    mean_p = box(src)
    cov_ip = box(guide * src) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a), box(b)


def saliency_to_alpha(
    saliency: np.ndarray,
    work_rgb: np.ndarray,
    out_rgb: np.ndarray,
    params: AlphaParams = AlphaParams(),
) -> np.ndarray:
    """Return an (H, W) uint8 alpha for ``out_rgb`` (the image being cut out).

    ``work_rgb`` is the same photo at working resolution (it may be ``out_rgb``).
    """
    work_h, work_w = work_rgb.shape[:2]
    out_h, out_w = out_rgb.shape[:2]
    mask = cv2.resize(_normalise(saliency), (work_w, work_h), interpolation=cv2.INTER_LINEAR)
    mask = _drop_specks(mask, params.speck_fraction)

    guide = cv2.cvtColor(work_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1.0 / 255.0)
    radius = max(1, round(params.radius_fraction * max(work_h, work_w)))
    a, b = _guided_coefficients(guide, mask, radius, params.eps)

    if (out_h, out_w) == (work_h, work_w):
        full_guide = guide
    else:
        a = cv2.resize(a, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        b = cv2.resize(b, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        full_guide = cv2.cvtColor(out_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1.0 / 255.0)
    refined = a * full_guide + b

    scale = 255.0 / (params.high - params.low)
    alpha = (refined - params.low) * scale
    return np.clip(alpha, 0, 255).astype(np.uint8)
