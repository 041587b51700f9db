"""The paste pattern: ArUco markers the companion shows while a paste is pending.

A blank or sparse canvas has nothing for features to hold on to; a grid of markers with unique ids
does: each marker seen by the phone gives four exact correspondences. The index finds the markers in
the screen picture itself (so it needs no agreement on the layout), or, when told the pattern is
shown but the picture lacks it, uses `pattern_layout` for the same width and height.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

DICTIONARY = cv2.aruco.DICT_5X5_100  # 5x5 bits: robust to blur, few look-alikes in clutter
MARKER_MODULES = 7  # 5 data bits + black border on each side
QUIET_MODULES = 1.5  # white margin around each marker, needed to find its border


@dataclass(frozen=True)
class Marker:
    """One marker of the pattern: id and the top-left corner and side of its black square."""

    id: int
    x: float
    y: float
    size: float

    def corners(self) -> np.ndarray:
        """Corners in ArUco order (TL, TR, BR, BL), in canvas pixels (pixel-centre convention)."""
        x0, y0, s = self.x - 0.5, self.y - 0.5, self.size
        return np.array([[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s]], np.float32)

    def to_json(self) -> dict[str, float | int]:
        return {"id": self.id, "x": self.x, "y": self.y, "size": self.size}


def pattern_layout(width: int, height: int) -> list[Marker]:
    """A grid of markers over the whole canvas, corners and edges included.

    Why a grid and not just corners: a phone held close to the screen sees only part of it, and
    must still see at least two markers around whatever it is aimed at.
    """
    size = max(42, int(round(min(width, height) / 7 / MARKER_MODULES)) * MARKER_MODULES)
    module = size / MARKER_MODULES
    margin = int(math.ceil(QUIET_MODULES * module))
    pitch = 2.6 * size  # centre-to-centre spacing

    def positions(extent: int) -> np.ndarray:
        span = extent - 2 * margin - size  # room for top-left corners
        if span < size + 2 * margin:  # no room for two markers with their quiet zones
            return np.array([max(0.0, (extent - size) / 2)])
        return np.linspace(margin, extent - margin - size, max(2, int(round(span / pitch)) + 1))

    xs, ys = positions(width), positions(height)
    nx = len(xs)
    markers: list[Marker] = []
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            markers.append(Marker(id=j * nx + i, x=float(round(x)), y=float(round(y)), size=float(size)))
    if len(markers) > 100:
        raise ValueError("canvas too large for one pattern")
    return markers


def render_pattern(width: int, height: int) -> np.ndarray:
    """What the companion draws over its canvas: (height, width, 4) uint8 BGRA.

    Black and white only (so BGR/RGB order does not matter); alpha is 255 on markers and their
    white quiet zones and 0 elsewhere, so the canvas stays visible between markers.
    """
    dictionary = cv2.aruco.getPredefinedDictionary(DICTIONARY)
    out = np.zeros((height, width, 4), np.uint8)
    for m in pattern_layout(width, height):
        s = int(m.size)
        q = int(math.ceil(QUIET_MODULES * s / MARKER_MODULES))
        x, y = int(m.x), int(m.y)
        out[max(0, y - q) : y + s + q, max(0, x - q) : x + s + q] = 255
        tile = cv2.aruco.generateImageMarker(dictionary, m.id, s)
        out[y : y + s, x : x + s, :3] = tile[..., None]
    return out


def apply_pattern(canvas: np.ndarray) -> np.ndarray:
    """The canvas (BGR) with the pattern composited on top, as the screen shows it."""
    pattern = render_pattern(canvas.shape[1], canvas.shape[0])
    alpha = pattern[..., 3:] > 0
    return np.where(alpha, pattern[..., :3], canvas).astype(np.uint8)


def _detector(crisp: bool = False) -> cv2.aruco.ArucoDetector:
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    params.minMarkerPerimeterRate = 0.02  # far-away phones see small markers
    params.adaptiveThreshWinSizeMin = 5
    params.adaptiveThreshWinSizeMax = 35
    params.adaptiveThreshWinSizeStep = 10
    if crisp:
        # a screen picture, not a photo: sharp, evenly lit black on white, markers at least 42 px
        # (`pattern_layout`). Two threshold windows find them as well as four (half the time).
        params.adaptiveThreshWinSizeMin = 15
        params.adaptiveThreshWinSizeMax = 25
    return cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(DICTIONARY), params)


def detect_markers(gray: np.ndarray, max_side: int | None = None, crisp: bool = False) -> dict[int, np.ndarray]:
    """Markers found in a grey image: id -> (4, 2) float32 corners in that image's pixels.

    An id seen twice is ambiguous and dropped. `max_side` downsizes first (speed); corners are
    returned in the input's pixels either way. `crisp`: the image is a screen picture rather than
    a photo (a quicker search).
    """
    scale = 1.0
    img = gray
    if max_side is not None and max(gray.shape[:2]) > max_side:
        scale = max_side / max(gray.shape[:2])
        img = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    corners, ids, _ = _detector(crisp).detectMarkers(img)
    found: dict[int, np.ndarray] = {}
    if ids is None:
        return found
    seen: set[int] = set()
    for c, i in zip(corners, ids.ravel()):
        i = int(i)
        if i in seen:
            found.pop(i, None)
            continue
        seen.add(i)
        # back to input pixels (pixel-centre convention: x_in = (x + 0.5) / s - 0.5)
        found[i] = ((c.reshape(4, 2) + 0.5) / scale - 0.5).astype(np.float32)
    return found


def screen_markers(gray: np.ndarray, small: np.ndarray, f: float, fallback_side: int) -> dict[int, np.ndarray]:
    """Markers in a screen picture: id -> (4, 2) float32 corners in `gray`'s pixels.

    A screen picture is crisp, so its markers are found in `small` (gray downsized by f, the copy
    the index describes anyway: no resize of its own) and their corners then refined on `gray`
    itself, which places them better than a search at any intermediate size. Where `small` is
    too coarse for the standard pattern's markers (a very wide picture), or shows some of them but
    not all, the search runs at `fallback_side` instead.
    """
    if f >= 1.0:
        return detect_markers(gray, None, crisp=True)
    try:
        layout = pattern_layout(gray.shape[1], gray.shape[0])
    except ValueError:
        layout = []
    coarse = max(small.shape[:2]) < fallback_side
    if coarse and layout and layout[0].size * f < _MIN_SMALL_MARKER_PX:
        found = detect_markers(gray, fallback_side, crisp=True)
    else:
        found = detect_markers(small, None, crisp=True)
        found = {i: ((c + 0.5) / f - 0.5).astype(np.float32) for i, c in found.items()}  # to gray's px
        if coarse and found and len(found) < len(layout):
            found = detect_markers(gray, fallback_side, crisp=True)
    return {i: _refine_corners(gray, c) for i, c in found.items()}


_MIN_SMALL_MARKER_PX = 28  # 4 px per module: smaller, and a search at a smaller size may miss some


def _refine_corners(gray: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """One marker's corners to sub-pixel accuracy at full resolution; unchanged if it drifts."""
    side = float(np.mean(np.linalg.norm(corners - np.roll(corners, 1, axis=0), axis=1)))
    win = int(min(5, max(2, side / MARKER_MODULES / 2)))  # inside one module and the quiet zone
    pts = corners.reshape(-1, 1, 2).copy()
    cv2.cornerSubPix(gray, pts, (win, win), (-1, -1), (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.01))
    refined = pts.reshape(4, 2)
    if not np.all(np.isfinite(refined)) or float(np.abs(refined - corners).max()) > win:
        return corners
    return refined.astype(np.float32)
