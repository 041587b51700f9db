"""Sparse canvases: the screen's visible sides plus a few features locate the photo; a view of a
different sparse canvas is still declined."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from sync.locate import ScreenLocator
from sync.locate.edges import BOTTOM, LEFT, TOP, find_screen_edges
from sync.locate.imaging import apply_h
from sync.locate.linefit import assign_sides, centre_spread, side_line, solve
from tests.sync.test_locate import (  # the same simulated camera, 1200x900
    camera_h,
    photograph,
    truth,
)

VIEW = (1200, 900)


def sparse_canvas(seed: int, w: int = 1440, h: int = 900) -> np.ndarray:
    """An almost blank canvas with two textured cut-outs, always in the same places (so another
    seed differs only in what the cut-outs show): too few features on their own."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 246, np.uint8)
    for cx, cy in ((650, 450), (1150, 250)):
        size = 80
        noise = cv2.resize(rng.integers(0, 255, (12, 12, 3)).astype(np.uint8), (2 * size, 2 * size), interpolation=cv2.INTER_CUBIC)
        for _ in range(6):
            c = tuple(int(v) for v in rng.integers(0, 2 * size, 2))
            cv2.circle(noise, c, int(rng.integers(8, 40)), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
        mask = np.zeros((2 * size, 2 * size), np.uint8)
        ang = np.sort(rng.uniform(0, 2 * np.pi, 9))
        rad = size * rng.uniform(0.6, 0.95, 9)
        pts = np.stack([size + rad * np.cos(ang), size + rad * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255)
        roi = img[cy - size : cy + size, cx - size : cx + size]
        roi[mask > 0] = noise[mask > 0]
    return img


@pytest.fixture(scope="module")
def locator() -> ScreenLocator:
    return ScreenLocator()


@pytest.fixture(scope="module")
def canvas() -> np.ndarray:
    return sparse_canvas(3)


def _corner_shot(canvas: np.ndarray) -> np.ndarray:
    """Close to the bottom-left corner: two sides and one object in view, not the whole screen."""
    return camera_h(canvas.shape[1], (330, 650), 15, 8, -6, 5)


def test_edges_are_found_on_the_right_sides(canvas):
    H = _corner_shot(canvas)
    gray = cv2.cvtColor(photograph(canvas, H), cv2.COLOR_BGR2GRAY)
    sides = assign_sides(find_screen_edges(gray), 0)
    assert set(sides) == {LEFT, BOTTOM}
    Hi = np.linalg.inv(H)
    for side, run in sides.items():
        a, b, c = side_line(side, canvas.shape[1], canvas.shape[0])
        on_screen = apply_h(Hi, run.points)
        assert np.abs(on_screen @ [a, b] + c).max() < 4.0  # within a few screen px of the true side


def test_two_sides_plus_three_matches_give_the_homography():
    """Two sides need three matches (two leave a one-parameter family); the fit is exact then."""
    H = camera_h(1440, (300, 600), 25, 15, -10, 8)
    Hi = np.linalg.inv(H)
    corner = np.array([-0.5, 899.5])
    left = apply_h(H, corner + np.outer(np.linspace(-600, -50, 12), [0, 1]))
    bottom = apply_h(H, corner + np.outer(np.linspace(50, 700, 12), [1, 0]))
    lines = [side_line(LEFT, 1440, 900), side_line(BOTTOM, 1440, 900)]
    src = apply_h(H, [[400.0, 500.0], [520.0, 640.0], [380.0, 700.0]])
    dst = apply_h(Hi, src)
    got = solve(src, dst, [left, bottom], lines)
    assert got is not None
    probe = [[600.0, 450.0], [100.0, 100.0], [1100.0, 800.0]]
    assert np.abs(apply_h(got, probe) - apply_h(Hi, probe)).max() < 0.5
    # no spare match to check the centre with: not pinned
    assert centre_spread(src, dst, [left, bottom], lines, (600, 450)) == math.inf


def test_sparse_canvas_close_up_is_located(locator, canvas):
    H = _corner_shot(canvas)
    loc = locator.locate(photograph(canvas, H), locator.index(canvas))
    tx, ty = truth(H)
    assert loc.found, loc.hint
    assert loc.method == "edges+features"
    assert math.hypot(loc.x - tx, loc.y - ty) < 8.0


def test_view_of_a_different_sparse_canvas_is_declined(locator, canvas):
    other = sparse_canvas(11)  # the same layout, other cut-outs
    H = _corner_shot(other)
    loc = locator.locate(photograph(other, H), locator.index(canvas))
    assert not loc.found and loc.x is None
    assert loc.hint


def test_sides_without_matching_content_are_declined(locator, canvas):
    """The same corner of the screen, but the canvas shown has no object there: the sides alone
    must not be trusted."""
    shown = np.full_like(canvas, 246)
    H = _corner_shot(canvas)
    loc = locator.locate(photograph(shown, H), locator.index(canvas))
    assert not loc.found and loc.hint


@pytest.mark.parametrize("n_sides,n_matches", [(1, 3), (2, 3), (3, 1), (0, 4), (3, 6)])
def test_sides_and_matches_fit_exactly_on_clean_data(n_sides, n_matches):
    """The Gauss-Newton refinement (all residuals in one pass) lands on the true homography."""
    H = camera_h(1440, (200, 700), 22, 12, -8, 6)
    Hi = np.linalg.inv(H)
    sides = [LEFT, BOTTOM, TOP][:n_sides]
    ends = {LEFT: ([-0.5, 300.0], [-0.5, 899.5]), BOTTOM: ([-0.5, 899.5], [700.0, 899.5]), TOP: ([-0.5, -0.5], [500.0, -0.5])}
    line_src = [apply_h(H, np.linspace(*map(np.array, ends[s]), 16)) for s in sides]
    line_dst = [side_line(s, 1440, 900) for s in sides]
    dst = np.array([[300.0, 600.0], [420.0, 760.0], [250.0, 820.0], [520.0, 640.0], [150.0, 500.0], [600.0, 850.0]])[:n_matches]
    got = solve(apply_h(H, dst), dst, line_src, line_dst)
    assert got is not None
    probe = np.array([[200.0, 700.0], [50.0, 880.0], [700.0, 400.0]])
    assert np.abs(apply_h(got, apply_h(H, probe)) - probe).max() < 0.05
    assert np.allclose(apply_h(got, apply_h(H, probe)), apply_h(Hi, apply_h(H, probe)), atol=0.05)
