"""Foreground colour for semi-transparent pixels: no halo of the old background.

A pixel on a soft edge was photographed as a mix, ``I = a F + (1 - a) B``. Keeping
``I`` as the cut-out's colour drags the old background (green grass, a white wall)
along the edge onto whatever the cut-out is pasted over. We estimate ``F`` with
the blur-fusion foreground estimator of Germer et al. (2020, "Fast multi-level
foreground estimation"): local alpha-weighted means of foreground and background
colour, then one closed-form correction per pixel,

    F = F^ + a (I - a F^ - (1 - a) B^),

with ``a`` read off the colour line between the two means (see ``_correct``).

The means are box filters on a reduced image (two passes: a wide one, then a narrow
one seeded with the first pass's estimates); the correction runs at full resolution,
on exactly the pixels whose alpha is neither 0 nor 255, found tile by tile near the
edge, so a 12 MP photo costs a few milliseconds more than its reduced copy.
"""

from __future__ import annotations

import cv2
import numpy as np

from .alpha import TILE, active_tiles, tile_origins, tile_windows

# Longest side of the reduced image when the caller has none.
_GRID_SIDE = 1024
# Blur-fusion window radii, as fractions of the colour grid's longer side: Germer et
# al.'s 90 px and 6 px on a ~2 MP photo. The wide one must span a soft edge.
_WIDE, _NARROW, _MIN_WIDE = 0.045, 0.004, 3


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


