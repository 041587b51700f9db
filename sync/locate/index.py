"""ScreenIndex: everything about one screen picture that pastes need, computed once.

A companion uploads a screen picture now and then; phones paste against it many times. So the
expensive part (features of the picture, its markers, its verification pyramid) is built once here
and each paste only analyses its own photo. `IndexCache` keeps recent indexes by a caller's key.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Callable

import cv2
import numpy as np

from .config import LocatorConfig
from .features import DescriptorTree, sift_features
from .fiducials import apply_pattern, pattern_layout, screen_markers
from .imaging import apply_h, downsize, scale_mat, to_gray


class ScreenIndex:
    """Features, markers and a grey pyramid of one screen picture, in its pixel coordinates."""

    def __init__(self, screen: np.ndarray, config: LocatorConfig | None = None, fiducials: bool | None = None) -> None:
        """Build from a screen picture (BGR, BGRA or grey uint8).

        fiducials: None finds the paste pattern's markers in the picture if they are there; True
        also means the companion is showing the standard pattern even if the picture lacks it;
        False ignores markers.
        """
        self.config = config or LocatorConfig()
        if screen is None or screen.size == 0 or min(screen.shape[:2]) < 16:
            raise ValueError("screen picture is empty or too small")
        gray = to_gray(screen)
        self.height, self.width = gray.shape[:2]

        small, f = downsize(gray, self.config.index_max_side)
        self.markers: dict[int, np.ndarray] = {}
        if fiducials is not False:
            self.markers = screen_markers(gray, small, f, self.config.marker_max_side)
            if fiducials and not self.markers:
                # the pattern is on screen but not in the picture: put it where the companion draws it
                self.markers = {m.id: m.corners() for m in pattern_layout(self.width, self.height)}
                gray = to_gray(apply_pattern(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)))
                small, f = downsize(gray, self.config.index_max_side)

        if int(small.max()) - int(small.min()) < 4:  # a blank picture: nothing to describe
            pts, self.descriptors = np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
        else:
            pts, self.descriptors = sift_features(small, self.config.index_max_features, self.config.contrast_threshold)
        # keypoints back to screen pixels
        self.points = apply_h(np.linalg.inv(scale_mat(f)), pts).astype(np.float32) if len(pts) else pts
        self.feature_scale = f  # index pixels per screen pixel
        self.tree = DescriptorTree(self.descriptors, self.config)
        # for verification; finer than 2048 px would only cost memory (indexes are cached)
        self.pyramid = _pyramid(downsize(gray, 2048)[0], self.config.verify_max_side, gray.shape[1])

    @property
    def n_features(self) -> int:
        return len(self.points)

    @property
    def has_features(self) -> bool:
        return self.n_features >= self.config.blank_min_features

    @property
    def has_markers(self) -> bool:
        return len(self.markers) >= self.config.min_markers

    @property
    def locatable(self) -> bool:
        """False for a blank canvas without the pattern: no photo can be located on it."""
        return self.has_features or self.has_markers

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def _pyramid(gray: np.ndarray, min_side: int, full_width: int) -> list[tuple[float, np.ndarray]]:
    """(factor, image) levels, halving down to about min_side; factor: level px per picture px."""
    levels = [(gray.shape[1] / full_width, gray)]
    img = gray
    while max(img.shape[:2]) > min_side and min(img.shape[:2]) > 16:
        img = cv2.pyrDown(img)
        levels.append((img.shape[1] / full_width, img))
    return levels


def picture_key(screen: np.ndarray) -> str:
    """A content key for a screen picture (when the caller has no better one, like a version)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(screen.shape).encode())
    h.update(np.ascontiguousarray(screen).data)
    return h.hexdigest()


class IndexCache:
    """A small thread-safe LRU of ScreenIndex by key (e.g. pairing id + picture version)."""

    def __init__(self, maxsize: int = 32) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, ScreenIndex] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_build(self, key: str, build: Callable[[], ScreenIndex]) -> ScreenIndex:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        index = build()  # outside the lock: building takes a while
        with self._lock:
            self._items[key] = index
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return index

    def put(self, key: str, index: ScreenIndex) -> None:
        with self._lock:
            self._items[key] = index
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
