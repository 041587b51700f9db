"""Extra model passes over one photo, and how their saliency maps merge into one.

One view of the photo is the model's own square input (320x320: the photo squeezed),
another the photo at its own aspect ratio (``preprocess.aspect_view_size``: shorter side
0.8 of the model's, e.g. 352x256 for 4:3), for a model that takes any input size. The
engine runs the aspect one first (``EngineConfig.aspect_first``; the square where the photo
is about square or the model takes nothing else): alone it is the better of the two. Either
way a small object gets few input pixels, and the model sees the photo one way round only.
Optional passes, each one or more model runs per image, planned against a square first view
(after an aspect first view the two shapes trade places):

* **zoom**: a second run on the crop around the first pass's object (with a margin
  for context), so the object fills the input; its map replaces the first one inside
  the crop (blended over a border), at the crop's own, finer, resolution.
* **flip**: the mirrored photo as well, its map mirrored back and averaged in
  (test-time augmentation: the model's left/right whims average out).
* **aspect**: the other shape as well (the photo at its own aspect beside the square,
  or the square beside the aspect one). With flip, its mirror too. The maps are averaged
  on the larger grid: the two views' errors disagree and cancel, the more so at two
  scales.
* **aspect-flip**: the other shape's mirror alone (without its plain view): with flip,
  two mirrored views, one of each shape.
* **flip-uncertain** / **aspect-uncertain** / **aspect-flip-uncertain**: the same, only
  where the first map is unsure of itself (``is_unsure``): a wide band of mid-range
  saliency around a small solid object. On the quality benchmark about a quarter of the
  images get the extra runs, and they hold nearly all of the gain. A CPU's default is
  ``flip-uncertain,aspect-flip-uncertain``: an unsure photo gets the first view's mirror
  and the other shape's mirror, two more runs (benchmarks/quality/README.md, "Two
  mirrored views").

The merged map is on the largest of the views' grids (the 320x320 square beside a
352x256 aspect view), and ``alpha.refine_alpha`` takes it as it takes a plain model map:
it resizes any grid to the working image's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Pass = Literal["zoom", "flip", "flip-uncertain", "aspect", "aspect-uncertain", "aspect-flip", "aspect-flip-uncertain"]
PASSES: tuple[Pass, ...] = (
    "zoom", "flip", "flip-uncertain", "aspect", "aspect-uncertain", "aspect-flip", "aspect-flip-uncertain",
)
# The passes that run on every image (what ``quality=best`` asks for): "aspect" with "flip"
# includes the other shape's mirror.
EVERY_VIEW: tuple[Pass, ...] = ("zoom", "flip", "aspect")


def parse_passes(value: str | Sequence[str] | None) -> tuple[Pass, ...]:
    """``"zoom,flip"`` (or a sequence, or ``""``/``"none"``) -> the passes, in canonical order."""
    if value is None:
        return ()
    names = value.split(",") if isinstance(value, str) else list(value)
    wanted = {n.strip().lower() for n in names if n.strip() and n.strip().lower() != "none"}
    unknown = wanted - set(PASSES)
    if unknown:
        raise ValueError(f"unknown saliency pass(es) {sorted(unknown)}; choose from {', '.join(PASSES)}")
    for always in ("flip", "aspect", "aspect-flip"):
        if always in wanted:
            wanted.discard(f"{always}-uncertain")  # it always runs: nothing left to decide
    return tuple(p for p in PASSES if p in wanted)


# Where more model runs per image are cheap: on a GPU the views share one batch
# (one per input size). On a CPU they are not: measured with the int8 graph, flip
# alone took the server from 0.34 to 0.45 CPU s per 12 MP image (throughput at
# concurrency 4 from 3.9x rembg's to 3.0x). So a CPU runs the extra views only for
# the images whose first map is unsure: ~26 % of the quality benchmark's, which
# hold nearly all of the gain (weighted F 0.9006 against 0.9010 with every image).
_BATCHING_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


def choose_passes(requested: str, provider: str, any_size: bool = True) -> tuple[Pass, ...]:
    """``"auto"``: flip and aspect on a GPU; on a CPU, where unsure, the two mirrored views
    (``flip-uncertain,aspect-flip-uncertain``); else as parsed.

    ``any_size``: whether the model takes inputs other than its square; where it does
    not, the aspect passes are left out.
    """
    if requested.strip().lower() != "auto":
        chosen = parse_passes(requested)
    elif provider in _BATCHING_PROVIDERS:
        chosen = ("flip", "aspect")
    else:
        chosen = ("flip-uncertain", "aspect-flip-uncertain")
    return chosen if any_size else tuple(p for p in chosen if not p.startswith("aspect"))


# "-uncertain" passes: the first map is unsure when its mid-range band (0.1 < s < 0.9)
# covers more than this fraction of its solid area (s > 0.5). Chosen on the quality
# benchmark's tuning half (even seeds) from the cached maps: 0.2 sits in the middle
# of a plateau (0.14-0.25) where the flipped images keep nearly all of flip's gain;
# it flips 26 % of the tuning half and 27 % of the held-out half (wF 0.8966 -> 0.8997
# there, MAE 0.0360 -> 0.0337, against 0.8986 / 0.0335 with flip on every image).
# Re-checked with the aspect views: 0.1 and 0.15 gave no more on the tuning half.
UNCERTAIN_BAND = 0.2


def is_unsure(saliency: np.ndarray, band: float = UNCERTAIN_BAND) -> bool:
    """Whether the first pass's map is unsure enough to be worth the extra views.

    Deterministic, from the map alone (any grid): the mid-range pixels (0.1-0.9)
    relative to the solid ones (> 0.5). A crisp object has only a thin rim of
    mid values; a wide soft band, a faint object or none at all asks for a second look.
    """
    s = np.asarray(saliency, dtype=np.float32)
    unsure = np.count_nonzero((s > 0.1) & (s < 0.9))
    solid = np.count_nonzero(s > 0.5)
    return unsure > band * max(solid, 1e-3 * s.size)


@dataclass(frozen=True)
class View:
    """One more model run over the same picture besides the plain square one."""

    aspect: bool  # at the photo's own aspect ratio (else the model's square)
    mirrored: bool

    def at_aspect(self, first_is_aspect: bool) -> bool:
        """Whether this view runs at the photo's aspect: views are planned against a square
        first view ("flip" its mirror, "aspect" the other shape), so after an aspect first
        view the two shapes trade places."""
        return self.aspect != first_is_aspect


def _views(flip: bool, aspect: bool, aspect_flip: bool) -> list[View]:
    views = [View(aspect=False, mirrored=True)] if flip else []
    if aspect:
        views.append(View(aspect=True, mirrored=False))
    if aspect_flip or (aspect and flip):
        views.append(View(aspect=True, mirrored=True))
    return views


def plan_views(passes: Sequence[Pass]) -> tuple[list[View], list[View]]:
    """The extra views to run with the first pass, and those to add when it ``is_unsure``."""
    kinds = ("flip", "aspect", "aspect-flip")
    now = _views(*(kind in passes for kind in kinds))
    later = _views(*(kind in passes or f"{kind}-uncertain" in passes for kind in kinds))
    return now, [v for v in later if v not in now]


def merge_views(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Average maps of the same photo (mirrored ones already mirrored back) on the largest grid."""
    if len(maps) == 1:
        return maps[0]
    height, width = max((m.shape for m in maps), key=lambda shape: shape[0] * shape[1])
    total = np.zeros((height, width), np.float32)
    for m in maps:
        total += m if m.shape == (height, width) else cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR)
    return total * np.float32(1.0 / len(maps))


