"""The benchmark's cases: which screen, which shot, and what the right answer is.

Every case is a pure function of its numbers, so a case renders the same everywhere and the set
can be generated in parallel, in chunks, without holding every image in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sync.locate.fiducials import apply_pattern

from .camera import Shot, photo_without_screen, render, sample_shot, truth_point
from .screens import _object, _window, make_screen

# kind -> (screen generator, with the fiducial pattern on top, is a positive)
KINDS: dict[str, tuple[str, bool, bool]] = {
    "desktop": ("desktop", False, True),
    "canvas": ("canvas", False, True),
    "sparse": ("sparse", False, True),
    "text": ("text", False, True),
    "blank+fid": ("blank", True, True),
    "sparse+fid": ("sparse", True, True),
    # the screen changed after its picture was taken (a window opened, an object pasted): the
    # right point, or "not found", but never a wrong point
    "stale": ("", False, True),
    # expected "not found": nothing on the canvas to locate with
    "blank": ("blank", False, False),
    # negatives: the screen picture is not the screen in the photo / there is no screen
    "other-screen": ("", False, False),
    "no-screen": ("", False, False),
}
FEATURE_KINDS = ("desktop", "canvas", "sparse", "text")
FIDUCIAL_KINDS = ("blank+fid", "sparse+fid")
ROBUSTNESS_KINDS = ("stale",)
NEGATIVE_KINDS = ("blank", "other-screen", "no-screen")
VIEWS_PER_SCREEN = 2  # one screen picture serves several pastes, as in the product


@dataclass(frozen=True)
class Case:
    kind: str
    index: int  # within the kind

    @property
    def seed(self) -> int:
        return 1000 * (list(KINDS).index(self.kind) + 1) + self.index

    @property
    def screen_seed(self) -> int:
        """Consecutive cases share a screen picture."""
        return 1000 * (list(KINDS).index(self.kind) + 1) + self.index // VIEWS_PER_SCREEN

    @property
    def name(self) -> str:
        return f"{self.kind.replace('+', '_')}_{self.index:03d}"


@dataclass
class Sample:
    case: Case
    view: np.ndarray  # BGR, decoded from the JPEG the "phone" took
    screen: np.ndarray  # BGR, the companion's picture
    truth: tuple[float, float] | None  # None: the right answer is "not found"
    shot: Shot | None


def cases(per_kind: int, negatives: int) -> list[Case]:
    out: list[Case] = []
    for kind, (_, _, positive) in KINDS.items():
        n = per_kind if positive else negatives
        if kind == "blank":
            n = max(2, negatives // 2)
        if kind == "stale":
            n = negatives
        out += [Case(kind, i) for i in range(n)]
    return out


def screen_for(case: Case) -> np.ndarray:
    gen, fid, _ = KINDS[case.kind]
    if case.kind == "stale":
        return make_screen("desktop" if case.screen_seed % 2 else "canvas", case.screen_seed)
    if case.kind == "other-screen":
        # a screen of the same kind as the one photographed, but a different picture
        gen = FEATURE_KINDS[case.index % len(FEATURE_KINDS)]
        return make_screen(gen, case.screen_seed + 500)
    img = make_screen(gen, case.screen_seed)
    return apply_pattern(img) if fid else img


def build(case: Case) -> Sample:
    rng = np.random.default_rng([case.seed, 3])
    if case.kind == "no-screen":
        other = make_screen(FEATURE_KINDS[case.index % len(FEATURE_KINDS)], case.screen_seed)
        return Sample(case, photo_without_screen(case.seed, bool(rng.random() < 0.5)), other, None, None)
    if case.kind == "other-screen":
        photographed = make_screen(FEATURE_KINDS[case.index % len(FEATURE_KINDS)], case.screen_seed)
        shot = sample_shot(rng, photographed.shape[1], photographed.shape[0], case.seed)
        view, _ = render(photographed, shot)
        return Sample(case, view, screen_for(case), None, shot)
    screen = screen_for(case)
    shot = sample_shot(rng, screen.shape[1], screen.shape[0], case.seed)
    view, H = render(changed(screen, case.seed) if case.kind == "stale" else screen, shot)
    positive = KINDS[case.kind][2]
    truth = truth_point(H, shot.view_w, shot.view_h) if positive else None
    return Sample(case, view, screen, truth, shot)


def changed(screen: np.ndarray, seed: int) -> np.ndarray:
    """The screen as it is now: a new window or object near the middle, absent from the picture."""
    rng = np.random.default_rng([seed, 17])
    img = screen.copy()
    h, w = img.shape[:2]
    cx, cy = int(w * rng.uniform(0.3, 0.7)), int(h * rng.uniform(0.3, 0.7))
    if rng.random() < 0.5:
        ww, wh = int(w * rng.uniform(0.2, 0.4)), int(h * rng.uniform(0.2, 0.4))
        _window(img, rng, cx - ww // 2, cy - wh // 2, cx + ww // 2, cy + wh // 2)
    else:
        _object(img, rng, cx, cy, int(min(w, h) * rng.uniform(0.15, 0.3)))
    return img


def tolerance(screen_shape: tuple[int, ...]) -> float:
    """A hit is within 2% of the screen picture's diagonal (≈34 px on 1440x900)."""
    h, w = screen_shape[:2]
    return 0.02 * float(np.hypot(w, h))


def encode_view_with_exif(view: np.ndarray, rotate: bool, quality: int = 92) -> bytes:
    """JPEG bytes of the view; with `rotate`, stored sideways plus EXIF Orientation=6 like phones do."""
    from io import BytesIO

    from PIL import Image

    img = Image.fromarray(cv2.cvtColor(view, cv2.COLOR_BGR2RGB))
    buf = BytesIO()
    if rotate:
        # Orientation 6: the stored pixels must be turned 90° clockwise to display; so store the
        # upright picture turned 90° counter-clockwise.
        stored = img.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        stored.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    else:
        img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()
