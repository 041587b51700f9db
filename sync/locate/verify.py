"""Photometric verification: does the screen picture, warped by H, look like the photo?

Features can agree on a wrong answer (repeated glyphs, icons, a stale picture); pixels rarely do.
We warp the screen picture into a small copy of the view and correlate band-passed versions of
both (band-pass: insensitive to exposure, glare and vignetting, which are smooth). The score near
the centre of the view matters most: that is where the paste lands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .config import LocatorConfig
from .geometry import jacobian
from .imaging import downsize, scale_mat
from .index import ScreenIndex


@dataclass(frozen=True)
class Verdict:
    ncc: float  # over the whole overlap (0 when there is nothing to compare)
    ncc_centre: float  # over the middle of the view; NaN where the picture is blank there
    overlap: float  # fraction of the small view that shows the screen picture


def _bandpass(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32)
    return cv2.GaussianBlur(f, (0, 0), 1.0) - cv2.GaussianBlur(f, (0, 0), 4.0)


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Normalised correlation over mask; NaN when the screen side (b) is blank there: a blank
    region can neither confirm nor refute."""
    if mask.sum() < 64:
        return math.nan
    av, bv = a[mask], b[mask]
    if float(np.sqrt((bv * bv).mean())) < 0.75:  # grey levels; a picture's flat area is ~0
        return math.nan
    av = av - av.mean()
    bv = bv - bv.mean()
    den = float(np.sqrt((av * av).sum() * (bv * bv).sum()))
    return float((av * bv).sum() / den) if den > 1e-6 else 0.0


@dataclass(frozen=True)
class SmallView:
    """The photo's side of the comparison, which does not depend on H: computed once per photo."""

    small: np.ndarray  # the photo downsized by f
    f: float
    bandpassed: np.ndarray
    disc: np.ndarray  # the middle of the view (bool)


def small_view(view_gray: np.ndarray, config: LocatorConfig) -> SmallView:
    small, f = downsize(view_gray, config.verify_max_side)
    sh, sw = small.shape[:2]
    yy, xx = np.ogrid[0:sh, 0:sw]
    r = 0.22 * np.hypot(sw, sh)
    disc = (xx - (sw - 1) / 2) ** 2 + (yy - (sh - 1) / 2) ** 2 <= r * r
    return SmallView(small, f, _bandpass(small), disc)


def verify(view_gray: np.ndarray | SmallView, H: np.ndarray, index: ScreenIndex, config: LocatorConfig) -> Verdict:
    """Score H (full view px -> screen px) against the photo (or its `small_view`)."""
    sv = view_gray if isinstance(view_gray, SmallView) else small_view(view_gray, config)
    small, f = sv.small, sv.f
    sh, sw = small.shape[:2]
    # small view px -> screen px, and its local scale at the centre (screen px per small px)
    H_small = H @ np.linalg.inv(scale_mat(f))
    J = jacobian(H_small, (sw - 1) / 2, (sh - 1) / 2)
    s = float(np.sqrt(abs(np.linalg.det(J))))
    # the coarsest pyramid level still at least as fine as the small view (no aliasing in the warp)
    lf, level = index.pyramid[0]
    for lf_i, lvl in index.pyramid:
        if s * lf_i >= 1.0:
            lf, level = lf_i, lvl
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    A = scale_mat(lf) @ H_small  # small view px -> level px (the inverse map warpPerspective wants)
    warped = cv2.warpPerspective(level, A, (sw, sh), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpPerspective(np.full(level.shape, 255, np.uint8), A, (sw, sh), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0)
    # drop a rim where the band-pass sees the screen's edge rather than its content
    inside = cv2.erode(inside, np.ones((9, 9), np.uint8)) > 0
    overlap = float(inside.mean())
    a, b = sv.bandpassed, _bandpass(warped)
    centre = sv.disc & inside
    ncc = _ncc(a, b, inside)
    return Verdict(ncc=0.0 if math.isnan(ncc) else ncc, ncc_centre=_ncc(a, b, centre), overlap=overlap)
