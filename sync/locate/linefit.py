"""Homographies from point matches AND lines: the screen's visible sides plus a few features.

A visible side of the screen is a set of photo points that must map onto one known line of the
screen picture: two constraints on H per side. Three sides leave two unknowns: one match settles
them. Two sides (or one) need three matches, not two: any two lines meet in a point c (a corner,
or at infinity for opposite sides), and H + a c w^T with w orthogonal to two matches' photo points
fits the lines and those matches exactly, for any a. A sparse canvas's one or two objects give that many, where
features alone (>= 10 inliers around the centre) would not.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .edges import BOTTOM, LEFT, RIGHT, TOP, EdgeRun
from .geometry import refit_scatter
from .imaging import apply_h


def side_line(side: int, width: int, height: int) -> np.ndarray:
    """The screen picture's side as a line (a, b, c): a u + b v + c = 0, pixel-centre convention."""
    return {
        LEFT: np.array([1.0, 0.0, 0.5]),
        RIGHT: np.array([1.0, 0.0, -(width - 0.5)]),
        TOP: np.array([0.0, 1.0, 0.5]),
        BOTTOM: np.array([0.0, 1.0, -(height - 0.5)]),
    }[side]


def _norm(pts: np.ndarray) -> np.ndarray:
    """Hartley normalisation: centroid to 0, mean distance sqrt(2)."""
    c = pts.mean(axis=0)
    d = float(np.mean(np.linalg.norm(pts - c, axis=1))) or 1.0
    s = math.sqrt(2) / d
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]])


def matches_needed(n_sides: int) -> int:
    """Point matches that, with n_sides of the screen, determine a homography (see above)."""
    return {0: 4, 1: 3, 2: 3, 3: 1}.get(n_sides, 0)


def assign_sides(runs: list[EdgeRun], quarter_turns: int) -> dict[int, EdgeRun]:
    """Each run to the screen side its direction says, for a phone rolled quarter_turns x 90
    degrees; two runs claiming one side: keep the longer (the other is glare or a window)."""
    out: dict[int, EdgeRun] = {}
    for r in sorted(runs, key=lambda r: -r.length):
        out.setdefault(r.side(quarter_turns), r)
    return out


def affine(src: np.ndarray, dst: np.ndarray, line_src: list[np.ndarray], line_dst: list[np.ndarray]) -> np.ndarray | None:
    """Least-squares affine map (as a 3x3 homography) from points and lines. Why affine first: the
    algebraic homography fit has exact degenerate solutions (everything onto the two sides'
    common corner) when matches are few; an affine map has none, is linear, and is a good start."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    blocks, rhs = [], []
    if len(src):
        one, zero = np.ones((len(src), 1)), np.zeros((len(src), 3))
        p = np.hstack([src, one])
        blocks += [np.hstack([p, zero]), np.hstack([zero, p])]
        rhs += [dst[:, 0], dst[:, 1]]
    for pts, line in zip(line_src, line_dst):
        a, b, c = np.asarray(line, np.float64) / float(np.linalg.norm(line[:2]))
        w = math.sqrt(_LINE_POINTS / len(pts))
        p = np.hstack([pts, np.ones((len(pts), 1))])
        blocks.append(w * np.hstack([a * p, b * p]))
        rhs.append(np.full(len(pts), -w * c))
    if not blocks:
        return None
    A, r = np.vstack(blocks), np.concatenate(rhs)
    m, _, rank, _ = np.linalg.lstsq(A, r, rcond=None)
    if rank < 6:
        return None
    return np.array([[m[0], m[1], m[2]], [m[3], m[4], m[5]], [0.0, 0.0, 1.0]])


_LINE_POINTS = 8.0  # a side's samples together weigh like this many point residuals


def refine(
    H: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    line_src: list[np.ndarray],
    line_dst: list[np.ndarray],
    iters: int = 8,
) -> np.ndarray | None:
    """Gauss-Newton on geometric errors (screen px): matches onto their points, sides' samples onto
    their lines. Parameters in a normalised view frame, H[2, 2] fixed to 1."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if 2 * len(src) + 2 * len(line_src) < 8:
        return None
    allv = np.vstack([src] + list(line_src)) if line_src else src
    T = _norm(allv)
    G = H @ np.linalg.inv(T)
    if abs(G[2, 2]) < 1e-12:
        return None
    h = (G / G[2, 2]).ravel()[:8].copy()
    prob = _Problem(apply_h(T, allv), len(src), dst, line_src, line_dst)
    lam = 1e-3
    r = prob.residuals(h)
    if r is None:
        return None
    for _ in range(iters):
        J = prob.jacobian(h)
        JtJ, Jtr = J.T @ J, J.T @ r
        step = np.linalg.solve(JtJ + lam * np.diag(np.diag(JtJ) + 1e-9), -Jtr)
        h2 = h + step
        r2 = prob.residuals(h2)
        if r2 is not None and float(r2 @ r2) <= float(r @ r):
            h, r, lam = h2, r2, lam * 0.3
            if np.linalg.norm(step) < 1e-10 * (np.linalg.norm(h) + 1e-12):
                break
        else:
            lam *= 10
    G = np.append(h, 1.0).reshape(3, 3)
    out = G @ T
    if not np.all(np.isfinite(out)) or abs(out[2, 2]) < 1e-12:
        return None
    return out / out[2, 2]


