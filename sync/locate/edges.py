"""The visible part of the screen's outline: straight bright-to-dark edges against the bezel.

A photo taken close to a sparse canvas rarely shows the whole screen (so `outline.find_screen_quad`
has nothing), but it often shows one, two or three of its sides. Each visible side is a line in the
photo that must map onto a known line of the screen picture (x = -0.5, y = -0.5, ...): two
constraints on the homography per side, whatever the canvas shows. With a few feature matches from
the canvas's objects that is enough to pin the homography down (see `linefit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .outline import BrightRegion, bright_region

# sides of the screen picture, in the order of their outward normals' angles (image axes, y down)
RIGHT, BOTTOM, LEFT, TOP = 0, 1, 2, 3


@dataclass(frozen=True)
class EdgeRun:
    """One straight stretch of the screen's border seen in the photo."""

    points: np.ndarray  # (N, 2) photo px, samples along the edge
    normal: np.ndarray  # unit vector from the screen (bright) towards the bezel (dark)
    length: float  # photo px

    @property
    def angle_deg(self) -> float:
        return math.degrees(math.atan2(self.normal[1], self.normal[0]))

    def side(self, quarter_turns: int = 0) -> int:
        """The screen side this edge most likely is (RIGHT..TOP) for an upright phone, or with the
        photo's roll taken as `quarter_turns` x 90 degrees."""
        return (int(round(self.angle_deg / 90.0)) - quarter_turns) % 4


def find_screen_edges(gray: np.ndarray, max_side: int = 480, samples: int = 24, region: BrightRegion | None = None) -> list[EdgeRun]:
    """Straight sides of the bright screen region that are not the photo's own border.

    Why a convex hull of an Otsu mask: the screen is the brightest large thing in the photo and its
    part inside the photo is convex; objects on the canvas and glare inside it do not matter.
    `region`: `outline.bright_region(gray, max_side)`, when known.
    """
    region = region or bright_region(gray, max_side)
    blur, f, cnt = region.blur, region.f, region.contour
    w, h = region.size
    if cnt is None:
        return []
    if cv2.contourArea(cnt) < 0.1 * w * h:
        return []
    pts = cnt.reshape(-1, 2).astype(np.float64)
    hull = cv2.convexHull(cnt)
    poly = cv2.approxPolyDP(hull, 0.01 * cv2.arcLength(hull, True), True).reshape(-1, 2).astype(np.float64)
    centroid = poly.mean(axis=0)
    runs: list[EdgeRun] = []
    min_len = 0.12 * min(w, h)
    for i in range(len(poly)):
        a, b = poly[i], poly[(i + 1) % len(poly)]
        if _on_border(a, b, w, h):
            continue
        d = b - a
        length = float(np.hypot(*d))
        if length < min_len:
            continue
        u = d / length
        n = np.array([u[1], -u[0]])
        if float(n @ (centroid - a)) > 0:  # a convex region: outwards is away from its centroid
            n = -n
        t = (pts - a) @ u / length
        near = (np.abs((pts - a) @ n) < 2.0) & (t > 0.05) & (t < 0.95)
        on = pts[near]
        # contour pixels on the photo's border are the crop, not the screen's side
        on = on[(on[:, 0] > 1) & (on[:, 1] > 1) & (on[:, 0] < w - 2) & (on[:, 1] < h - 2)]
        if len(on) < 0.5 * length:
            continue  # the hull bridges a gap here (glare, a cut-off corner): not a real edge
        vx, vy, x0, y0 = cv2.fitLine(on.astype(np.float32), cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
        lu = np.array([vx, vy], np.float64)
        resid = (on - [x0, y0]) @ np.array([-vy, vx])
        if float(np.sqrt(np.mean(resid**2))) > 1.0:
            continue  # not straight: a blob's outline, not a screen's side
        if lu @ u < 0:
            lu = -lu
        if not _steps_down(blur, on, n):
            continue
        ts = (on - [x0, y0]) @ lu
        s = np.linspace(ts.min(), ts.max(), samples)
        line_pts = np.array([x0, y0]) + s[:, None] * lu
        ln = np.array([lu[1], -lu[0]])
        if ln @ n < 0:
            ln = -ln
        runs.append(EdgeRun(points=(line_pts + 0.5) / f - 0.5, normal=ln, length=float(ts.max() - ts.min()) / f))
    return runs


def _on_border(a: np.ndarray, b: np.ndarray, w: int, h: int, tol: float = 3.0) -> bool:
    for axis, lim in ((0, 0.0), (0, w - 1.0), (1, 0.0), (1, h - 1.0)):
        if abs(a[axis] - lim) <= tol and abs(b[axis] - lim) <= tol:
            return True
    return False


def _steps_down(img: np.ndarray, pts: np.ndarray, n: np.ndarray, off: float = 4.0) -> bool:
    """A screen's side: clearly brighter just inside than just outside (the dark bezel)."""
    h, w = img.shape[:2]
    inner = np.clip(np.round(pts - off * n).astype(int), 0, [w - 1, h - 1])
    outer = np.clip(np.round(pts + off * n).astype(int), 0, [w - 1, h - 1])
    vi = img[inner[:, 1], inner[:, 0]].astype(np.float32)
    vo = img[outer[:, 1], outer[:, 0]].astype(np.float32)
    return float(np.median(vi - vo)) > 25.0 and float(np.mean(vi > vo + 10)) > 0.8
