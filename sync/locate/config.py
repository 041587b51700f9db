"""Tunable numbers of the locator, in one place (tuned on benchmarks/locate)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocatorConfig:
    work_max_side: int = 1600  # phone photos are first reduced to this (12 MP helps nobody here)
    # --- features -------------------------------------------------------------------------
    index_max_side: int = 640  # screen picture is downsized to this for SIFT (once per picture)
    index_max_features: int = 6000
    view_max_side: int = 512  # phone photo is downsized to this for SIFT (SIFT upsamples 2x itself)
    view_retry_side: int = 896  # a second, sharper look when the first almost worked (0: never)
    retry_min_inliers: int = 6  # "almost": this many inliers somewhere
    retry_min_coarseness: float = 1.5  # ... and the first look this much coarser than the index
    view_max_features: int = 2500
    contrast_threshold: float = 0.03  # below OpenCV's 0.04: photos of screens are low-contrast
    ratio: float = 0.8  # Lowe's ratio test; geometry and photometry catch what it lets through
    flann_trees: int = 4
    flann_checks: int = 48
    ransac_px: float = 4.0  # MAGSAC threshold, in index pixels
    ransac_iters: int = 2000
    knn: int = 6  # neighbours kept per view descriptor, for guided matching
    guided_radius_px: float = 8.0  # in index pixels
    # --- fiducials ------------------------------------------------------------------------
    marker_max_side: int = 1024  # view is downsized to this to find markers (screen pictures: index_max_side)
    min_markers: int = 2
    # --- outline (last resort when features fail) --------------------------------------------
    use_outline: bool = True
    outline_max_roll_deg: float = 60.0  # photos are upright after EXIF; this picks the corner order
    # --- visible screen sides + a few features (sparse canvases) ---------------------------
    use_edges: bool = True
    edge_ratio: float = 0.85  # looser than `ratio`: the sides already fix most of the homography
    edge_max_matches: int = 120  # candidate matches kept (sparse canvases give far fewer)
    edge_extra_inliers: int = 3  # matches beyond the minimum the sides leave undetermined
    edge_unseen_max: float = 0.15  # of the photo's short side: a predicted side that should show
    # --- validation ------------------------------------------------------------------------
    min_inliers: int = 10
    max_centre_spread: float = 0.01  # of the screen diagonal: how well the inliers pin the centre
    max_anisotropy: float = 3.0  # singular values of the local map: ~70° of tilt
    max_scale_ratio: float = 6.0  # local scale across the middle half of the view
    min_coverage: float = 0.08  # view's long side, in screen long sides
    max_coverage: float = 6.0
    edge_margin: float = 0.005  # centre may land this far (fraction of size) off the picture, then clamped
    # --- photometric verification --------------------------------------------------------
    verify_max_side: int = 384
    min_ncc: float = 0.3
    min_ncc_centre: float = 0.15
    blank_min_features: int = 12  # fewer than this in the screen picture: locate cannot work
