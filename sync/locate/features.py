"""Local features (SIFT) and their matching against a screen's cached kd-tree."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from .config import LocatorConfig


def sift_features(gray: np.ndarray, max_features: int, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint positions (N, 2) float32 and descriptors (N, 128) float32 of a grey image."""
    sift = cv2.SIFT_create(nfeatures=max_features, contrastThreshold=contrast)
    kps, desc = sift.detectAndCompute(gray, None)
    if desc is None or not kps:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    pts = np.array([k.pt for k in kps], np.float32)
    return pts, desc.astype(np.float32, copy=False)


class DescriptorTree:
    """A FLANN kd-tree over one screen's descriptors, built on first use, then reused.

    Why a lock: one screen picture serves many pastes, possibly from several threads at once,
    and OpenCV does not promise that a FLANN index may be searched concurrently.
    """

    def __init__(self, descriptors: np.ndarray, config: LocatorConfig) -> None:
        self._desc = descriptors
        self._config = config
        self._index: cv2.flann.Index | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"_desc": self._desc, "_config": self._config}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["_desc"], state["_config"])  # type: ignore[misc]

    def knn(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest screen descriptors of each query row: (indices (N, k), squared distances)."""
        k = min(k, len(self._desc))
        with self._lock:
            if self._index is None:
                cv2.setRNGSeed(0)  # randomised kd-trees: seeded, so one picture always gives one answer
                self._index = cv2.flann.Index(self._desc, {"algorithm": 1, "trees": self._config.flann_trees})
            idx, dist = self._index.knnSearch(query, k, params={"checks": self._config.flann_checks})
        return idx.astype(np.int64), dist


def unique_screen(vi: np.ndarray, si: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Several view points on one screen point: keep the closest (the rest are repeats/noise)."""
    order = np.argsort(d, kind="stable")
    _, first = np.unique(si[order], return_index=True)
    sel = order[first]
    return vi[sel], si[sel]


def ratio_matches(idx: np.ndarray, dist: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(view indices, screen indices) of kNN results that pass Lowe's ratio test."""
    if idx.shape[1] < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keep = dist[:, 0] < (ratio * ratio) * dist[:, 1]  # squared L2 distances
    vi = np.nonzero(keep)[0]
    return unique_screen(vi, idx[keep, 0], dist[keep, 0])


def guided_matches(
    idx: np.ndarray, dist: np.ndarray, predicted: np.ndarray, screen_pts: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Matches re-chosen with a first homography's help: of each view point's k nearest screen
    descriptors, the nearest one that lies where the homography predicts.

    Why: on text and icons the right match is often not unique by appearance (so the ratio test
    drops it), yet it is unique by position.
    """
    cand = screen_pts[idx]  # (N, k, 2)
    near = np.linalg.norm(cand - predicted[:, None, :], axis=2) < radius
    has = near.any(axis=1)
    first = np.argmax(near, axis=1)  # nearest in descriptor space among those in place
    vi = np.nonzero(has)[0]
    si = idx[vi, first[vi]]
    return unique_screen(vi, si, dist[vi, first[vi]])
