"""ScreenLocator: the screen point under the centre of a phone photo, or an honest "not found".

Pipeline per photo: candidate homographies from the paste pattern's markers (when the screen
picture has them), from SIFT features (when it has any), from the whole screen outline, and from
the screen's visible sides plus a few features (sparse canvases); each must pass the geometric
checks and the photometric verification; agreeing candidates reinforce each other. Any doubt answers
"not found" with a hint: a paste in the wrong place is worse than asking to try again.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from . import geometry, linefit
from .config import LocatorConfig
from .edges import EdgeRun, find_screen_edges
from .features import guided_matches, ratio_matches, sift_features
from .fiducials import detect_markers
from .imaging import apply_h, downsize, scale_mat, to_gray
from .index import IndexCache, ScreenIndex
from .io import read_image
from .outline import BrightRegion, bright_region, find_screen_quad, screen_corners
from .result import (
    HINT_AIM_AT_CANVAS,
    HINT_BAD_IMAGE,
    HINT_BLANK_CANVAS,
    HINT_FACE_SCREEN,
    HINT_HOLD_STEADY,
    HINT_MOVE_BACK,
    HINT_MOVE_CLOSER,
    HINT_NO_MATCH,
    HINT_NOT_IN_VIEW,
    Location,
)
from .verify import SmallView, Verdict, small_view, verify

# how far each way of failing got: the furthest one decides the hint
_STAGE = {"pending": 0, "no-data": 0, "few-matches": 1, "geometry": 2, "photometry": 3, "accepted": 4}
_GEOMETRY_HINTS = {
    geometry.TOO_FAR: HINT_MOVE_CLOSER,
    geometry.TOO_CLOSE: HINT_MOVE_BACK,
    geometry.TILTED: HINT_FACE_SCREEN,
    geometry.OFF_SCREEN: HINT_AIM_AT_CANVAS,
    geometry.DEGENERATE: HINT_NO_MATCH,
}


@dataclass
class _Candidate:
    """One hypothesis for the view->screen homography, and how it fared."""

    method: str
    H: np.ndarray | None = None
    support: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # inliers, view px
    targets: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # the same, screen px
    inliers: int = 0
    stage: str = "pending"  # where it failed, or "accepted"
    hint: str | None = None
    geo: geometry.Geometry | None = None
    verdict: Verdict | None = None
    # the screen's sides the fit rests on: (view points per side, screen line per side)
    lines: tuple[list[np.ndarray], list[np.ndarray]] = field(default_factory=lambda: ([], []))

    @property
    def ok(self) -> bool:
        return self.stage == "accepted"

    def fail(self, stage: str, hint: str | None = None) -> "_Candidate":
        self.stage, self.hint = stage, hint
        return self


@dataclass
class _ViewFeatures:
    """The photo's SIFT features and their nearest screen descriptors (computed once per photo)."""

    points: np.ndarray  # (N, 2) full view px
    knn_idx: np.ndarray  # (N, k) screen feature indices
    knn_dist: np.ndarray  # (N, k) squared distances


class _Photo:
    """The photo, grey, and what several steps derive from it: each computed once, when first needed."""

    def __init__(self, gray: np.ndarray, config: LocatorConfig) -> None:
        self.gray = gray
        self._config = config
        self._region: BrightRegion | None = None
        self._small: SmallView | None = None

    @property
    def region(self) -> BrightRegion:
        """The bright region both the outline and the sides start from."""
        if self._region is None:
            self._region = bright_region(self.gray)
        return self._region

    @property
    def small(self) -> SmallView:
        """The photo's side of the photometric check."""
        if self._small is None:
            self._small = small_view(self.gray, self._config)
        return self._small