@dataclass(frozen=True)
class Window:
    """A crop of the working image, in its pixels (end-exclusive)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


@dataclass(frozen=True)
class ZoomParams:
    # Saliency at or above this is "object" when boxing the first pass.
    threshold: float = 0.5
    # Context around the box, as a fraction of the box's longer side, on every side.
    margin: float = 0.2
    # A window this large a fraction of the image (area) gains too little: no zoom.
    max_area: float = 0.6
    # Border (fraction of the window's shorter side) over which the zoomed map fades
    # into the first one, so the crop's edge leaves no seam.
    feather: float = 0.06
    # The zoomed map's weight inside the window (1: it replaces the first map there).
    # Zoomed in, the model also finds new things to be fooled by; an average keeps
    # what both passes agree on.
    blend: float = 0.5


def zoom_window(saliency: np.ndarray, work_size: tuple[int, int], params: ZoomParams = ZoomParams()) -> Window | None:
    """The crop of the working image (``work_size`` = (w, h)) worth a second look, or None.

    ``saliency`` is the first pass's map (any grid over the whole image). None when
    nothing is salient or the object already fills most of the frame.
    """
    work_w, work_h = work_size
    solid = saliency >= params.threshold
    if not solid.any():
        return None
    grid_h, grid_w = saliency.shape
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    # Grid cells to working pixels (cell i covers [i, i+1) * scale).
    sx, sy = work_w / grid_w, work_h / grid_h
    x0, x1 = cols[0] * sx, (cols[-1] + 1) * sx
    y0, y1 = rows[0] * sy, (rows[-1] + 1) * sy
    pad = params.margin * max(x1 - x0, y1 - y0)
    x0, x1 = max(0.0, x0 - pad), min(float(work_w), x1 + pad)
    y0, y1 = max(0.0, y0 - pad), min(float(work_h), y1 + pad)
    window = Window(
        left=max(0, int(np.floor(x0))),
        top=max(0, int(np.floor(y0))),
        right=min(work_w, int(np.ceil(x1))),
        bottom=min(work_h, int(np.ceil(y1))),
    )
    if window.width * window.height > params.max_area * work_w * work_h:
        return None
    return window


def zoom_merge(
    saliency: np.ndarray,
    zoomed: np.ndarray,
    window: Window,
    work_size: tuple[int, int],
    grid_side: int,
    params: ZoomParams = ZoomParams(),
) -> np.ndarray:
    """The first map with the zoomed one laid over ``window``, on a grid of the image's aspect.

    ``saliency`` covers the whole working image, ``zoomed`` only ``window``; both may be
    any grid. The result's longer side is ``grid_side`` scaled up by the zoom factor
    (so the crop keeps its finer detail), capped at half the working size.
    """
    work_w, work_h = work_size
    zoom = max(work_w / window.width, work_h / window.height)
    longest = max(work_w, work_h)
    # At most half the working size: ``alpha.refine_alpha`` takes the map to that
    # grid anyway, and a larger one only costs it time.
    side = min(max(1, longest // 2), round(grid_side * zoom))
    out_w, out_h = max(1, round(work_w * side / longest)), max(1, round(work_h * side / longest))
    merged = cv2.resize(saliency.astype(np.float32), (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    # The window on the output grid.
    gx0, gx1 = round(window.left * out_w / work_w), round(window.right * out_w / work_w)
    gy0, gy1 = round(window.top * out_h / work_h), round(window.bottom * out_h / work_h)
    if gx1 <= gx0 or gy1 <= gy0:
        return merged
    inner = cv2.resize(zoomed.astype(np.float32), (gx1 - gx0, gy1 - gy0), interpolation=cv2.INTER_LINEAR)
    # Weight 1 inside, fading to 0 at the window's edges that lie inside the image
    # (an edge on the image border needs no fade: there is nothing beyond it).
    weight = np.ones((gy1 - gy0, gx1 - gx0), np.float32)
    fade = max(1, round(params.feather * min(gx1 - gx0, gy1 - gy0)))
    ramp = (np.arange(fade, dtype=np.float32) + 0.5) / fade
    if window.left > 0:
        weight[:, :fade] *= ramp[None, : weight.shape[1]]
    if window.right < work_w:
        weight[:, -fade:] *= ramp[::-1][None, -weight.shape[1] :]
    if window.top > 0:
        weight[:fade, :] *= ramp[: weight.shape[0], None]
    if window.bottom < work_h:
        weight[-fade:, :] *= ramp[::-1][-weight.shape[0] :, None]
    region = merged[gy0:gy1, gx0:gx1]
    region += (params.blend * weight) * (inner - region)
    return merged


def crop(work_rgb: np.ndarray, window: Window) -> np.ndarray:
    return work_rgb[window.top : window.bottom, window.left : window.right]
