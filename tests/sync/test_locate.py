"""Screen-point localization: right point, or an honest "not found" — never a wrong point."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from sync.locate import (
    IndexCache,
    Location,
    ScreenIndex,
    ScreenLocator,
    apply_pattern,
    locate_images,
    locate_paths,
    pattern_layout,
    render_pattern,
)
from sync.locate.result import HINT_BLANK_CANVAS

# -- a small deterministic camera: the benchmark's simulator in miniature ------------------------


def camera_h(screen_w: int, target: tuple[float, float], dist_cm: float, yaw: float, pitch: float, roll: float,
             view: tuple[int, int] = (1200, 900), screen_cm: float = 30.0, hfov: float = 65.0) -> np.ndarray:
    """Screen px -> view px for a pinhole camera whose optical axis hits `target` (screen px)."""
    vw, vh = view
    f = (max(vw, vh) / 2) / math.tan(math.radians(hfov) / 2)
    K = np.array([[f, 0, (vw - 1) / 2], [0, f, (vh - 1) / 2], [0, 0, 1]])
    cm = screen_cm / screen_w
    yaw, pitch, roll = (math.radians(a) for a in (yaw, pitch, roll))
    z = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    centre = np.array([target[0] * cm, target[1] * cm, 0.0]) - dist_cm * z
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    x, y = math.cos(roll) * x + math.sin(roll) * y, -math.sin(roll) * x + math.cos(roll) * y
    R = np.stack([x, y, z])
    return K @ np.column_stack([R[:, 0], R[:, 1], -R @ centre]) @ np.diag([cm, cm, 1.0])


def photograph(screen: np.ndarray, H: np.ndarray, view: tuple[int, int] = (1200, 900), seed: int = 0) -> np.ndarray:
    """Screen in a dark bezel in a room, defocused, noisy, JPEG-compressed."""
    rng = np.random.default_rng(seed)
    vw, vh = view
    h, w = screen.shape[:2]
    room = cv2.resize(rng.integers(40, 120, (9, 12, 3)).astype(np.uint8), (vw, vh), interpolation=cv2.INTER_CUBIC)
    bezel = cv2.copyMakeBorder(screen, 30, 50, 30, 30, cv2.BORDER_CONSTANT, value=(20, 20, 20))
    Hb = H @ np.array([[1, 0, -30], [0, 1, -30], [0, 0, 1.0]])
    lid = cv2.warpPerspective(bezel, Hb, (vw, vh), flags=cv2.INTER_AREA)
    inside = cv2.warpPerspective(np.full(bezel.shape[:2], 255, np.uint8), Hb, (vw, vh)) > 127
    img = np.where(inside[..., None], lid, room).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 1.0) * 0.9 + rng.normal(0, 3, img.shape)
    ok, buf = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def truth(H: np.ndarray, view: tuple[int, int] = (1200, 900)) -> tuple[float, float]:
    p = np.linalg.inv(H) @ np.array([(view[0] - 1) / 2, (view[1] - 1) / 2, 1.0])
    return float(p[0] / p[2]), float(p[1] / p[2])


def desktop(seed: int, w: int = 1280, h: int = 800) -> np.ndarray:
    """Windows with text, thumbnails and shapes on a gradient wallpaper."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = np.linspace(60, 160, w, dtype=np.uint8)[None, :, None]
    for _ in range(5):
        x0, y0 = int(rng.integers(0, w - 400)), int(rng.integers(0, h - 300))
        cv2.rectangle(img, (x0, y0), (x0 + 400, y0 + 300), (245, 245, 245), -1)
        cv2.rectangle(img, (x0, y0), (x0 + 400, y0 + 24), tuple(int(v) for v in rng.integers(80, 220, 3)), -1)
        for j in range(10):
            words = " ".join("".join(chr(97 + int(c)) for c in rng.integers(0, 26, int(rng.integers(2, 8)))) for _ in range(4))
            cv2.putText(img, words, (x0 + 10, y0 + 50 + 24 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (30, 30, 30), 1, cv2.LINE_AA)
        for _ in range(4):
            c = (x0 + int(rng.integers(20, 380)), y0 + int(rng.integers(40, 280)))
            cv2.circle(img, c, int(rng.integers(5, 25)), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    return img


def blank(w: int = 1280, h: int = 800) -> np.ndarray:
    return np.full((h, w, 3), 250, np.uint8)


@pytest.fixture(scope="module")
def locator() -> ScreenLocator:
    return ScreenLocator()


@pytest.fixture(scope="module")
def screen() -> np.ndarray:
    return desktop(1)


@pytest.fixture(scope="module")
def index(locator: ScreenLocator, screen: np.ndarray) -> ScreenIndex:
    return locator.index(screen)


# -- right point -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target,dist,yaw,pitch,roll",
    [((640, 400), 35, 0, 0, 0), ((300, 250), 28, 20, -10, 12), ((1000, 620), 45, -25, 15, -20)],
)
def test_simulated_view_is_located_within_a_few_pixels(locator, index, screen, target, dist, yaw, pitch, roll):
    H = camera_h(screen.shape[1], target, dist, yaw, pitch, roll)
    loc = locator.locate(photograph(screen, H), index)
    tx, ty = truth(H)
    assert loc.found, loc.hint
    assert math.hypot(loc.x - tx, loc.y - ty) < 4.0
    assert 0.5 <= loc.confidence <= 1.0
    assert loc.method == "features" and loc.hint is None
    assert abs(loc.rotation_deg + roll) < 5  # the phone's roll, seen from the screen
    js = loc.to_json()
    assert {"found", "x", "y", "confidence"} <= set(js) and json.dumps(js)


def test_locate_images_convenience(screen):
    H = camera_h(screen.shape[1], (500, 300), 30, 10, 5, 0)
    loc = locate_images(photograph(screen, H), screen)
    tx, ty = truth(H)
    assert loc.found and math.hypot(loc.x - tx, loc.y - ty) < 4.0


# -- honest "not found" ------------------------------------------------------------------------


def test_photo_of_another_screen_is_not_found(locator, index):
    other = desktop(2)
    H = camera_h(other.shape[1], (640, 400), 35, 10, 5, 5)
    loc = locator.locate(photograph(other, H), index)
    assert not loc.found and loc.x is None and loc.y is None
    assert loc.hint and loc.confidence < 0.5
    assert loc.to_json()["found"] is False


def test_image_that_is_not_a_screen_is_not_found(locator, index):
    rng = np.random.default_rng(5)
    photo = cv2.GaussianBlur(rng.integers(0, 255, (900, 1200, 3)).astype(np.uint8), (0, 0), 2)
    for _ in range(30):  # some structure for features to latch onto
        p = rng.integers(0, [1200, 900], size=(2, 2))
        cv2.rectangle(photo, tuple(map(int, p[0])), tuple(map(int, p[1])), tuple(int(v) for v in rng.integers(0, 255, 3)), 3)
    assert not locator.locate(photo, index).found


def test_aiming_off_the_screen_is_not_found(locator, index, screen):
    # the optical axis lands 15% of the screen's width right of its edge
    H = camera_h(screen.shape[1], (screen.shape[1] * 1.15, 400), 40, 0, 0, 0)
    loc = locator.locate(photograph(screen, H), index)
    assert not loc.found and loc.hint


def test_blank_canvas_without_fiducials_is_not_found(locator):
    canvas = blank()
    idx = locator.index(canvas)
    assert not idx.locatable
    H = camera_h(canvas.shape[1], (640, 400), 35, 5, 5, 0)
    loc = locator.locate(photograph(canvas, H), idx)
    assert not loc.found and loc.hint == HINT_BLANK_CANVAS


# -- fiducials ---------------------------------------------------------------------------------


def test_blank_canvas_with_fiducials_is_found(locator):
    shown = apply_pattern(blank())
    idx = locator.index(shown)
    assert idx.has_markers and idx.locatable
    H = camera_h(shown.shape[1], (700, 380), 35, 15, -10, 8)
    loc = locator.locate(photograph(shown, H), idx)
    tx, ty = truth(H)
    assert loc.found, loc.hint
    assert "fiducials" in loc.method
    assert math.hypot(loc.x - tx, loc.y - ty) < 3.0


def test_pattern_on_screen_but_not_in_the_picture(locator):
    """The companion may upload its bare canvas and say it shows the pattern."""
    canvas = blank()
    idx = locator.index(canvas, fiducials=True)
    assert idx.has_markers
    H = camera_h(canvas.shape[1], (400, 500), 30, -10, 10, 0)
    loc = locator.locate(photograph(apply_pattern(canvas), H), idx)
    tx, ty = truth(H)
    assert loc.found and math.hypot(loc.x - tx, loc.y - ty) < 3.0


def test_render_pattern_matches_its_layout():
    w, h = 1440, 900
    pattern = render_pattern(w, h)
    assert pattern.shape == (h, w, 4) and pattern.dtype == np.uint8
    layout = pattern_layout(w, h)
    assert len(layout) >= 6 and len({m.id for m in layout}) == len(layout)
    # transparent between markers, so the canvas stays visible
    assert 0.1 < (pattern[..., 3] > 0).mean() < 0.5
    for m in layout:
        x, y = int(m.x), int(m.y)
        assert pattern[y + 1, x + 1, 3] == 255 and pattern[y + 1, x + 1, 0] == 0  # black border, opaque


@pytest.mark.parametrize("w,h", [(1440, 900), (1920, 1080), (800, 600), (3840, 2160), (4000, 1000)])
def test_screen_picture_markers_are_found_with_subpixel_corners(w, h):
    """The index looks for markers in its small copy (wide pictures: a larger one) and refines
    their corners on the picture itself."""
    shown = apply_pattern(blank(w, h))
    idx = ScreenIndex(shown)
    layout = {m.id: m.corners() for m in pattern_layout(w, h)}
    assert set(idx.markers) == set(layout)
    err = max(float(np.abs(idx.markers[i] - layout[i]).max()) for i in layout)
    assert err < 0.15


def test_picture_without_the_pattern_has_no_markers(screen):
    assert ScreenIndex(screen).markers == {}


# -- only the work that can pay ----------------------------------------------------------------


def _candidate_at_scale(scale: float, inliers: int = 12):
    from sync.locate.locator import _Candidate

    H = np.array([[scale, 0.0, 10.0], [0.0, scale, 20.0], [0.0, 0.0, 1.0]])
    return _Candidate("features", H=H, inliers=inliers, stage="geometry")


def test_sharper_look_only_where_the_first_was_coarser_than_the_index(locator, index):
    """A second, sharper SIFT pass costs three first ones; it can only find more where the first
    look resolved the screen less finely than the index does (a far screen)."""
    gray = np.zeros((1080, 1440), np.uint8)
    side = locator.config.view_max_side
    # index px per first-look px: scale * feature_scale * 1440 / side
    per = index.feature_scale * 1440 / side
    far = _candidate_at_scale(1.2 * locator.config.retry_min_coarseness / per)
    near = _candidate_at_scale(0.8 * locator.config.retry_min_coarseness / per)
    assert locator._sharper_may_help(far, gray, index, side)
    assert not locator._sharper_may_help(near, gray, index, side)
    assert not locator._sharper_may_help(_candidate_at_scale(far.H[0, 0], inliers=3), gray, index, side)
    mirrored = _candidate_at_scale(far.H[0, 0])
    mirrored.H = mirrored.H @ np.diag([-1.0, 1.0, 1.0])
    assert not locator._sharper_may_help(mirrored, gray, index, side)


def test_far_small_screen_still_gets_the_sharper_look(locator, screen, index, monkeypatch):
    """End to end: a far shot takes the second look; a near one does not."""
    from sync.locate import locator as locator_module

    sides: list[int] = []
    real = locator_module.ScreenLocator._view_features

    def spy(self, gray, idx, side):
        sides.append(side)
        return real(self, gray, idx, side)

    monkeypatch.setattr(locator_module.ScreenLocator, "_view_features", spy)
    H = camera_h(screen.shape[1], (640, 400), 35, 0, 0, 0)
    assert locator.locate(photograph(screen, H), index).found
    assert sides == [locator.config.view_max_side]


def test_photo_steps_shared_within_a_photo_give_the_same_answers(index):
    """The bright region (outline and sides) and the photo's half of the photometric check are
    computed once per photo; reusing them changes nothing."""
    from sync.locate.edges import find_screen_edges
    from sync.locate.outline import bright_region, find_screen_quad
    from sync.locate.verify import small_view, verify

    screen = blank()
    cv2.circle(screen, (500, 350), 120, (40, 90, 200), -1)
    H = camera_h(screen.shape[1], (640, 400), 60, 10, -5, 3)
    gray = cv2.cvtColor(photograph(screen, H), cv2.COLOR_BGR2GRAY)
    region = bright_region(gray)
    quad = find_screen_quad(gray)
    assert quad is not None and np.array_equal(quad, find_screen_quad(gray, region=region))
    a, b = find_screen_edges(gray), find_screen_edges(gray, region=region)
    assert [r.points.tolist() for r in a] == [r.points.tolist() for r in b]
    Hv = np.linalg.inv(H)
    assert verify(gray, Hv, index, index.config) == verify(small_view(gray, index.config), Hv, index, index.config)


# -- caching and files -------------------------------------------------------------------------


def test_index_is_built_once_and_reused(locator, screen, monkeypatch):
    import sync.locate.index as index_module

    calls = {"sift": 0}
    real = index_module.sift_features

    def counting(*args, **kwargs):
        calls["sift"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(index_module, "sift_features", counting)
    cache = IndexCache(maxsize=4)
    builds = {"n": 0}

    def build() -> ScreenIndex:
        builds["n"] += 1
        return locator.index(screen)

    results = []
    for target in [(400, 300), (900, 500)]:
        idx = cache.get_or_build("pairing-1:v1", build)
        H = camera_h(screen.shape[1], target, 32, 5, 5, 0)
        results.append((locator.locate(photograph(screen, H), idx), truth(H)))
    assert builds["n"] == 1 and calls["sift"] == 1
    assert cache.hits == 1 and cache.misses == 1
    for loc, (tx, ty) in results:
        assert loc.found and math.hypot(loc.x - tx, loc.y - ty) < 4.0


def test_locate_paths_applies_exif_orientation_and_caches(tmp_path: Path, screen):
    H = camera_h(screen.shape[1], (800, 350), 35, -10, 5, 5)
    view = photograph(screen, H)
    screen_path = tmp_path / "screen.png"
    cv2.imwrite(str(screen_path), screen)
    # stored sideways with EXIF Orientation=6, as phones do
    upright = Image.fromarray(cv2.cvtColor(view, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = 6
    view_path = tmp_path / "view.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(view_path, quality=92, exif=exif.tobytes())

    cache = IndexCache()
    tx, ty = truth(H)
    for _ in range(2):
        loc = locate_paths(view_path, screen_path, cache=cache)
        assert isinstance(loc, Location)
        assert loc.found and math.hypot(loc.x - tx, loc.y - ty) < 4.0
    assert cache.hits == 1 and len(cache) == 1
