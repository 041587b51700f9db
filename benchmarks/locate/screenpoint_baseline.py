"""The published peer: cyrildiagne/screenpoint `project()` as ar-cutpaste's /paste route drives it.

Re-implemented faithfully for comparison (same constants, same steps, same resizing):
SIFT on both images, FLANN kd-tree (5 trees, 50 checks) matching screen->view, Lowe ratio 0.7,
at least 6 good matches, RANSAC homography view->screen with a 5 px reprojection threshold, the
centre of the view ((w-1)/2, (h-1)/2) mapped through it and truncated to int. The view is
thumbnailed to 700 px and the screenshot to 400 px (PIL `thumbnail`), both converted to 8-bit grey,
and the answer is scaled back to screenshot pixels with int truncation. Its failure signal is
(-1, -1); where the original would raise (no homography found), we count "not found".
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

MIN_MATCH_COUNT = 6
FLANN_INDEX_KDTREE = 0
MAX_VIEW_SIZE = 700
MAX_SCREENSHOT_SIZE = 400


def project(view: np.ndarray, screen: np.ndarray) -> tuple[int, int]:
    """screenpoint.project(view, screen) on grey uint8 arrays; (-1, -1) when not found."""
    sift = cv2.SIFT_create()
    kp_screen, des_screen = sift.detectAndCompute(screen, None)
    kp_view, des_view = sift.detectAndCompute(view, None)
    if des_screen is None or des_view is None or len(kp_view) < 2:
        return -1, -1  # the original crashes inside knnMatch here

    index_params = dict(algorithm=FLANN_INDEX_KDTREE, trees=5)
    search_params = dict(checks=50)
    flann = cv2.FlannBasedMatcher(index_params, search_params)
    matches = flann.knnMatch(des_screen, des_view, k=2)

    good = [m for m, n in (p for p in matches if len(p) == 2) if m.distance < 0.7 * n.distance]
    if len(good) < MIN_MATCH_COUNT:
        return -1, -1

    screen_pts = np.float32([kp_screen[m.queryIdx].pt for m in good]).reshape(-1, 1, 2)
    view_pts = np.float32([kp_view[m.trainIdx].pt for m in good]).reshape(-1, 1, 2)
    h, w = view.shape
    M, _mask = cv2.findHomography(view_pts, screen_pts, cv2.RANSAC, 5.0)
    if M is None:
        return -1, -1  # the original raises in perspectiveTransform
    pts = np.float32([[(w - 1) * 0.5, (h - 1) * 0.5]]).reshape(-1, 1, 2)
    dst = cv2.perspectiveTransform(pts, M)
    x, y = np.int32(dst[0][0])
    return int(x), int(y)


def locate(view_bgr: np.ndarray, screen_bgr: np.ndarray) -> tuple[bool, float | None, float | None]:
    """ar-cutpaste's /paste: thumbnail both, project, scale back to screenshot pixels."""
    view = Image.fromarray(cv2.cvtColor(view_bgr, cv2.COLOR_BGR2RGB))
    if view.size[0] > MAX_VIEW_SIZE or view.size[1] > MAX_VIEW_SIZE:
        view.thumbnail((MAX_VIEW_SIZE, MAX_VIEW_SIZE))
    screen = Image.fromarray(cv2.cvtColor(screen_bgr, cv2.COLOR_BGR2RGB))
    screen_width, screen_height = screen.size
    if screen.size[0] > MAX_SCREENSHOT_SIZE or screen.size[1] > MAX_SCREENSHOT_SIZE:
        screen.thumbnail((MAX_SCREENSHOT_SIZE, MAX_SCREENSHOT_SIZE))
    x, y = project(np.array(view.convert("L")), np.array(screen.convert("L")))
    found = x != -1 and y != -1
    if not found:
        return False, None, None
    return True, float(int(x / screen.size[0] * screen_width)), float(int(y / screen.size[1] * screen_height))
