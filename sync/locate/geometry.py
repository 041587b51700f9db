"""Is a view->screen homography physically plausible? (cheap checks before the photometric one)

A phone photo of a flat screen has a well-conditioned homography: no mirroring, the screen plane's
horizon outside the region that matters, moderate tilt and perspective, a scale in the range phones
are held at, and the centre of the view on the screen. Wrong RANSAC fits on accidental matches
usually break one of these.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .config import LocatorConfig
from .imaging import apply_h

# reasons (the locator turns them into hints)
DEGENERATE = "degenerate"
TILTED = "tilted"
TOO_FAR = "too-far"
TOO_CLOSE = "too-close"
OFF_SCREEN = "off-screen"


@dataclass(frozen=True)
class Geometry:
    reason: str | None  # None: plausible
    x: float = math.nan
    y: float = math.nan
    scale: float = math.nan  # screen px per view px at the centre
    rotation_deg: float = math.nan
    anisotropy: float = math.nan


def centre_spread(src: np.ndarray, dst: np.ndarray, centre: tuple[float, float], rounds: int = 8) -> float:
    """How well the data pin down where the centre lands: RMS scatter (screen px) of the centre
    mapped by homographies refit on random halves of the inliers.

    Why: a fit on a small cluster of points far from the centre extrapolates; it can look perfect
    where the points are (and pass the photometric check there) while the centre is off.
    """
    n = len(src)
    if n < 8:
        return math.inf

    def fit(sub: np.ndarray) -> np.ndarray | None:
        return cv2.findHomography(src[sub], dst[sub], 0)[0]

    return refit_scatter(fit, n, max(6, n // 2), centre, rounds)


def refit_scatter(
    fit: Callable[[np.ndarray], np.ndarray | None], n: int, m: int, centre: tuple[float, float], rounds: int
) -> float:
    """RMS scatter (screen px) of where ``fit`` on random ``m`` of the ``n`` matches puts the centre.

    Infinite when a refit fails. Seeded by ``n``: same photo, same answer.
    """
    rng = np.random.default_rng(n)
    pts = []
    for _ in range(rounds):
        H = fit(rng.choice(n, m, replace=False) if n else np.zeros(0, np.int64))
        if H is None or not np.all(np.isfinite(H)):
            return math.inf
        pts.append(apply_h(H, [centre])[0])
    p = np.asarray(pts)
    if not np.all(np.isfinite(p)):
        return math.inf
    return float(np.sqrt(((p - p.mean(axis=0)) ** 2).sum(axis=1).mean()))


def jacobian(H: np.ndarray, x: float, y: float) -> np.ndarray:
    """d(screen)/d(view) at view point (x, y)."""
    w = H[2, 0] * x + H[2, 1] * y + H[2, 2]
    u = (H[0, 0] * x + H[0, 1] * y + H[0, 2]) / w
    v = (H[1, 0] * x + H[1, 1] * y + H[1, 2]) / w
    return np.array(
        [
            [(H[0, 0] - H[2, 0] * u) / w, (H[0, 1] - H[2, 1] * u) / w],
            [(H[1, 0] - H[2, 0] * v) / w, (H[1, 1] - H[2, 1] * v) / w],
        ]
    )


def _convex_ccw(quad: np.ndarray) -> bool:
    """Corners in order TL, TR, BR, BL (y down) stay a convex, non-mirrored quad."""
    crosses = []
    for i in range(4):
        a, b, c = quad[i], quad[(i + 1) % 4], quad[(i + 2) % 4]
        crosses.append((b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]))
    return all(c > 0 for c in crosses)


def check(
    H: np.ndarray,
    view_size: tuple[int, int],
    screen_size: tuple[int, int],
    support: np.ndarray,
    config: LocatorConfig,
) -> Geometry:
    """Check H (view px -> screen px). `support`: (N, 2) view points the fit rests on (inliers)."""
    if H is None or not np.all(np.isfinite(H)) or abs(H[2, 2]) < 1e-12:
        return Geometry(DEGENERATE)
    H = H / H[2, 2]
    vw, vh = view_size
    sw, sh = screen_size
    cx, cy = (vw - 1) / 2, (vh - 1) / 2

    # the region that matters: the centre, a box around it, and the points the fit rests on
    box = np.array([[cx - 0.25 * vw, cy - 0.25 * vh], [cx + 0.25 * vw, cy - 0.25 * vh], [cx + 0.25 * vw, cy + 0.25 * vh], [cx - 0.25 * vw, cy + 0.25 * vh]])
    probe = np.vstack([[[cx, cy]], box, np.asarray(support, np.float64).reshape(-1, 2)])
    w = probe @ H[2, :2] + H[2, 2]
    if not (np.all(w > 0) or np.all(w < 0)):
        return Geometry(DEGENERATE)  # the screen plane's horizon crosses the region

    J = jacobian(H, cx, cy)
    det = float(np.linalg.det(J))
    if not math.isfinite(det) or det <= 0:
        return Geometry(DEGENERATE)  # mirrored or collapsed
    sv = np.linalg.svd(J, compute_uv=False)
    aniso = float(sv[0] / max(sv[1], 1e-12))
    scale = math.sqrt(det)
    rot = math.degrees(math.atan2(J[1, 0] - J[0, 1], J[0, 0] + J[1, 1]))
    (x, y), = apply_h(H, [[cx, cy]])
    geo = dict(x=float(x), y=float(y), scale=scale, rotation_deg=-rot, anisotropy=aniso)

    if aniso > config.max_anisotropy:
        return Geometry(TILTED, **geo)
    scales = [math.sqrt(max(np.linalg.det(jacobian(H, px, py)), 0.0)) for px, py in box]
    if min(scales) <= 0 or max(scales + [scale]) / min(scales + [scale]) > config.max_scale_ratio:
        return Geometry(TILTED, **geo)
    if not _convex_ccw(apply_h(H, box)):
        return Geometry(DEGENERATE, **geo)

    coverage = scale * max(vw, vh) / max(sw, sh)  # how many screen widths the view spans
    if coverage > config.max_coverage:
        return Geometry(TOO_FAR, **geo)
    if coverage < config.min_coverage:
        return Geometry(TOO_CLOSE, **geo)

    mx, my = config.edge_margin * sw, config.edge_margin * sh
    if not (-0.5 - mx <= x <= sw - 0.5 + mx and -0.5 - my <= y <= sh - 0.5 + my):
        return Geometry(OFF_SCREEN, **geo)
    geo["x"] = float(min(max(x, 0.0), sw - 1.0))
    geo["y"] = float(min(max(y, 0.0), sh - 1.0))
    return Geometry(None, **geo)