class ScreenLocator:
    """Stateless apart from its configuration; safe to share between threads."""

    def __init__(self, config: LocatorConfig | None = None) -> None:
        self.config = config or LocatorConfig()

    def index(self, screen: np.ndarray, fiducials: bool | None = None) -> ScreenIndex:
        return ScreenIndex(screen, self.config, fiducials=fiducials)

    # -- the one entry point ----------------------------------------------------------------
    def locate(self, view_bgr: np.ndarray, index: ScreenIndex) -> Location:
        """The screen point under the centre of `view_bgr` (BGR/BGRA/grey uint8), or not found."""
        if view_bgr is None or view_bgr.size == 0 or min(view_bgr.shape[:2]) < 32:
            return Location.not_found(HINT_BAD_IMAGE)
        if not index.locatable:
            return Location.not_found(HINT_BLANK_CANVAS)
        # work on at most a couple of megapixels: every step below downsizes further anyway, and
        # the answer (a screen point) does not depend on the photo's resolution
        gray, f = downsize(to_gray(view_bgr), self.config.work_max_side)
        if float(cv2.meanStdDev(gray)[1][0, 0]) < 2.0:  # numpy's std would convert to float64 first
            return Location.not_found(HINT_BAD_IMAGE)
        loc = self._locate(gray, index)
        if loc.found and loc.scale is not None and f != 1.0:
            loc = replace(loc, scale=loc.scale * f)  # per pixel of the photo as given
        return loc

    def _locate(self, gray: np.ndarray, index: ScreenIndex) -> Location:
        photo = _Photo(gray, self.config)
        cands: list[_Candidate] = []
        if index.has_markers:
            cands.append(self._judge(self._from_markers(gray, index), photo, index))
        screen_seen = False
        if not any(c.ok for c in cands):  # markers that check out are exact: no need for more
            screen_seen = self._features_then_outline(photo, index, cands)
        return self._decide(cands, gray, index, screen_seen)

    def _features_then_outline(self, photo: _Photo, index: ScreenIndex, cands: list[_Candidate]) -> bool:
        """Features at a modest resolution, then the screen's outline (sparse canvases); once
        more with a sharper look if that almost worked (small text, far screens). Appends to
        `cands`; returns whether a whole screen was seen in the photo."""
        cfg = self.config
        gray = photo.gray
        sides = [cfg.view_max_side]
        if cfg.view_retry_side > 1.25 * cfg.view_max_side and max(gray.shape) > 1.25 * cfg.view_max_side:
            sides.append(cfg.view_retry_side)
        quad: np.ndarray | None = None
        runs: list[EdgeRun] | None = None
        looked = False
        for n, side in enumerate(sides):
            if n and not any(self._sharper_may_help(c, gray, index, sides[0]) for c in cands):
                break  # nothing promising at the first look, or nothing a sharper look would add
            vf = self._view_features(gray, index, side) if index.has_features else None
            if vf is not None:
                cands.append(self._judge(self._from_features(vf, index), photo, index))
                if cands[-1].ok:
                    break
            if cfg.use_outline:
                if not looked:
                    quad, looked = find_screen_quad(gray, region=photo.region), True
                oc = self._from_outline(quad, gray, index, vf)
                if oc is not None:
                    cands.append(self._judge(oc, photo, index))
                    if cands[-1].ok:
                        break
            if cfg.use_edges and vf is not None and quad is None:
                if runs is None:
                    runs = find_screen_edges(gray, region=photo.region)
                ec = self._from_edges(runs, gray, index, vf)
                if ec is not None:
                    cands.append(self._judge(ec, photo, index))
                    if cands[-1].ok:
                        break
        return quad is not None

    def _sharper_may_help(self, c: _Candidate, gray: np.ndarray, index: ScreenIndex, side: int) -> bool:
        """Did candidate c almost work, and was the look at `side` px coarser than the screen's
        index? Only then can a sharper look find matches the first could not: where the photo
        already resolves the screen as finely as the index does, more photo pixels add detail the
        index does not have (and cost three times the first look)."""
        cfg = self.config
        if c.inliers < cfg.retry_min_inliers:
            return False
        if c.H is None:
            return True
        vh, vw = gray.shape[:2]
        with np.errstate(all="ignore"):
            det = float(np.linalg.det(geometry.jacobian(c.H, (vw - 1) / 2, (vh - 1) / 2)))
        if not math.isfinite(det) or det <= 0:
            return False  # mirrored or collapsed at the centre: no photo of a screen looks so
        scale = math.sqrt(det)  # screen px per photo px
        if scale * max(vw, vh) / max(index.size) > cfg.max_coverage:
            return False  # farther than any accepted photo: nor is this one
        # index px per px of the first look, at the photo's centre
        coarseness = scale * index.feature_scale * max(vw, vh) / min(side, max(vw, vh))
        return coarseness >= cfg.retry_min_coarseness

    # -- candidates -------------------------------------------------------------------------
    def _view_features(self, gray: np.ndarray, index: ScreenIndex, side: int) -> _ViewFeatures | None:
        cfg = self.config
        small, f = downsize(gray, side)
        pts, desc = sift_features(small, cfg.view_max_features, cfg.contrast_threshold)
        if len(pts) < 6:
            return None
        idx, dist = index.tree.knn(desc, cfg.knn)
        return _ViewFeatures(apply_h(np.linalg.inv(scale_mat(f)), pts), idx, dist)

    def _from_features(self, vf: _ViewFeatures, index: ScreenIndex) -> _Candidate:
        cfg = self.config
        c = _Candidate("features")
        vi, si = ratio_matches(vf.knn_idx, vf.knn_dist, cfg.ratio)
        if len(vi) < 6 or self._fit(c, vf.points[vi], index.points[si], index) is None:
            return c.fail("few-matches")
        c = self._guided(c, vf, index)
        if c.inliers < cfg.min_inliers:
            return c.fail("few-matches")
        return c

    def _guided(self, c: _Candidate, vf: _ViewFeatures, index: ScreenIndex, method: str = "features") -> _Candidate:
        """Re-match with c's homography as a guide; the refit wins if it explains more points."""
        assert c.H is not None
        radius = self.config.guided_radius_px / index.feature_scale
        gvi, gsi = guided_matches(vf.knn_idx, vf.knn_dist, apply_h(c.H, vf.points), index.points, radius)
        if len(gvi) <= c.inliers:
            return c
        trial = _Candidate(method)
        if self._fit(trial, vf.points[gvi], index.points[gsi], index) is not None and trial.inliers > c.inliers:
            return trial
        return c

    def _fit(self, c: _Candidate, src: np.ndarray, dst: np.ndarray, index: ScreenIndex) -> np.ndarray | None:
        """Robust homography src (view px) -> dst (screen px); fills c's H, support and inliers."""
        if len(src) < 4:
            return None
        thr = self.config.ransac_px / index.feature_scale  # index px -> screen px
        H, mask = cv2.findHomography(
            src.astype(np.float64), dst.astype(np.float64), cv2.USAC_MAGSAC, thr, maxIters=self.config.ransac_iters, confidence=0.999
        )
        if H is None or mask is None:
            return None
        keep = mask.ravel().astype(bool)
        c.H, c.support, c.targets, c.inliers = H, src[keep], dst[keep], int(keep.sum())
        return H

    def _from_markers(self, gray: np.ndarray, index: ScreenIndex) -> _Candidate:
        cfg = self.config
        c = _Candidate("fiducials")
        seen = detect_markers(gray, cfg.marker_max_side)
        common = sorted(set(seen) & set(index.markers))
        if len(common) < cfg.min_markers:
            return c.fail("few-matches" if common else "no-data")
        src = np.vstack([seen[i] for i in common]).astype(np.float64)
        dst = np.vstack([index.markers[i] for i in common]).astype(np.float64)
        side = float(np.median([np.linalg.norm(index.markers[i][1] - index.markers[i][0]) for i in common]))
        H, mask = cv2.findHomography(src, dst, cv2.RANSAC, max(1.5, 0.06 * side), maxIters=500, confidence=0.999)
        if H is None or mask is None:
            return c.fail("few-matches")
        keep = mask.ravel().astype(bool)
        c.H, c.support, c.targets, c.inliers = H, src[keep], dst[keep], int(keep.sum())
        if c.inliers < 4 * cfg.min_markers - 1:
            return c.fail("few-matches")
        return c

    def _from_outline(
        self, quad: np.ndarray | None, gray: np.ndarray, index: ScreenIndex, vf: _ViewFeatures | None
    ) -> _Candidate | None:
        if quad is None:
            return None
        vh, vw = gray.shape[:2]
        corners = screen_corners(index.width, index.height)
        for k in range(4):  # which photo corner is the screen's top-left: the one that keeps it upright
            q = np.roll(quad, -k, axis=0)
            H = cv2.getPerspectiveTransform(q.astype(np.float32), corners.astype(np.float32)).astype(np.float64)
            geo = geometry.check(H, (vw, vh), index.size, q, self.config)
            if geo.reason in (None, geometry.OFF_SCREEN) and abs(geo.rotation_deg) <= self.config.outline_max_roll_deg:
                c = _Candidate("outline", H=H, support=q, targets=corners, inliers=4)
                if vf is not None:  # features where the outline says they should be
                    g = self._guided(c, vf, index, method="outline+features")
                    if g is not c and g.inliers >= self.config.min_inliers:
                        # one least-squares fit to both: corners hold the frame, features the detail
                        g.support, g.targets = np.vstack([g.support, q]), np.vstack([g.targets, corners])
                        H2, _ = cv2.findHomography(g.support, g.targets, 0)
                        if H2 is not None:
                            g.H = H2
                            return g
                return c
        return None

    def _from_edges(self, runs: list[EdgeRun], gray: np.ndarray, index: ScreenIndex, vf: _ViewFeatures) -> _Candidate | None:
        """The screen's visible sides plus the few feature matches a sparse canvas gives."""
        cfg = self.config
        if not runs:
            return None
        turns = [0]
        if any(abs(abs(r.angle_deg) % 90 - 45) < 15 for r in runs):
            turns += [1, -1]  # near a diagonal: the phone's roll makes the side ambiguous
        vi, si = ratio_matches(vf.knn_idx, vf.knn_dist, cfg.edge_ratio)
        if len(vi) > cfg.edge_max_matches:  # the most distinctive ones: a sparse canvas has few anyway
            keep = np.argsort(vf.knn_dist[vi, 0] / np.maximum(vf.knn_dist[vi, 1], 1e-9), kind="stable")[: cfg.edge_max_matches]
            vi, si = vi[keep], si[keep]
        src, dst = vf.points[vi].astype(np.float64), index.points[si].astype(np.float64)
        thr = cfg.ransac_px / index.feature_scale
        best: _Candidate | None = None
        for k in turns:
            sides = linefit.assign_sides(runs, k)
            if len(sides) < 2:
                continue
            line_src = [r.points for r in sides.values()]
            line_dst = [linefit.side_line(sd, index.width, index.height) for sd in sides]
            H, mask = linefit.ransac(src, dst, line_src, line_dst, thr, cfg.ransac_iters // 4)
            if H is None:
                continue
            # guided: matches where H says they should be, then one refit on all of them
            with np.errstate(divide="ignore", invalid="ignore"):  # points beyond H's horizon: no match
                predicted = apply_h(H, vf.points)
            gvi, gsi = guided_matches(vf.knn_idx, vf.knn_dist, predicted, index.points, cfg.guided_radius_px / index.feature_scale)
            gsrc, gdst = vf.points[gvi].astype(np.float64), index.points[gsi].astype(np.float64)
            if len(gsrc) > mask.sum():
                H2, m2 = linefit.ransac(gsrc, gdst, line_src, line_dst, thr, cfg.ransac_iters // 4)
                if H2 is not None and m2.sum() >= mask.sum():
                    H, src_in, dst_in = H2, gsrc[m2], gdst[m2]
                else:
                    src_in, dst_in = src[mask], dst[mask]
            else:
                src_in, dst_in = src[mask], dst[mask]
            c = _Candidate("edges+features", H=H, support=np.vstack([src_in] + line_src), targets=dst_in, inliers=len(src_in))
            c.lines = (line_src, line_dst)
            if best is None or c.inliers > best.inliers:
                best = c
        if best is None:
            return None
        need = linefit.matches_needed(len(best.lines[0]))
        if best.inliers < need + cfg.edge_extra_inliers:
            return best.fail("few-matches")
        return best

    # -- judging ----------------------------------------------------------------------------
    def _judge(self, c: _Candidate, photo: _Photo, index: ScreenIndex) -> _Candidate:
        """Geometry, then how well the inliers pin down the centre, then photometry."""
        if c.stage != "pending" or c.H is None:
            return c
        cfg = self.config
        vh, vw = photo.gray.shape[:2]
        c.geo = geometry.check(c.H, (vw, vh), index.size, c.support, cfg)
        if c.geo.reason is not None:
            return c.fail("geometry", _GEOMETRY_HINTS[c.geo.reason])
        if c.method == "edges+features":
            spread = linefit.centre_spread(c.support[: c.inliers], c.targets, *c.lines, ((vw - 1) / 2, (vh - 1) / 2))
            if spread > cfg.max_centre_spread * math.hypot(*index.size):
                return c.fail("geometry", HINT_MOVE_BACK)
            if linefit.unseen_side_length(c.H, c.lines, (vw, vh), index.size) > cfg.edge_unseen_max * min(vw, vh):
                return c.fail("geometry", HINT_NO_MATCH)
        elif c.method != "outline":  # four corners around the centre pin it by construction
            spread = geometry.centre_spread(c.support, c.targets, ((vw - 1) / 2, (vh - 1) / 2))
            if spread > cfg.max_centre_spread * math.hypot(*index.size):
                return c.fail("geometry", HINT_MOVE_BACK)
        c.verdict = verify(photo.small, c.H, index, cfg)
        v = c.verdict
        if v.ncc < cfg.min_ncc or (not math.isnan(v.ncc_centre) and v.ncc_centre < cfg.min_ncc_centre):
            return c.fail("photometry", HINT_NO_MATCH)
        c.stage = "accepted"
        return c

    def _decide(self, cands: list[_Candidate], gray: np.ndarray, index: ScreenIndex, screen_seen: bool = False) -> Location:
        ok = [c for c in cands if c.ok]
        if not ok:
            return self._not_found(cands, gray, screen_seen)
        if len(ok) == 1:
            return self._found(ok[0], ok[0].method)
        # markers and features both answered
        a, b = ok[0], ok[1]
        assert a.geo and b.geo and a.verdict and b.verdict
        if math.hypot(a.geo.x - b.geo.x, a.geo.y - b.geo.y) <= 0.02 * math.hypot(*index.size):
            best = a if a.method == "fiducials" else b  # they agree; markers are the more exact
            return self._found(best, f"{b.method}+{a.method}" if a.method == "fiducials" else f"{a.method}+{b.method}", bonus=True)
        # two confident answers that disagree: one is wrong. Trust a clearly better-verified one,
        # else decline.
        if abs(a.verdict.ncc - b.verdict.ncc) < 0.15:
            return Location.not_found(HINT_HOLD_STEADY, method="features+fiducials")
        best = max(ok, key=lambda c: c.verdict.ncc if c.verdict else 0.0)
        return self._found(best, best.method)

    def _found(self, c: _Candidate, method: str, bonus: bool = False) -> Location:
        assert c.geo and c.verdict
        cfg = self.config
        v = c.verdict
        centre = v.ncc if math.isnan(v.ncc_centre) else min(v.ncc, v.ncc_centre + 0.1)
        photometric = min(1.0, max(0.0, (centre - cfg.min_ncc) / (0.7 - cfg.min_ncc)))
        support = min(1.0, math.log(max(c.inliers, 2)) / math.log(80))
        conf = 0.5 + 0.5 * (0.6 * photometric + 0.4 * support)
        if bonus:
            conf = min(1.0, conf + 0.05)
        return Location(
            True,
            c.geo.x,
            c.geo.y,
            round(conf, 3),
            scale=c.geo.scale,
            rotation_deg=c.geo.rotation_deg,
            method=method,
            inliers=c.inliers,
        )

    def _not_found(self, cands: list[_Candidate], gray: np.ndarray, screen_seen: bool = False) -> Location:
        best = max(cands, key=lambda c: _STAGE.get(c.stage, 0)) if cands else None
        hint = best.hint if best is not None else None
        if hint is None or (hint == HINT_NO_MATCH and best is not None and best.stage != "photometry"):
            if _blurry(gray):
                hint = HINT_HOLD_STEADY
            elif screen_seen:  # a whole screen is in the photo, just not this picture
                hint = HINT_NO_MATCH
            else:
                hint = hint or HINT_NOT_IN_VIEW
        conf = 0.0
        if best is not None and best.verdict is not None:
            conf = max(0.0, min(0.49, best.verdict.ncc))
        return Location.not_found(hint, method=best.method if best else "none", confidence=conf, inliers=best.inliers if best else 0)


def _blurry(gray: np.ndarray) -> bool:
    """Too little fine detail for a photo of a screen: a shaken or defocused shot."""
    small, _ = downsize(gray, 640)
    return float(cv2.Laplacian(small, cv2.CV_32F).var()) < 12.0


# -- conveniences ---------------------------------------------------------------------------
def locate_images(view: np.ndarray, screen: np.ndarray, config: LocatorConfig | None = None) -> Location:
    """Locate a phone photo (BGR array) on a screen picture (BGR array); builds a fresh index."""
    locator = ScreenLocator(config)
    return locator.locate(view, locator.index(screen))


def locate_paths(
    view_path: str | os.PathLike[str],
    screen_path: str | os.PathLike[str],
    cache: IndexCache | None = None,
    config: LocatorConfig | None = None,
) -> Location:
    """Locate from image files (EXIF orientation applied). With `cache`, a screen picture used by
    several pairs (same path, size and mtime) is indexed once."""
    locator = ScreenLocator(config)
    view = read_image(view_path)
    if cache is None:
        return locator.locate(view, locator.index(read_image(screen_path)))
    st = os.stat(screen_path)
    key = f"{os.path.abspath(screen_path)}:{st.st_size}:{st.st_mtime_ns}:{hash(locator.config)}"
    index = cache.get_or_build(key, lambda: locator.index(read_image(screen_path)))
    return locator.locate(view, index)
