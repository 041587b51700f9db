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
    ps = apply_h(T, src)
    lines = [(apply_h(T, p), np.asarray(l, np.float64) / float(np.linalg.norm(l[:2])), math.sqrt(_LINE_POINTS / len(p))) for p, l in zip(line_src, line_dst)]
    lam = 1e-3
    for _ in range(iters):
        r, J = _residuals(h, ps, dst, lines)
        if r is None:
            return None
        JtJ, Jtr = J.T @ J, J.T @ r
        step = np.linalg.solve(JtJ + lam * np.diag(np.diag(JtJ) + 1e-9), -Jtr)
        h2 = h + step
        r2, _ = _residuals(h2, ps, dst, lines)
        if r2 is not None and float(r2 @ r2) <= float(r @ r):
            h, lam = h2, lam * 0.3
            if np.linalg.norm(step) < 1e-10 * (np.linalg.norm(h) + 1e-12):
                break
        else:
            lam *= 10
    G = np.append(h, 1.0).reshape(3, 3)
    out = G @ T
    if not np.all(np.isfinite(out)) or abs(out[2, 2]) < 1e-12:
        return None
    return out / out[2, 2]


def _residuals(h: np.ndarray, ps: np.ndarray, dst: np.ndarray, lines: list) -> tuple[np.ndarray | None, np.ndarray]:
    """Residuals and their Jacobian wrt the 8 parameters (row-major H, h33 = 1)."""
    res, jac = [], []

    def proj(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        x, y = p[:, 0], p[:, 1]
        s = h[6] * x + h[7] * y + 1.0
        if np.any(np.abs(s) < 1e-9) or not (np.all(s > 0) or np.all(s < 0)):
            return None
        u = (h[0] * x + h[1] * y + h[2]) / s
        v = (h[3] * x + h[4] * y + h[5]) / s
        one, zero = np.ones_like(x), np.zeros_like(x)
        du = np.stack([x / s, y / s, one / s, zero, zero, zero, -u * x / s, -u * y / s], 1)
        dv = np.stack([zero, zero, zero, x / s, y / s, one / s, -v * x / s, -v * y / s], 1)
        return u, v, du, dv

    if len(ps):
        pr = proj(ps)
        if pr is None:
            return None, np.zeros((0, 8))
        u, v, du, dv = pr
        res += [u - dst[:, 0], v - dst[:, 1]]
        jac += [du, dv]
    for p, (a, b, c), w in lines:
        pr = proj(p)
        if pr is None:
            return None, np.zeros((0, 8))
        u, v, du, dv = pr
        res.append(w * (a * u + b * v + c))
        jac.append(w * (a * du + b * dv))
    return np.concatenate(res), np.vstack(jac)


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
            H = solve(src[mask], dst[mask], line_src, line_dst)
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
    rng = np.random.default_rng(n)
    pts = []
    for _ in range(rounds):
        sub = rng.choice(n, m, replace=False) if n else np.zeros(0, np.int64)
        H = solve(src[sub], dst[sub], line_src, line_dst)
        if H is None:
            return math.inf
        pts.append(apply_h(H, [centre])[0])
    p = np.asarray(pts)
    if not np.all(np.isfinite(p)):
        return math.inf
    return float(np.sqrt(((p - p.mean(axis=0)) ** 2).sum(axis=1).mean()))


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
