"""From the model's low-resolution saliency map to a full-resolution alpha matte.

Everything costly happens at the *working* resolution (the reduced decode, about
1 MP); the full-resolution image is only read, per pixel, near the object's edge.

1. Specks: small blobs disconnected from the object are dropped on the model's own
   grid (320²), where connected components cost nothing.
2. Cast shadows: where the saliency has spilled onto a region that looks like the
   surrounding background, only darker and about as colourful (what a shadow is),
   the saliency is taken back.
3. Edge-aware refinement: a colour guided filter (He, Sun & Tang) fits, in every
   window, the saliency as a linear function of the photo's RGB. Its coefficients
   are computed on a 2x-subsampled working image and applied to the *full-resolution*
   RGB (the "fast guided filter"), so the edge lands on the photo's real edge, at
   full resolution, even between colours of equal brightness.
4. Calibration: the refined map is stretched so the interior is solid (255), the
   background empty (0) and only the true edge stays soft.

The full-resolution pass touches only the 32x32 tiles the edge band crosses; away
from the edge the alpha is flat and a bilinear upsample of the working-resolution
result is all it needs. A 12 MP photo costs about 40 ms on two cores. The colour of
the soft edge pixels (no halo of the old background) is ``matting.py``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Full-resolution tiles (pixels a side) processed in one vectorised batch.
TILE = 32


@dataclass(frozen=True)
class AlphaParams:
    # After refinement, a value at or below `low` is background, at or above `high` solid.
    low: float = 0.3
    high: float = 0.7
    # Blobs smaller than this fraction of the largest one are specks.
    speck_fraction: float = 0.02
    # Guided-filter window radius, as a fraction of the working image's longer side,
    # and its regularisation (larger: smoother, less edge-following).
    radius_fraction: float = 0.012
    eps: float = 1e-3
    # Cast-shadow suppression: on/off, the background-colour window (fraction of the
    # longer side) and how closely a shadow must match "background x k" (RGB distance, 0..1).
    shadows: bool = True
    shadow_radius_fraction: float = 0.04
    shadow_tolerance: float = 0.06
    # The model is rarely sure of a shadow: pixels it is surer of than this are kept.
    shadow_max_saliency: float = 0.9
    # Narrower than this (fraction of the longer side) is an edge's rim, not a shadow.
    shadow_min_width_fraction: float = 0.012


# ---------------------------------------------------------------------------- helpers


def _normalise(saliency: np.ndarray) -> np.ndarray:
    """Stretch the map to 0..1 as rembg does (min-max), but never amplify a flat one.

    A map that is high everywhere (a close-up: the whole frame is the object) stays
    high, and one that is low everywhere (nothing salient) stays low, instead of
    min-max turning either into noise or into nothing.
    """
    low = min(float(saliency.min()), 0.05)
    high = max(float(saliency.max()), 0.2)
    return np.clip((saliency - low) * (1.0 / (high - low)), 0.0, 1.0).astype(np.float32)


def _drop_specks(saliency: np.ndarray, fraction: float) -> np.ndarray:
    """Zero the blobs (with their soft rims) that are small next to the largest one."""
    solid = (saliency > 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    if count <= 2:
        return saliency
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(count, dtype=bool)
    keep[1:] = areas >= fraction * areas.max()
    dropped = ~keep[labels] & (labels > 0)
    if not dropped.any():
        return saliency
    kernel = np.ones((5, 5), np.uint8)
    grown = cv2.dilate(dropped.astype(np.uint8), kernel).astype(bool)
    near_kept = cv2.dilate((keep[labels] & (labels > 0)).astype(np.uint8), kernel).astype(bool)
    out = saliency.copy()
    out[grown & ~near_kept] = 0.0
    return out


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


def colour_guided_coefficients(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """The colour guided filter's smoothed linear coefficients, (H, W, 4) float32.

    ``guide`` is (H, W, 3) float32 in 0..1, ``src`` (H, W) float32. The filtered
    output at a pixel with colour I is ``coef[..., :3] @ I + coef[..., 3]``.
    """
    r, g, b = cv2.split(guide)
    means = _box(cv2.merge([r, g, b, src]), radius)
    mr, mg, mb, mp = cv2.split(means)
    second = _box(cv2.merge([r * r, r * g, r * b, g * g, g * b, b * b]), radius)
    vrr, vrg, vrb, vgg, vgb, vbb = cv2.split(second)
    vrr = vrr - mr * mr + eps
    vrg = vrg - mr * mg
    vrb = vrb - mr * mb
    vgg = vgg - mg * mg + eps
    vgb = vgb - mg * mb
    vbb = vbb - mb * mb + eps
    cr, cg, cb = cv2.split(_box(cv2.merge([r * src, g * src, b * src]), radius))
    cr = cr - mr * mp
    cg = cg - mg * mp
    cb = cb - mb * mp
    # (Sigma + eps I)^-1 cov, through the adjugate of the symmetric 3x3 matrix.
    i_rr = vgg * vbb - vgb * vgb
    i_rg = vgb * vrb - vrg * vbb
    i_rb = vrg * vgb - vgg * vrb
    i_gg = vrr * vbb - vrb * vrb
    i_gb = vrb * vrg - vrr * vgb
    i_bb = vrr * vgg - vrg * vrg
    inv_det = 1.0 / (vrr * i_rr + vrg * i_rg + vrb * i_rb)
    ar = (i_rr * cr + i_rg * cg + i_rb * cb) * inv_det
    ag = (i_rg * cr + i_gg * cg + i_gb * cb) * inv_det
    ab = (i_rb * cr + i_gb * cg + i_bb * cb) * inv_det
    bias = mp - ar * mr - ag * mg - ab * mb
    return _box(cv2.merge([ar, ag, ab, bias]), radius)


def _apply(coef: np.ndarray, rgb: np.ndarray, low: float, high: float) -> np.ndarray:
    """Calibrated uint8 alpha from coefficients (0..1 colour scale) and uint8 RGB of the same shape."""
    rgb1 = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA).astype(np.float32)  # (R, G, B, 255)
    products = cv2.multiply(coef, rgb1)
    # alpha = (sum(products) / 255 - low) * 255 / (high - low), in one affine transform.
    scale = 1.0 / (high - low)
    q = cv2.transform(products, np.array([[scale, scale, scale, scale, -low * 255.0 * scale]], dtype=np.float32))
    cv2.max(q, 0.0, dst=q)
    return cv2.convertScaleAbs(q)


# ---------------------------------------------------------------------------- shadows


def suppress_shadows(mask: np.ndarray, guide: np.ndarray, params: AlphaParams) -> np.ndarray:
    """Take cast shadows out of ``mask`` (H, W float32 0..1); ``guide`` is (H, W, 3) float32 0..1 RGB.

    A cast shadow is the background with less light on it: about the local
    background's colour scaled down (and, lit by the sky, a little bluer), smooth,
    and attached to the object's outline. A pixel the mask claims is called shadow
    when it is explained far better as "local background x k" (0.2 <= k <= 0.9) than
    as the object's own nearby colour; only such regions that touch the background
    are removed, so a dark part *inside* the object is never cut.
    """
    height, width = mask.shape
    claimed = mask > 0.3
    if not claimed.any():
        return mask
    bg_w = (mask < 0.1).astype(np.float32)
    fg_w = (mask > 0.9).astype(np.float32)
    weighted = cv2.merge([guide * bg_w[:, :, None], bg_w, guide * fg_w[:, :, None], fg_w])  # 8 channels
    radius = max(2, round(params.shadow_radius_fraction * max(height, width)))
    near = _box(weighted, radius)
    # Deep inside a big shadow the nearest background is further away: a 3x wider look
    # (on a 4x smaller grid; it is a wide average anyway).
    small = cv2.resize(weighted[:, :, 0:4], (max(1, width // 4), max(1, height // 4)), interpolation=cv2.INTER_AREA)
    far = cv2.resize(_box(small, max(1, 3 * radius // 4)), (width, height), interpolation=cv2.INTER_LINEAR)
    # Per-pixel tests only where the mask claims something.
    where = np.flatnonzero(claimed)
    colour = guide.reshape(-1, 3)[where]
    near_px = near.reshape(-1, 8)[where]
    far_px = far.reshape(-1, 4)[where]
    bg_sums = np.where((near_px[:, 3] > 0.05)[:, None], near_px[:, 0:4], far_px)
    have_bg = bg_sums[:, 3] > 0.02
    bg = bg_sums[:, 0:3] / np.maximum(bg_sums[:, 3:4], 1e-6)
    have_fg = near_px[:, 7] > 0.05
    fg = near_px[:, 4:7] / np.maximum(near_px[:, 7:8], 1e-6)
    # Shadow model: I ~ k * B. Least-squares k, then how far I is from it.
    k = (colour * bg).sum(axis=1) / np.maximum((bg * bg).sum(axis=1), 1e-6)
    shadow_residual = np.sqrt(((colour - k[:, None] * bg) ** 2).sum(axis=1))
    object_residual = np.where(have_fg, np.sqrt(((colour - fg) ** 2).sum(axis=1)), 1.0)
    like = (
        have_bg
        & (k >= 0.2)
        & (k <= 0.9)
        & (shadow_residual < params.shadow_tolerance)
        & (shadow_residual < 0.5 * object_residual)
    )
    shadow_like = np.zeros(height * width, dtype=bool)
    shadow_like[where[like]] = True
    shadow_like = shadow_like.reshape(height, width)
    # Seeds: shadow-like blobs the model is not sure of, hanging off the outline. A blob,
    # not the thin rim along an edge where object and background colours mix.
    opening = max(3, round(params.shadow_min_width_fraction * max(height, width)) | 1)
    seeds = cv2.morphologyEx(
        (shadow_like & (mask < params.shadow_max_saliency)).astype(np.uint8),
        cv2.MORPH_OPEN,
        cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (opening, opening)),
    )
    if not seeds.any():
        return mask
    count, seed_labels = cv2.connectedComponents(seeds, connectivity=8)
    touching = cv2.dilate((mask < 0.3).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    hit = np.zeros(count, dtype=bool)
    hit[np.unique(seed_labels[touching & (seeds > 0)])] = True
    hit[0] = False
    if not hit.any():
        return mask
    # The whole shadow: every shadow-like pixel connected to a seed, up to the object's
    # own edge (where the model's blur made it surer than of the rest of the shadow).
    count, labels = cv2.connectedComponents(shadow_like.astype(np.uint8), connectivity=8)
    grown = np.zeros(count, dtype=bool)
    grown[np.unique(labels[hit[seed_labels]])] = True
    grown[0] = False
    shadow = grown[labels]
    out = mask.copy()
    out[shadow] = 0.0
    return out


# ---------------------------------------------------------------------------- full resolution


def tile_origins(active: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ty, tx = np.nonzero(active)
    # The last row/column of tiles is pulled back inside the image: overlapping
    # tiles compute identical values, so no tile is ever partial.
    return np.minimum(ty * TILE, height - TILE), np.minimum(tx * TILE, width - TILE)


def active_tiles(band: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Full-resolution tiles whose footprint on the working grid meets ``band``."""
    work_h, work_w = band.shape
    n_ty, n_tx = -(-out_h // TILE), -(-out_w // TILE)
    integral = cv2.integral(band.astype(np.uint8))
    sy, sx = work_h / out_h, work_w / out_w
    # Footprint of each tile, widened by one working pixel for bilinear reach.
    y0 = np.clip(np.floor(np.minimum(np.arange(n_ty) * TILE, out_h - TILE) * sy) - 1, 0, work_h).astype(int)
    y1 = np.clip(np.ceil((np.minimum(np.arange(n_ty) * TILE, out_h - TILE) + TILE) * sy) + 1, 0, work_h).astype(int)
    x0 = np.clip(np.floor(np.minimum(np.arange(n_tx) * TILE, out_w - TILE) * sx) - 1, 0, work_w).astype(int)
    x1 = np.clip(np.ceil((np.minimum(np.arange(n_tx) * TILE, out_w - TILE) + TILE) * sx) + 1, 0, work_w).astype(int)
    sums = (
        integral[y1[:, None], x1[None, :]]
        - integral[y0[:, None], x1[None, :]]
        - integral[y1[:, None], x0[None, :]]
        + integral[y0[:, None], x0[None, :]]
    )
    return sums > 0


def tile_windows(image: np.ndarray, writeable: bool = False) -> np.ndarray:
    """A (H-T+1, W-T+1, T, T*C) view: every TxT window, each row contiguous."""
    height, width = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    row, px = image.strides[0], image.strides[1]
    return np.lib.stride_tricks.as_strided(
        image,
        shape=(height - TILE + 1, width - TILE + 1, TILE, TILE * channels),
        strides=(row, px, row, image.strides[-1]),
        writeable=writeable,
    )


def _refine_full(coef: np.ndarray, band: np.ndarray, base: np.ndarray, out_rgb: np.ndarray, params: AlphaParams) -> np.ndarray:
    """Bilinear upsample of ``base``, with the guided filter re-applied at full resolution near edges."""
    out_h, out_w = out_rgb.shape[:2]
    alpha = cv2.resize(base, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    if out_h < TILE or out_w < TILE:
        full_coef = cv2.resize(coef, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        return _apply(full_coef, out_rgb, params.low, params.high)
    active = active_tiles(band, out_h, out_w)
    if not active.any():
        return alpha
    ys, xs = tile_origins(active, out_h, out_w)
    coef_h, coef_w = coef.shape[:2]
    steps = np.arange(TILE, dtype=np.float32)
    rgb_windows, alpha_windows = tile_windows(out_rgb), tile_windows(alpha, writeable=True)
    # cv2.remap takes at most 32767 rows: batches of up to 1000 tiles stacked vertically.
    for start in range(0, ys.size, 1000):
        ty, tx = ys[start : start + 1000], xs[start : start + 1000]
        count = ty.size
        # Where each tile pixel falls on the coefficient grid, exactly as cv2.resize maps it.
        map_y = (ty[:, None].astype(np.float32) + steps + 0.5) * (coef_h / out_h) - 0.5
        map_x = (tx[:, None].astype(np.float32) + steps + 0.5) * (coef_w / out_w) - 0.5
        map_y = np.broadcast_to(map_y[:, :, None], (count, TILE, TILE)).reshape(count * TILE, TILE)
        map_x = np.broadcast_to(map_x[:, None, :], (count, TILE, TILE)).reshape(count * TILE, TILE)
        tile_coef = cv2.remap(coef, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        tile_rgb = rgb_windows[ty, tx].reshape(count * TILE, TILE, 3)
        alpha_windows[ty, tx] = _apply(tile_coef, tile_rgb, params.low, params.high).reshape(count, TILE, TILE)
    return alpha


# ---------------------------------------------------------------------------- entry point


def saliency_to_alpha(
    saliency: np.ndarray,
    work_rgb: np.ndarray,
    out_rgb: np.ndarray,
    params: AlphaParams = AlphaParams(),
) -> np.ndarray:
    """Return an (H, W) uint8 alpha for ``out_rgb`` (the image being cut out).

    ``saliency`` is the model's map (any size, roughly 0..1); ``work_rgb`` the same
    photo at working resolution (it may be ``out_rgb`` itself).
    """
    return refine_alpha(saliency, work_rgb, out_rgb, params)[0]


def refine_alpha(
    saliency: np.ndarray,
    work_rgb: np.ndarray,
    out_rgb: np.ndarray,
    params: AlphaParams = AlphaParams(),
) -> tuple[np.ndarray, np.ndarray]:
    """``saliency_to_alpha``, also returning the alpha at working resolution (for matting)."""
    out_rgb = np.ascontiguousarray(out_rgb)  # the tile views need plain row-major pixels
    work_h, work_w = work_rgb.shape[:2]
    sal = _drop_specks(_normalise(saliency), params.speck_fraction)
    # Everything below runs on a 2x-subsampled working grid: the guided filter's
    # coefficients are box-smoothed anyway, and the full-resolution pass restores detail.
    coarse_w, coarse_h = max(1, work_w // 2), max(1, work_h // 2)
    guide = cv2.resize(work_rgb, (coarse_w, coarse_h), interpolation=cv2.INTER_AREA).astype(np.float32) * (1.0 / 255.0)
    src = cv2.resize(sal, (coarse_w, coarse_h), interpolation=cv2.INTER_LINEAR)
    if params.shadows:
        src = suppress_shadows(src, guide, params)
    radius = max(1, round(params.radius_fraction * max(coarse_h, coarse_w)))
    coef = colour_guided_coefficients(guide, src, radius, params.eps)

    # Working-resolution result, and the band where full-resolution pixels matter.
    work_coef = cv2.resize(coef, (work_w, work_h), interpolation=cv2.INTER_LINEAR)
    base = _apply(work_coef, work_rgb, params.low, params.high)
    if out_rgb.shape[:2] == (work_h, work_w):
        return base, base
    # Full-resolution detail moves the edge by a working pixel or two, never more.
    band = cv2.morphologyEx(base, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0
    return _refine_full(coef, band, base, out_rgb, params), base