class _Problem:
    """The residuals of `refine` and their Jacobian wrt the 8 parameters (row-major H, h33 = 1),
    all points in one array: the matches' two residuals each (u, then v), then each side's samples
    (one residual each: the weighted distance to the side's line)."""

    def __init__(self, pts: np.ndarray, n_match: int, dst: np.ndarray, line_src: list[np.ndarray], line_dst: list[np.ndarray]) -> None:
        self.x, self.y = np.ascontiguousarray(pts[:, 0]), np.ascontiguousarray(pts[:, 1])
        self.m = n_match
        self.dst = dst
        # groups whose points must all lie on one side of H's horizon: the matches, each side
        sizes = ([n_match] if n_match else []) + [len(p) for p in line_src]
        self.starts = np.cumsum([0] + sizes[:-1])
        self.sizes = np.asarray(sizes)
        coef = []
        for p, l in zip(line_src, line_dst):
            a, b, c = np.asarray(l, np.float64) / float(np.linalg.norm(l[:2]))
            w = math.sqrt(_LINE_POINTS / len(p))
            coef.append(np.tile([w * a, w * b, w * c], (len(p), 1)))
        k = np.vstack(coef) if coef else np.zeros((0, 3))
        self.wa, self.wb, self.wc = k[:, 0], k[:, 1], k[:, 2]
        self._last: tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray] | None] | None = None

    def _project(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if self._last is not None and self._last[0] is h:
            return self._last[1]  # the Jacobian right after the residuals, at the same h
        out = self._project_new(h)
        self._last = (h, out)
        return out

    def _project_new(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        x, y = self.x, self.y
        s = h[6] * x + h[7] * y + 1.0
        if np.any(np.abs(s) < 1e-9):
            return None
        pos = np.add.reduceat((s > 0).astype(np.int64), self.starts) if len(self.starts) else np.zeros(0)
        if np.any((pos != 0) & (pos != self.sizes)):
            return None  # a group straddles the horizon
        u = (h[0] * x + h[1] * y + h[2]) / s
        v = (h[3] * x + h[4] * y + h[5]) / s
        return u, v, s

    def residuals(self, h: np.ndarray) -> np.ndarray | None:
        pr = self._project(h)
        if pr is None:
            return None
        u, v, _ = pr
        m = self.m
        return np.concatenate([u[:m] - self.dst[:, 0], v[:m] - self.dst[:, 1], self.wa * u[m:] + self.wb * v[m:] + self.wc])

    def jacobian(self, h: np.ndarray) -> np.ndarray:
        u, v, s = self._project(h)  # type: ignore[misc]  # h passed `residuals` already
        m, n = self.m, len(s)
        xs, ys, inv = self.x / s, self.y / s, 1.0 / s
        J = np.zeros((m + n, 8))
        # matches: rows 0..m-1 for u, m..2m-1 for v
        J[:m, 0], J[:m, 1], J[:m, 2] = xs[:m], ys[:m], inv[:m]
        J[:m, 6], J[:m, 7] = -u[:m] * xs[:m], -u[:m] * ys[:m]
        J[m : 2 * m, 3], J[m : 2 * m, 4], J[m : 2 * m, 5] = xs[:m], ys[:m], inv[:m]
        J[m : 2 * m, 6], J[m : 2 * m, 7] = -v[:m] * xs[:m], -v[:m] * ys[:m]
        # sides: w (a du + b dv)
        a, b = self.wa, self.wb
        L = J[2 * m :]
        L[:, 0], L[:, 1], L[:, 2] = a * xs[m:], a * ys[m:], a * inv[m:]
        L[:, 3], L[:, 4], L[:, 5] = b * xs[m:], b * ys[m:], b * inv[m:]
        t = a * u[m:] + b * v[m:]
        L[:, 6], L[:, 7] = -t * xs[m:], -t * ys[m:]
        return J


def solve(src: np.ndarray, dst: np.ndarray, line_src: list[np.ndarray], line_dst: list[np.ndarray]) -> np.ndarray | None:
    """Homography from points and sides: affine start, geometric refinement."""
    A = affine(src, dst, line_src, line_dst)
    return None if A is None else refine(A, src, dst, line_src, line_dst)


_REFINED = 8  # samples whose affine scores are best get a full homography fit


def ransac(
    src: np.ndarray,
    dst: np.ndarray,
    line_src: list[np.ndarray],
    line_dst: list[np.ndarray],
    thr: float,
    iters: int,
    seed: int = 0,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Homography from the sides plus the largest consistent set of point matches: sample the
    fewest matches the sides leave undetermined, score each sample's affine fit (cheap; with a
    looser threshold, perspective bends it a little), then refine the best few to homographies
    on their consensus. Returns (H, inlier mask over the matches)."""
    n = len(src)
    need = matches_needed(len(line_src))
    none = np.zeros(n, bool)
    if n < need:
        return None, none
    rng = np.random.default_rng(seed)  # deterministic: one photo, one answer
    if need == 0:
        trials: list[np.ndarray] = [np.zeros(0, np.int64)]
    elif need == 1:
        trials = [np.array([i]) for i in range(n)]  # few enough to try every one
    elif need == 3 and n * (n - 1) * (n - 2) // 6 <= iters:
        trials = [np.array(t) for t in itertools.combinations(range(n), 3)]
    else:
        trials = [rng.choice(n, need, replace=False) for _ in range(iters)]
    scored: list[tuple[int, int]] = []
    for t, sel in enumerate(trials):
        A = affine(src[sel], dst[sel], line_src, line_dst)
        if A is None:
            continue
        count = int((np.linalg.norm(apply_h(A, src) - dst, axis=1) < 4 * thr).sum()) if n else 0
        scored.append((count, -t))
    best_H, best_mask = None, none
    refits: dict[bytes, np.ndarray | None] = {}  # consensus -> its fit: samples often share one
    for _, t in sorted(scored, reverse=True)[:_REFINED]:
        sel = trials[-t]
        H = solve(src[sel], dst[sel], line_src, line_dst)
        mask = none
        for _ in range(3):  # refit on the consensus, which may then grow
            if H is None:
                break
            new = np.linalg.norm(apply_h(H, src) - dst, axis=1) < thr if n else none
            if new.sum() < need or np.array_equal(new, mask):
                break
            mask = new
            key = mask.tobytes()
            if key not in refits:
                refits[key] = solve(src[mask], dst[mask], line_src, line_dst)
            H = refits[key]
        if H is not None and mask.sum() >= need and (best_H is None or mask.sum() > best_mask.sum()):
            best_H, best_mask = H, mask
    if best_H is None:
        return None, none
    return best_H, best_mask


def centre_spread(
    src: np.ndarray,
    dst: np.ndarray,
    line_src: list[np.ndarray],
    line_dst: list[np.ndarray],
    centre: tuple[float, float],
    rounds: int = 8,
) -> float:
    """How well the fit pins down the centre: RMS scatter (screen px) of the centre under refits on
    random halves of the point matches, the sides kept (they are measured, not matched).

    Why: with two sides and one object the object's matches decide the rest; if they cluster in a
    corner of the photo, the centre may still be loose."""
    n = len(src)
    need = matches_needed(len(line_src))
    m = max(need + 1, n // 2)
    if n < m + 1 and need > 0:
        return math.inf
    return refit_scatter(lambda sub: solve(src[sub], dst[sub], line_src, line_dst), n, m, centre, rounds)


def unseen_side_length(
    H: np.ndarray,
    lines: tuple[list[np.ndarray], list[np.ndarray]],
    view_size: tuple[int, int],
    screen_size: tuple[int, int],
    margin: float = 0.02,
) -> float:
    """Photo px of the screen's other sides that H puts inside the photo, where none was seen.

    Why: a wrong fit often draws the screen's edge right through the photo; the photo would show
    that edge (a bright-to-dark step) and it did not."""
    vw, vh = view_size
    sw, sh = screen_size
    used = {tuple(np.round(np.asarray(l, np.float64), 3)) for l in lines[1]}
    Hi = np.linalg.inv(H)
    corners = np.array([[-0.5, -0.5], [sw - 0.5, -0.5], [sw - 0.5, sh - 0.5], [-0.5, sh - 0.5]])
    sides = {TOP: (0, 1), RIGHT: (1, 2), BOTTOM: (2, 3), LEFT: (3, 0)}
    total = 0.0
    mx, my = margin * vw, margin * vh
    for side, (a, b) in sides.items():
        if tuple(np.round(side_line(side, sw, sh), 3)) in used:
            continue
        t = np.linspace(0.0, 1.0, 101)[:, None]
        s_pts = corners[a] * (1 - t) + corners[b] * t
        q = np.column_stack([s_pts, np.ones(len(s_pts))]) @ Hi.T
        front = q[:, 2] * np.sign(Hi[2] @ np.array([sw / 2, sh / 2, 1.0])) > 0
        v = q[:, :2] / q[:, 2:3]
        inside = front & (v[:, 0] > mx) & (v[:, 0] < vw - mx) & (v[:, 1] > my) & (v[:, 1] < vh - my)
        if inside.sum() >= 2:
            seg = v[inside]
            total += float(np.linalg.norm(seg[-1] - seg[0]))
    return total
