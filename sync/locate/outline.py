"""The screen's outline: a bright quadrilateral in a darker bezel.

When the whole screen is in the photo, its four corners are four correspondences with the corners
of the screen picture, whatever is (or isn't) shown on it. That rescues sparse canvases, whose few
objects give too few features. It is only a hypothesis: the picture may be a window rather than the
whole screen, so a homography from the outline must still pass the same checks as any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .imaging import apply_h, downsize, scale_mat


@dataclass(frozen=True)
class BrightRegion:
    """The photo's largest bright region (the screen, if one is in view), found once per photo
    for both the whole outline and the visible sides."""

    blur: np.ndarray  # the photo downsized by f, blurred
    f: float
    contour: np.ndarray | None  # its outer contour, in blur's pixels

    @property
    def size(self) -> tuple[int, int]:
        return self.blur.shape[1], self.blur.shape[0]


def bright_region(gray: np.ndarray, max_side: int = 480) -> BrightRegion:
    """Otsu's threshold on a small blurred copy, opened; the largest outer contour."""
    small, f = downsize(gray, max_side)
    blur = cv2.GaussianBlur(small, (5, 5), 0)
    _, mask = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return BrightRegion(blur, f, max(contours, key=cv2.contourArea) if contours else None)


def find_screen_quad(gray: np.ndarray, max_side: int = 480, region: BrightRegion | None = None) -> np.ndarray | None:
    """Corners (4, 2) of the largest bright convex quadrilateral fully inside the photo, in the
    photo's pixels, ordered by angle around their centre (TL, TR, BR, BL for an upright screen);
    None when there is no such quad. `region`: `bright_region(gray, max_side)`, when known."""
    region = region or bright_region(gray, max_side)
    f, cnt = region.f, region.contour
    w, h = region.size
    if cnt is None:
        return None
    area = cv2.contourArea(cnt)
    if not 0.04 * w * h <= area <= 0.9 * w * h:
        return None
    hull = cv2.convexHull(cnt)
    approx = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True).reshape(-1, 2).astype(np.float64)
    if len(approx) != 4 or not cv2.isContourConvex(approx.astype(np.float32)):
        return None
    if area < 0.9 * cv2.contourArea(approx.astype(np.float32)):
        return None  # a ragged blob, not a screen
    if (approx[:, 0].min() < 2 or approx[:, 1].min() < 2 or approx[:, 0].max() > w - 3 or approx[:, 1].max() > h - 3):
        return None  # cut off by the photo's edge: not the whole screen
    corners = _refine(approx, cnt.reshape(-1, 2).astype(np.float64))
    if corners is None:
        return None
    centre = corners.mean(axis=0)
    order = np.argsort(np.arctan2(corners[:, 1] - centre[1], corners[:, 0] - centre[0]))
    return apply_h(np.linalg.inv(scale_mat(f)), corners[order])


def _refine(quad: np.ndarray, contour: np.ndarray) -> np.ndarray | None:
    """Sub-pixel corners: a line fitted to each side's contour points, intersected."""
    lines = []
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        d = b - a
        length = float(np.hypot(*d))
        if length < 8:
            return None
        n = np.array([-d[1], d[0]]) / length
        t = (contour - a) @ d / (length * length)
        near = (np.abs((contour - a) @ n) < 3) & (t > 0.15) & (t < 0.85)  # skip rounded corners
        pts = contour[near] if near.sum() >= 5 else np.vstack([a, b])
        vx, vy, x0, y0 = cv2.fitLine(pts.astype(np.float32), cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
        lines.append((np.array([x0, y0], np.float64), np.array([vx, vy], np.float64)))
    out = []
    for i in range(4):
        (p, u), (q, v) = lines[i - 1], lines[i]
        den = u[0] * v[1] - u[1] * v[0]
        if abs(den) < 1e-6:
            return None
        s = ((q[0] - p[0]) * v[1] - (q[1] - p[1]) * v[0]) / den
        out.append(p + s * u)
    return np.asarray(out)


def screen_corners(width: int, height: int) -> np.ndarray:
    """The picture's outer corners (TL, TR, BR, BL), pixel-centre convention."""
    return np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])