def _blur_fusion(image: np.ndarray, alpha: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """One pass: the alpha-weighted local means of foreground and background colour."""
    a = alpha[:, :, None]
    weights = _box(cv2.merge([alpha, 1.0 - alpha]), radius)
    fg = _box(image * a, radius) / np.maximum(weights[:, :, 0:1], 1e-5)
    bg = _box(image * (1.0 - a), radius) / np.maximum(weights[:, :, 1:2], 1e-5)
    return fg, bg


def colour_means(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 6) float32: local foreground (0:3) and background (3:6) colour, 0..1.

    ``image`` (H, W, 3) uint8, ``alpha`` (H, W) uint8, at a reduced resolution.
    """
    i = image.astype(np.float32) * (1.0 / 255.0)
    a = alpha.astype(np.float32) * (1.0 / 255.0)
    side = max(i.shape[:2])
    # Pass 1: wide windows find a colour for every edge pixel, even in thin gaps.
    fg, bg = _blur_fusion(i, a, max(_MIN_WIDE, round(_WIDE * side)))
    residual = i - a[:, :, None] * fg - (1.0 - a[:, :, None]) * bg
    fg1 = np.clip(fg + a[:, :, None] * residual, 0.0, 1.0)
    bg1 = np.clip(bg + (1.0 - a[:, :, None]) * residual, 0.0, 1.0)
    # Pass 2: narrow windows over the first estimates keep colours local.
    narrow = max(1, round(_NARROW * side))
    a3 = a[:, :, None]
    weights = _box(cv2.merge([a, 1.0 - a]), narrow)
    fg2 = _box(fg1 * a3, narrow) / np.maximum(weights[:, :, 0:1], 1e-5)
    bg2 = _box(bg1 * (1.0 - a3), narrow) / np.maximum(weights[:, :, 1:2], 1e-5)
    # Where a window saw no foreground (or background) at all, pass 1's estimate stands.
    fg2 = np.where(weights[:, :, 0:1] > 1e-3, fg2, fg1)
    bg2 = np.where(weights[:, :, 1:2] > 1e-3, bg2, bg1)
    return np.ascontiguousarray(np.concatenate([fg2, bg2], axis=2), dtype=np.float32)


def _correct(means: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Blur-fusion's per-pixel step on N semi-transparent pixels: (N, 6) means, (N, 3) uint8 -> (N, 3) uint8.

    The mixing ratio used is the pixel's position on the colour line between the local
    background and foreground means, not the matte's alpha: the matte is shaped for the
    cut-out (steep, solid) and its alpha need not match how the photo mixed the colours.
    In place on float32 temporaries: a soft 12 MP edge has half a million such pixels.
    """
    fg, bg = means[:, 0:3], means[:, 3:6]
    d = fg - bg
    i = colours.astype(np.float32)
    i *= np.float32(1.0 / 255.0)
    i -= bg
    a = np.einsum("ij,ij->i", i, d)
    a /= np.maximum(np.einsum("ij,ij->i", d, d), np.float32(1e-4))
    np.clip(a, 0.0, 1.0, out=a)
    a = a[:, None]
    # F = fg + a (I - a fg - (1 - a) bg) = fg + a ((I - bg) - a (fg - bg))
    d *= a
    i -= d
    i *= a
    i += fg
    i *= np.float32(255.0)
    i += np.float32(0.5)
    np.clip(i, 0.0, 255.0, out=i)
    return i.astype(np.uint8)


def _sample(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray, sy: float, sx: float) -> np.ndarray:
    """Bilinear samples of ``grid`` at full-resolution pixels (ys, xs), mapped as cv2.resize maps them."""
    n = ys.size
    width = 1024
    rows = -(-n // width)
    map_y = np.zeros(rows * width, np.float32)
    map_x = np.zeros(rows * width, np.float32)
    map_y[:n] = (ys + 0.5) * sy - 0.5
    map_x[:n] = (xs + 0.5) * sx - 0.5
    sampled = cv2.remap(
        grid, map_x.reshape(rows, width), map_y.reshape(rows, width), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return sampled.reshape(rows * width, grid.shape[2])[:n]


def estimate_foreground(
    rgb: np.ndarray,
    alpha: np.ndarray,
    work_rgb: np.ndarray | None = None,
    work_alpha: np.ndarray | None = None,
    *,
    inplace: bool = False,
) -> np.ndarray:
    """``rgb`` with every semi-transparent pixel's colour replaced by its foreground estimate.

    ``rgb`` (H, W, 3) uint8 and ``alpha`` (H, W) uint8 are the full-resolution photo and
    matte. ``work_rgb``/``work_alpha``, the same at a reduced resolution, save a costly
    downscale when the caller has them. Pixels with alpha 0 or 255 are returned
    unchanged. With ``inplace`` the result is written into ``rgb`` (when it is writeable and
    row-major) and ``rgb`` is returned.
    """
    height, width = alpha.shape
    alpha = np.ascontiguousarray(alpha)  # the tile views need plain row-major pixels
    out = rgb if inplace and rgb.flags.writeable else rgb.copy()
    if work_rgb is None or work_alpha is None or work_alpha.shape != work_rgb.shape[:2]:
        scale = min(1.0, _GRID_SIDE / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        work_rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        work_alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
    band = cv2.dilate(cv2.inRange(work_alpha, 1, 254), np.ones((3, 3), np.uint8)) > 0
    if not band.any():
        return out
    # The colour means are smooth: a 2x-subsampled grid is plenty.
    grid_w, grid_h = max(1, work_rgb.shape[1] // 2), max(1, work_rgb.shape[0] // 2)
    means = colour_means(
        cv2.resize(work_rgb, (grid_w, grid_h), interpolation=cv2.INTER_AREA),
        cv2.resize(work_alpha, (grid_w, grid_h), interpolation=cv2.INTER_AREA),
    )
    # The semi-transparent full-resolution pixels, found tile by tile near the band.
    if height < TILE or width < TILE:
        ys, xs = np.nonzero((alpha > 0) & (alpha < 255))
    else:
        tys, txs = tile_origins(active_tiles(band, height, width), height, width)
        tiles = tile_windows(alpha)[tys, txs]  # (N, T, T)
        k, i, j = np.nonzero((tiles > 0) & (tiles < 255))
        ys, xs = tys[k] + i, txs[k] + j
    if ys.size == 0:
        return out
    fg_bg = _sample(means, ys, xs, grid_h / height, grid_w / width)
    if not out.flags.c_contiguous:  # e.g. a transposed (EXIF-rotated) decode: the flat view below needs rows
        out = np.ascontiguousarray(out)
    flat = ys * width + xs  # one flat index: cheaper gathers and scatters than (ys, xs) pairs
    pixels = out.reshape(-1, 3)  # a view of ``out``, which still holds ``rgb``'s colours here
    pixels[flat] = _correct(fg_bg, np.take(pixels, flat, axis=0))
    return out
